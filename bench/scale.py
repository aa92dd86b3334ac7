"""Benchmark sharded monitor cycles on the scale stack: 10,000 and 50,000 HTTP agents, 1 and 2
worker processes.

    python bench/scale.py [--sizes 10000,50000] [--workers 1,2] [--cycles 2] [--agent-procs 4]

It starts the scale stack (tests/integration/scale_stack.py: a Prefect server on PostgreSQL + Redis,
scripts/scale-stack.sh, its own run directory, ports and database, dropped at the end), the work pool
`agentwatch-pool` and the `monitor-shard` deployment, and serves the agents from --agent-procs
processes (agentwatch.demo.AgentServer, each on its own port; the agents are spread over them
round-robin; the mix of bench/monitor_cycle.py: ~90% ok, 5% slow, 3% 500, 2% closed port). Per
(N, workers) it makes an agentwatch state store database of its own on the machine's PostgreSQL
(scripts/postgres.sh), starts `workers` `prefect worker start` processes (shard_support.Workers,
one flow run at a time each), and runs --cycles parent runs of `monitor-fleet` with
`shards=workers`, force=True, in this process (for 1 worker, the same parent, `sharded_cycle`, with
shards=1: one shard run on the pool). Then it stops the workers by pid and drops the database.

Per cycle: wall time, probes/s per worker (agents / cycle time / workers), Prefect writes
(task runs of the parent and its shard runs + every event that occurred during the cycle +
artifact versions of those runs, read back from the API), messages the server dropped ("queue is
full"/"dropping" in the stack's logs) and the load average. Peak RSS (VmHWM) of every process: this
one, the workers and the flow-run processes they start (sampled from /proc every 0.5 s, as they
exit after their run), the agent servers, the Prefect server and its services, redis, and the
PostgreSQL backends (the largest one, and their sum).

Linux only (/proc, RLIMIT_NOFILE). Everything listens on 127.0.0.1 and is stopped by pid on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("DO_NOT_TRACK", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import monitor_cycle as mc  # noqa: E402

# ---------------------------------------------------------------------------------------------
# peak RSS of process trees, sampled (flow-run processes exit after their run)


def _ppid_and_comm(pid: int) -> tuple[int, str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = text[text.index("(") + 1 : text.rindex(")")]
    return int(text.rsplit(")", 1)[1].split()[1]), comm


class RssSampler:
    """Every 0.5 s: VmHWM of each root (by label) and of its descendants, kept at their maximum."""

    def __init__(self) -> None:
        self.roots: dict[int, str] = {}
        self.peaks: dict[str, float] = {}
        self.postgres: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def reset(self) -> None:
        self.peaks.clear()
        self.postgres.clear()

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            with contextlib.suppress(Exception):
                self.sample()

    def sample(self) -> None:
        parents: dict[int, int] = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            info = _ppid_and_comm(pid)
            if info is None:
                continue
            parents[pid] = info[0]
            if info[1] == "postgres":
                rss = mc.peak_rss_mib(pid)
                if rss is not None:
                    self.postgres[pid] = max(self.postgres.get(pid, 0.0), rss)
        for pid in parents:
            label, depth, p = None, 0, pid
            while p > 1 and depth < 8:
                if p in self.roots:
                    label = self.roots[p] + ("" if depth == 0 else " (child)")
                    break
                p, depth = parents.get(p, 0), depth + 1
            if label is None:
                continue
            rss = mc.self_peak_rss_mib() if pid == os.getpid() else mc.peak_rss_mib(pid)
            if rss is not None:
                key = label if depth == 0 else f"{label} pid {pid}"
                self.peaks[key] = max(self.peaks.get(key, 0.0), rss)


# ---------------------------------------------------------------------------------------------
# agents, registry, state store


@contextlib.contextmanager
def agent_servers(procs: int) -> Iterator[list[tuple[int, int]]]:
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(mc.agents_process()) for _ in range(procs)]


def spread_registry(ports: list[int], n: int) -> dict[str, Any]:
    """bench/monitor_cycle.py's fleet on the first port, its agents then spread over every port."""
    registry, _ = mc.fleet(ports[0], n, failure_threshold=1)
    first = f"127.0.0.1:{ports[0]}/"
    for i, agent in enumerate(registry["agents"]):
        http = agent["probe"]["http"]
        if first in http["url"]:
            http["url"] = http["url"].replace(first, f"127.0.0.1:{ports[i % len(ports)]}/")
    return registry


def _psql(url: str, sql: str) -> None:
    subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", url, "-c", sql], check=True, capture_output=True)


@contextlib.contextmanager
def store_database(admin_url: str, name: str) -> Iterator[str]:
    """A fresh agentwatch database on the machine's PostgreSQL, dropped on exit."""
    base, _, _ = admin_url.rpartition("/")
    _psql(admin_url, f"DROP DATABASE IF EXISTS {name}")
    _psql(admin_url, f"CREATE DATABASE {name}")
    try:
        yield f"{base}/{name}"
    finally:
        _psql(admin_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# ---------------------------------------------------------------------------------------------
# Prefect reads


async def child_runs(parent: Any) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    async with get_client() as client:
        return await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent]))
        )


async def prefect_writes(parent: Any, since: datetime, until: datetime) -> dict[str, int]:
    children = await child_runs(parent)
    runs = [parent] + [r.id for r in children]
    task_runs = 0
    artifacts = 0
    for run in runs:
        task_runs += (await mc.read_task_runs(run, expected=0, max_wait=10))[0]
        artifacts += await mc.count_artifacts(run)
    events = await mc.count_events(mc.window_filter(since, until), max_wait=20)
    ours = sum(c for name, c in events.items() if name.startswith("agentwatch."))
    total = sum(events.values())
    shard_s = [r.total_run_time.total_seconds() for r in children if r.total_run_time]
    return {
        "task runs": task_runs,
        "events": total,
        "agentwatch events": ours,
        "artifacts": artifacts,
        "shard run s": max(shard_s, default=0.0),
    }


class LogWatch:
    """Counts "queue is full" / "dropping" lines added to the stack's logs since the last call."""

    def __init__(self, logs: Path) -> None:
        self.logs, self.offsets = logs, dict[Path, int]()

    def take(self) -> int:
        found = 0
        for path in sorted(self.logs.glob("*.log")):
            with open(path, "rb") as f:
                f.seek(self.offsets.get(path, 0))
                text = f.read().decode("utf-8", "replace")
                self.offsets[path] = f.tell()
            found += sum(1 for line in text.lower().splitlines() if "queue is full" in line or "dropping" in line)
        return found


# ---------------------------------------------------------------------------------------------
# one (N, workers) point


async def run_point(n: int, workers: int, args: argparse.Namespace, ctx: dict[str, Any]) -> list[dict[str, Any]]:
    from prefect import flow

    from flows.monitor import monitor_fleet
    from flows.shard import sharded_cycle
    from tests.integration.shard_support import Workers, ensure_pool_and_deployment, wait_for_workers

    @flow(name="monitor-fleet")
    async def one_shard_parent(registry_path: str) -> list[dict[str, Any]]:
        return await sharded_cycle(registry_path, True, 1)

    home: Path = ctx["home"] / f"n{n}-w{workers}"
    home.mkdir(parents=True, exist_ok=True)
    path = home / "fleet.yaml"
    mc.write_registry(ctx["registry"], path)
    sampler: RssSampler = ctx["sampler"]
    rows = []
    with store_database(ctx["admin_url"], f"agentwatch_scale_{os.getpid()}") as db_url:
        os.environ["AGENTWATCH_DATABASE_URL"] = db_url
        await ensure_pool_and_deployment(str(path))
        pool = Workers(ctx["api_url"], db_url, home, names=tuple(f"scale-worker-{i + 1}" for i in range(workers)))
        pool.start()
        try:
            await wait_for_workers(pool)
            for name, process in pool.processes.items():
                sampler.roots[process.pid] = name
            for cycle in range(1, args.cycles + 1):
                sampler.reset()
                ctx["logwatch"].take()
                load_before = os.getloadavg()[0]
                since = datetime.now(UTC)
                clock = time.monotonic()
                if workers == 1:
                    state = await one_shard_parent(str(path), return_state=True)
                else:
                    state = await monitor_fleet(str(path), force=True, shards=workers, return_state=True)
                wall = time.monotonic() - clock
                until = datetime.now(UTC)
                load_after = os.getloadavg()[0]
                parent = state.state_details.flow_run_id
                await mc.drain_workers(30)
                writes = await prefect_writes(parent, since, until)
                await asyncio.sleep(2)
                dropped = ctx["logwatch"].take()
                sampler.sample()
                row = {
                    "n": n,
                    "workers": workers,
                    "cycle": cycle,
                    "state": state.name,
                    "wall": wall,
                    "probes/s/worker": n / wall / workers,
                    "writes": writes,
                    "dropped": dropped,
                    "load": (load_before, load_after),
                    "rss": dict(sampler.peaks),
                    "postgres": dict(sampler.postgres),
                }
                print_row(row)
                rows.append(row)
        finally:
            pool.stop()
            for process in pool.processes.values():
                sampler.roots.pop(process.pid, None)
    return rows


def print_row(r: dict[str, Any]) -> None:
    w = r["writes"]
    total = w["task runs"] + w["events"] + w["artifacts"]
    print(
        f"N={r['n']:,} workers={r['workers']} cycle {r['cycle']}: {r['state']} in {r['wall']:.1f} s, "
        f"{r['probes/s/worker']:,.0f} probes/s per worker (longest shard run {w['shard run s']:.1f} s), Prefect writes {total:,} "
        f"(task runs {w['task runs']:,}, events {w['events']:,} of which agentwatch.* {w['agentwatch events']:,}, "
        f"artifacts {w['artifacts']:,}), dropped {r['dropped']}, load {r['load'][0]:.2f} -> {r['load'][1]:.2f}",
        flush=True,
    )
    for label, mib in sorted(r["rss"].items()):
        print(f"    peak RSS {label}: {mib:,.0f} MiB", flush=True)
    pg = r["postgres"]
    if pg:
        print(
            f"    peak RSS postgres: {len(pg)} processes, largest {max(pg.values()):,.0f} MiB, "
            f"sum {sum(pg.values()):,.0f} MiB",
            flush=True,
        )


# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ints = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731
    parser.add_argument("--sizes", type=ints, default=[10_000, 50_000])
    parser.add_argument("--workers", type=ints, default=[1, 2])
    parser.add_argument("--cycles", type=int, default=2)
    parser.add_argument("--agent-procs", type=int, default=4, help="agent server processes")
    parser.add_argument("--monitor-timeout", default="1800s", help="AGENTWATCH_MONITOR_TIMEOUT for every run")
    return parser.parse_args(argv)


async def bench(args: argparse.Namespace) -> None:
    from tests.integration.scale_stack import running_scale_stack

    nofile = mc.raise_nofile()  # inherited by the agent servers, the workers and their flow runs
    print(f"open files limit {nofile:,}; load {os.getloadavg()}", flush=True)
    os.environ["AGENTWATCH_MONITOR_TIMEOUT"] = args.monitor_timeout
    admin = subprocess.run(["bash", str(ROOT / "scripts/postgres.sh")], capture_output=True, text=True, check=True)
    with tempfile.TemporaryDirectory(prefix="agentwatch-scale-bench-") as tmp, RssSampler() as sampler:
        home = Path(tmp)
        sampler.roots[os.getpid()] = "bench (parent run)"
        clock = time.monotonic()
        with running_scale_stack(home / "stack") as stack, stack.settings(), agent_servers(args.agent_procs) as agents:
            print(f"scale stack up in {time.monotonic() - clock:.0f} s at {stack.api_url}", flush=True)
            for name in ("server", "services", "redis"):
                with contextlib.suppress(OSError, ValueError):
                    sampler.roots[int((stack.run_dir / "pids" / f"{name}.pid").read_text())] = f"prefect {name}"
            for i, (pid, _) in enumerate(agents):
                sampler.roots[pid] = f"agent server {i + 1}"
            ports = [port for _, port in agents]
            ctx = {
                "home": home,
                "api_url": stack.api_url,
                "admin_url": admin.stdout.strip(),
                "sampler": sampler,
                "logwatch": LogWatch(stack.run_dir / "logs"),
            }
            for n in args.sizes:
                ctx["registry"] = spread_registry(ports, n)
                for workers in args.workers:
                    await run_point(n, workers, args, ctx)


def main(argv: list[str] | None = None) -> int:
    asyncio.run(bench(parse_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
