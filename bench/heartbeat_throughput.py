"""Benchmark the heartbeat endpoint: how many beats per second it sustains with the SQLite store.

    python bench/heartbeat_throughput.py [--agents 1000] [--seconds 10] [--concurrency 64]
                                         [--clients 1] [--rate 0] [--flush 0.5]

Starts the real server as `agentwatch heartbeat-server` in a process of its own (uvicorn, a fresh
SQLite state store, every agent with a bearer token, no Prefect API so no batch events), then
hammers it from --clients processes, each keeping --concurrency requests in flight on keep-alive
connections, round-robin over the agents, for --seconds. The per-agent rate limit is off by default
(--rate 0) because one client stands in for many agents; pass --rate 1 to measure with it on.

Prints the beats acknowledged per second, p50/p99/max latency, answers by status, the server's
CPU use, and checks after a clean shutdown that the store holds exactly the acknowledged beats
(the server acknowledges before its batched write, so this is the "no beat lost" check).
Everything listens on 127.0.0.1 and is stopped on exit. Linux only (/proc).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import yaml

TOKEN = "bench-token"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


async def hammer(url: str, ids: list[str], seconds: float, concurrency: int, offset: int) -> dict[str, Any]:
    """Keep `concurrency` pings in flight for `seconds` over keep-alive HTTP/1.1 connections, one per
    worker, written by hand: httpx spends more CPU per request than the server does (measured here:
    1,500 requests/s at 8 in flight, under 400 at 64), so it would measure the client, not the server."""
    host, port = url.removeprefix("http://").split(":")
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    deadline = time.perf_counter() + seconds

    async def worker(w: int) -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        i = offset + w
        try:
            while time.perf_counter() < deadline:
                agent = ids[i % len(ids)]
                i += concurrency
                t0 = time.perf_counter()
                writer.write(
                    f"POST /ping/{agent} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\n"
                    "Content-Length: 0\r\n\r\n".encode()
                )
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                latencies.append(time.perf_counter() - t0)
                statuses[head[9:12].decode()] += 1
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            statuses[type(exc).__name__] += 1
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return {"latencies": latencies, "statuses": statuses, "elapsed": time.perf_counter() - start}


def client_process(url: str, ids: list[str], seconds: float, concurrency: int, offset: int, out: Any) -> None:
    out.send(asyncio.run(hammer(url, ids, seconds, concurrency, offset)))


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit("server did not become ready")


async def stored_beats(db_url: str) -> int:
    from agentwatch.store import StateStore

    async with StateStore(db_url) as store:
        return sum(b.beats for b in (await store.load_beats()).values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight per client process")
    parser.add_argument("--clients", type=int, default=1, help="client processes")
    parser.add_argument("--rate", type=float, default=0.0, help="per-agent rate limit (0 = off)")
    parser.add_argument("--flush", type=float, default=0.5, help="server flush interval, seconds")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="hb-bench-"))
    ids = [f"agent-{i}" for i in range(args.agents)]
    probe = {"heartbeat": {"timeout": "30s", "token_env": "BENCH_HB_TOKEN"}}
    (tmp / "fleet.yaml").write_text(yaml.safe_dump({"agents": [{"id": i, "probe": probe} for i in ids]}))
    db_url = f"sqlite:///{tmp}/state.db"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API_")}
    env.update(
        AGENTWATCH_DATABASE_URL=db_url,
        AGENTWATCH_HEARTBEAT_RATE=str(args.rate),
        AGENTWATCH_HEARTBEAT_FLUSH_INTERVAL=str(args.flush),
        BENCH_HB_TOKEN=TOKEN,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
    )
    cmd = [sys.executable, "-m", "cli", "heartbeat-server", str(tmp / "fleet.yaml"), "--port", str(port)]
    log = (tmp / "server.log").open("wb")
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        wait_ready(url, server)
        cpu0 = cpu_seconds(server.pid)
        ctx = mp.get_context("spawn")
        pipes, procs = [], []
        for c in range(args.clients):
            parent, child = ctx.Pipe(duplex=False)
            p = ctx.Process(
                target=client_process, args=(url, ids, args.seconds, args.concurrency, c * args.concurrency, child)
            )
            p.start()
            pipes.append(parent)
            procs.append(p)
        results = [pipe.recv() for pipe in pipes]
        for p in procs:
            p.join()
        server_cpu = cpu_seconds(server.pid) - cpu0
    finally:
        server.send_signal(signal.SIGINT)  # a clean shutdown: the lifespan flushes what is buffered
        server.wait(timeout=60)
        log.close()

    latencies = sorted(x for r in results for x in r["latencies"])
    statuses: Counter[str] = sum((r["statuses"] for r in results), Counter())
    elapsed = max(r["elapsed"] for r in results)
    acked = statuses.get("200", 0)
    stored = asyncio.run(stored_beats(db_url))
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    print(f"agents {args.agents}, {args.clients} client(s) x {args.concurrency} in flight, {elapsed:.1f}s")
    print(f"beats acknowledged: {acked} = {acked / elapsed:,.0f} beats/s")
    print(f"latency ms: p50 {q[49] * 1000:.1f}  p99 {q[98] * 1000:.1f}  max {latencies[-1] * 1000:.1f}")
    print(f"answers: {dict(statuses)}")
    print(f"server CPU: {server_cpu:.1f}s over {elapsed:.1f}s ({server_cpu / elapsed:.0%} of one core)")
    print(f"stored after shutdown: {stored} ({'all acknowledged beats kept' if stored == acked else 'MISMATCH'})")
    if stored != acked:
        sys.exit(1)


if __name__ == "__main__":
    main()
