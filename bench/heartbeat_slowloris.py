"""Slowloris against the heartbeat server: do other clients still get answers?

    python bench/heartbeat_slowloris.py [--slow 1100] [--nofile 1024] [--seconds 30]
                                        [--trickle 1.0] [--reconnect 0] [--good-every 0.2]
                                        [--via serve|cli] [--request-timeout 10]

Starts the heartbeat server in a process of its own on 127.0.0.1 under an open-file limit of
--nofile (as `ulimit -n` would), with a fresh SQLite store and one heartbeat agent with a token.
Then, for --seconds:

- an attacker (this process) holds --slow connections that each send a request line and then
  trickle header bytes, one every --trickle seconds, never finishing; a connection the server
  closes is opened again after --reconnect seconds (at once by default), so the pressure never
  lets up;
- a good client (a process of its own, so the attack does not slow its clock) sends one whole
  ping with the token every --good-every seconds, each on a new connection, and times the answer
  (5 s at most; slower counts as an error).

Prints the good client's answers (p50/p99/max latency, share within 1 s, errors by kind), how many
slow connections the server held and closed, the server's open file descriptors (sampled every
second), and its log: lines in all, "Too many open files" lines, the most frequent messages.

--via serve runs the server through `agentwatch.heartbeat.server.serve` (the limits: request
deadline, connection cap, rate-limited error log); --via cli runs `agentwatch heartbeat-server`
as it is wired (uvicorn.run with its defaults, until the CLI calls `serve`). Linux only (/proc).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

TOKEN = "slowloris-bench-token"
AGENT = "good-1"

# The server process when --via serve: what `agentwatch heartbeat-server` does, through serve().
SERVE = """
import logging, os, sys
from agentwatch.heartbeat.intake import resolve_credentials
from agentwatch.heartbeat.server import ServerConfig, create_app, serve
from agentwatch.registry import load_registry
from agentwatch.settings import get_settings
from agentwatch.store import StateStore

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
registry = load_registry(sys.argv[1])
settings = get_settings()
config = ServerConfig.from_settings(settings)
app = create_app(
    registry, StateStore(settings.resolved_database_url()), resolve_credentials(registry, os.environ), config
)
serve(app, "127.0.0.1", int(sys.argv[2]), config)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def open_fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def start_server(args: argparse.Namespace, tmp: Path, port: int) -> subprocess.Popen[bytes]:
    registry = tmp / "fleet.yaml"
    registry.write_text(
        yaml.safe_dump({"agents": [{"id": AGENT, "probe": {"heartbeat": {"token_env": "BENCH_HB_TOKEN"}}}]})
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API_")}
    env.update(
        AGENTWATCH_DATABASE_URL=f"sqlite:///{tmp}/state.db",
        AGENTWATCH_HEARTBEAT_RATE="0",  # the good client pings more often than an agent would
        AGENTWATCH_HEARTBEAT_REQUEST_TIMEOUT=str(args.request_timeout),
        BENCH_HB_TOKEN=TOKEN,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
    )
    if args.via == "cli":
        cmd = [sys.executable, "-m", "cli", "heartbeat-server", str(registry), "--port", str(port)]
    else:
        cmd = [sys.executable, "-c", SERVE, str(registry), str(port)]
    nofile = args.nofile

    def limit() -> None:  # in the child, before exec: `ulimit -n NOFILE`
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))

    log = (tmp / "server.log").open("wb")
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=limit)


def ping_once(port: int, timeout: float) -> tuple[float, str]:
    """One whole ping on a new connection: (seconds, "200" or the kind of error)."""
    request = (
        f"POST /ping/{AGENT} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
        "Content-Length: 0\r\nConnection: close\r\n\r\n"
    ).encode()
    t0 = time.perf_counter()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.settimeout(max(0.01, timeout - (time.perf_counter() - t0)))
            sock.sendall(request)
            head = b""
            while b"\r\n" not in head:
                chunk = sock.recv(4096)
                if not chunk:
                    return time.perf_counter() - t0, "closed without an answer"
                head += chunk
        status = head.split(b" ", 2)[1].decode()
        return time.perf_counter() - t0, status
    except TimeoutError:
        return time.perf_counter() - t0, "no answer within 5 s"
    except OSError as exc:
        return time.perf_counter() - t0, type(exc).__name__


def good_client(port: int, seconds: float, every: float, out: Any) -> None:
    results: list[tuple[float, float, str]] = []  # (at, latency, outcome)
    start = time.monotonic()
    while (now := time.monotonic()) - start < seconds:
        latency, outcome = ping_once(port, 5.0)
        results.append((now - start, latency, outcome))
        time.sleep(max(0.0, every - (time.monotonic() - now)))
    out.send(results)


class Attack:
    """--slow connections trickling header bytes forever, each reopened when the server closes it."""

    def __init__(self, port: int, count: int, trickle: float, reconnect: float) -> None:
        self.port, self.count, self.trickle, self.reconnect = port, count, trickle, reconnect
        self.open = 0
        self.peak_open = 0
        self.opened = 0
        self.closed_by_server = 0
        self.connect_errors: Counter[str] = Counter()
        self.stop = asyncio.Event()

    async def one(self, i: int) -> None:
        while not self.stop.is_set():
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.port), 5)
            except (OSError, TimeoutError) as exc:
                self.connect_errors[type(exc).__name__] += 1
                await asyncio.sleep(0.5)
                continue
            self.opened += 1
            self.open += 1
            self.peak_open = max(self.peak_open, self.open)
            try:
                writer.write(f"POST /ping/{AGENT} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode())
                n = 0
                while not self.stop.is_set():
                    writer.write(b"X-Slow-%d: " % i if n == 0 else b"a")
                    await writer.drain()
                    n += 1
                    try:  # a read that ends is the server closing the connection
                        if await asyncio.wait_for(reader.read(1024), self.trickle) == b"":
                            self.closed_by_server += 1
                            break
                    except TimeoutError:
                        pass
            except OSError:
                self.closed_by_server += 1
            finally:
                self.open -= 1
                writer.close()
            await asyncio.sleep(self.reconnect)


async def attack_and_sample(
    args: argparse.Namespace, port: int, server_pid: int
) -> tuple[Attack, list[tuple[float, int | None, int]]]:
    attack = Attack(port, args.slow, args.trickle, args.reconnect)
    tasks = [asyncio.create_task(attack.one(i)) for i in range(args.slow)]
    samples: list[tuple[float, int | None, int]] = []
    start = time.monotonic()
    while time.monotonic() - start < args.seconds + 1:
        samples.append((time.monotonic() - start, open_fds(server_pid), attack.open))
        await asyncio.sleep(1.0)
    attack.stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return attack, samples


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if sock.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit("server did not become ready")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slow", type=int, default=1100, help="slow connections held open")
    parser.add_argument("--nofile", type=int, default=1024, help="the server's open-file limit (ulimit -n)")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--trickle", type=float, default=1.0, help="seconds between two header bytes")
    parser.add_argument("--good-every", type=float, default=0.2, help="seconds between two good pings")
    parser.add_argument(
        "--reconnect", type=float, default=0.0, help="seconds before reopening a connection the server closed"
    )
    parser.add_argument("--via", choices=("serve", "cli"), default="serve")
    parser.add_argument("--request-timeout", type=float, default=10.0, help="AGENTWATCH_HEARTBEAT_REQUEST_TIMEOUT")
    args = parser.parse_args()

    # The attacker needs a descriptor per slow connection, beyond the server's limit.
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < args.slow + 100:
        raise SystemExit(f"this process may open only {hard} files: lower --slow")

    tmp = Path(tempfile.mkdtemp(prefix="hb-slowloris-"))
    port = free_port()
    server = start_server(args, tmp, port)
    try:
        wait_ready(port, server)
        idle_fds = open_fds(server.pid)
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe(duplex=False)
        good = ctx.Process(target=good_client, args=(port, args.seconds, args.good_every, child))
        # The attack first, so that the good client meets it in full after a second.
        results: list[Any] = []
        threading.Timer(1.0, good.start).start()
        attack, samples = asyncio.run(attack_and_sample(args, port, server.pid))
        results = parent.recv()
        good.join()
        time.sleep(2.0)  # the server notices the attacker's closes
        after_fds = open_fds(server.pid)
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()

    log_lines = (tmp / "server.log").read_text(errors="replace").splitlines()
    emfile = sum("Too many open files" in line for line in log_lines)
    messages = Counter(line.split(": ", 1)[-1][:90] for line in log_lines if " WARNING " in line or " ERROR " in line)
    latencies = sorted(lat for _at, lat, _outcome in results)
    outcomes = Counter(outcome for _at, _lat, outcome in results)
    within = sum(1 for _at, lat, outcome in results if outcome == "200" and lat <= 1.0)
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [latencies[0]] * 99
    fds = [f for _t, f, _o in samples if f is not None]
    held = [o for _t, _f, o in samples]

    print(
        f"server via {args.via}, open-file limit {args.nofile}; {args.slow} slow connections trickling a byte "
        f"every {args.trickle:g}s (reopened after {args.reconnect:g}s) for {args.seconds:g}s; "
        f"request deadline {args.request_timeout:g}s"
    )
    print(f"good pings: {len(results)}, answered 200 within 1 s: {within} ({within / max(1, len(results)):.1%})")
    print(f"good latency ms: p50 {q[49] * 1000:.1f}  p99 {q[98] * 1000:.1f}  max {latencies[-1] * 1000:.1f}")
    print(f"good outcomes: {dict(outcomes)}")
    print(
        f"slow connections: opened {attack.opened}, closed by the server {attack.closed_by_server}, "
        f"held at once: max {max(held)}, last {held[-1]}; connect errors {dict(attack.connect_errors) or 0}"
    )
    print(f"server fds: idle {idle_fds}, during the attack min {min(fds)} max {max(fds)}, after {after_fds}")
    print(f"server log: {len(log_lines)} lines, {emfile} 'Too many open files'")
    for message, count in messages.most_common(5):
        print(f"  {count:6d} x {message}")
    print(f"(server log: {tmp / 'server.log'})")


if __name__ == "__main__":
    main()
