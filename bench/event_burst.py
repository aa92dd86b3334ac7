"""Post a burst of events to a Prefect server and count how many it stores: the in-memory broker
(`prefect server start` on SQLite, Prefect's defaults) against the scale stack (PostgreSQL + Redis,
scripts/scale-stack.sh), side by side.

    python bench/event_burst.py [--stacks memory,scale] [--events 20000] [--per-post 500] [--in-flight 4]
                                [--wait 180] [--api URL --log FILE]

Each stack is started on free ports on 127.0.0.1 in a temporary directory and stopped (by pid)
after its run; `--api` measures a server that already runs instead (its log file, when given, is
searched for dropped messages). Per stack it prints: how long the POSTs took (the server answers
204 once it has taken a batch, dropped or not), how many events the API holds after the last POST
(polled until all are there or --wait passes), and the lines of the server's log that say it
dropped messages ("Subscription queue is full", "dropping"). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
PREFECT = str(Path(sys.executable).with_name("prefect"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(api: str, proc: subprocess.Popen[bytes] | None, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"the server exited {proc.returncode}")
        try:
            if httpx.get(f"{api}/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"no ready server at {api} within {timeout:g}s")


async def burst(api: str, events: int, per_post: int, in_flight: int, wait: float) -> tuple[float, int, float]:
    """(seconds of POSTs, events stored, seconds from the last POST until the count settled)."""
    name = f"agentwatch.bench.burst.{uuid.uuid4().hex[:8]}"
    gate = asyncio.Semaphore(in_flight)

    async def post(client: httpx.AsyncClient, first: int) -> None:
        now = datetime.now(UTC).isoformat()
        batch = [
            {"id": str(uuid.uuid4()), "occurred": now, "event": name, "payload": {"i": i},
             "resource": {"prefect.resource.id": f"agentwatch.bench.{i % 100}"}}
            for i in range(first, min(first + per_post, events))
        ]  # fmt: skip
        async with gate:
            (await client.post("/events", json=batch)).raise_for_status()

    since = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    query = {"filter": {"event": {"name": [name]}, "occurred": {"since": since}}, "limit": 1}
    async with httpx.AsyncClient(base_url=api, timeout=120) as client:
        started = time.monotonic()
        await asyncio.gather(*(post(client, first) for first in range(0, events, per_post)))
        posted = time.monotonic()
        stored, last_change, settled = -1, posted, posted
        while time.monotonic() - posted < wait:
            count = int((await client.post("/events/filter", json=query)).raise_for_status().json()["total"])
            if count != stored:
                stored, last_change = count, time.monotonic()
            settled = last_change
            if stored >= events or time.monotonic() - last_change > 30:  # all there, or 30 s without one more
                break
            await asyncio.sleep(1)
    return posted - started, stored, settled - posted


def dropped_lines(log: Path | None) -> list[str]:
    if log is None or not log.exists():
        return []
    words = ("subscription queue is full", "dropping")
    return [line for line in log.read_text(errors="replace").splitlines() if any(w in line.lower() for w in words)]


def report(label: str, args: argparse.Namespace, api: str, log: Path | None) -> None:
    seconds, stored, settle = asyncio.run(burst(api, args.events, args.per_post, args.in_flight, args.wait))
    dropped = dropped_lines(log)
    print(
        f"{label:>7}: {args.events} events posted in {seconds:.1f}s ({args.events / seconds:.0f}/s); "
        f"stored {stored} ({args.events - stored} lost), settled {settle:.1f}s after the last POST; "
        f"log lines about dropped messages: {len(dropped)}",
        flush=True,
    )


def run_memory(args: argparse.Namespace, work: Path) -> None:
    port, home = free_port(), work / "memory"
    home.mkdir()
    log = home / "server.log"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "false",
    }
    for key in [
        k for k in env if k.startswith(("PREFECT_API_DATABASE", "PREFECT_SERVER_DATABASE", "PREFECT_MESSAGING"))
    ]:
        del env[key]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        api = f"http://127.0.0.1:{port}/api"
        wait_ready(api, proc)
        report("memory", args, api, log)
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=60)


def run_scale(args: argparse.Namespace, work: Path) -> None:
    env = {
        **os.environ,
        "SCALE_STACK_DIR": str(work / "scale"),
        "SCALE_STACK_PORT": str(free_port()),
        "SCALE_STACK_REDIS_PORT": str(free_port()),
        "SCALE_STACK_DATABASE": f"prefect_bench_{os.getpid()}",
        "SCALE_STACK_FRESH": "1",
    }
    script = str(ROOT / "scripts" / "scale-stack.sh")
    started = time.monotonic()
    if subprocess.run(["bash", script, "start"], env=env, check=False).returncode != 0:
        raise SystemExit("scripts/scale-stack.sh start failed")
    print(f"  scale: stack started in {time.monotonic() - started:.1f}s", flush=True)
    try:
        report("scale", args, f"http://127.0.0.1:{env['SCALE_STACK_PORT']}/api", work / "scale" / "logs" / "server.log")
    finally:
        subprocess.run(["bash", script, "stop"], env={**env, "SCALE_STACK_DROP": "1"}, check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stacks", default="memory,scale", help="memory, scale, or both (comma-separated)")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--per-post", type=int, default=500)
    parser.add_argument("--in-flight", type=int, default=4)
    parser.add_argument("--wait", type=float, default=180.0, help="at most this long for the count to settle")
    parser.add_argument("--api", help="measure this running server instead (http://host:port/api)")
    parser.add_argument("--log", type=Path, help="with --api: its log file, searched for dropped messages")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} cores; {args.per_post} events per POST, "
          f"{args.in_flight} POSTs in flight", flush=True)  # fmt: skip
    if args.api:
        report("api", args, args.api.rstrip("/"), args.log)
        return
    work = Path(tempfile.mkdtemp(prefix="agentwatch-event-burst-"))
    try:
        for stack in args.stacks.split(","):
            {"memory": run_memory, "scale": run_scale}[stack.strip()](args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
