"""Benchmark one monitor cycle against a bare asyncio + httpx loop over the same URLs.

    python bench/monitor_cycle.py [--sizes 100,1000,10000] [--cycles 3] [--batch-size B] [--concurrency C]
                                  [--batch-sizes 50,100,200] [--concurrencies 64,100] [--profile FILE]

For each fleet size N it serves N fake HTTP agents on 127.0.0.1 (agentwatch.demo.AgentServer, in a
process of its own so it shares neither the event loop nor the CPU-time accounting of the monitor;
~90% ok, ~5% slow (0.3 s), ~3% answering 500, ~2% on a closed port), writes a registry (timeout 2 s,
failure_threshold 1 so that later cycles have no transitions), and runs
`monitor_fleet(registry, force=True)` --cycles times against a real Prefect API (PREFECT_API_URL
when set, else one `prefect_test_harness()` for the whole run) with a fresh SQLite state store per
(N, batch size, concurrency).

It reports per point: the first cycle's wall time (every agent moves out of `unknown`), the steady
cycle (median of the later ones), the bare loop at the same probe concurrency (one httpx client,
same timeout, GET + read body; median of runs before and after the cycles) and the fastest bare
loop at this N (--ref-concurrency), both ratios, the Prefect task runs each cycle created (read back
from the API) against the aim N/50 + transitions, the agentwatch.agent.* events the API holds
against the transitions recorded, rows that timed out (none should: the slowest agent answers in
0.3 s), messages the Prefect server dropped, and peak RSS of each process.

The stage table comes from timing the flow's own building blocks: the bench swaps the names that
flows/monitor.py calls (load_registry, StateStore methods, every task, ...) for timed wrappers in
this process only; nothing in the project is edited. Between cycles it drains the Prefect client's
event and log workers and waits (bounded) until the processes are idle, so one cycle's leftovers
do not slow the next; both times are reported. The harness server's stderr goes to a file whose
warnings are counted per cycle.

Linux only (/proc, RLIMIT_NOFILE). Everything listens on 127.0.0.1 and is stopped on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import multiprocessing as mp
import os
import resource
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Before anything imports prefect: no telemetry from here (no network beyond 127.0.0.1).
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("DO_NOT_TRACK", "1")

TIMEOUT = "2s"
TIMEOUT_S = 2.0
SLOW_DELAY = 0.3
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------------------------
# small process helpers (/proc)


def raise_nofile() -> int:
    """Lift the soft open-file limit to the hard one: 10,000 agents at concurrency 500 need sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all threads), from /proc."""
    if pid == os.getpid():
        t = os.times()
        return t.user + t.system
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def peak_rss_mib(pid: int) -> float | None:
    """VmHWM (peak resident set) of a live process, in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def self_peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class ServerLog:
    """The harness server's stderr, sent to a file so that each cycle's server warnings can be counted."""

    def __init__(self, path: Path | None = None) -> None:
        self.path, self.offset = path, 0

    @contextlib.contextmanager
    def capture(self) -> Iterator[None]:
        """Point fd 2 at the log while a child (the server) is started; it inherits that fd."""
        if self.path is None:
            yield
            return
        sys.stderr.flush()
        saved = os.dup(2)
        with open(self.path, "ab") as log:
            os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)

    def take(self) -> Counter[str]:
        """Warnings and errors the server logged since the last call, by kind."""
        if self.path is None or not self.path.exists():
            return Counter()
        with open(self.path, "rb") as log:
            log.seek(self.offset)
            text = log.read().decode("utf-8", "replace")
            self.offset = log.tell()
        kinds: Counter[str] = Counter()
        for line in text.splitlines():
            if "queue is full" in line:
                kinds["events dropped: server queue full"] += 1
            elif "Refusing to publish event" in line:
                kinds["event refused: too large"] += 1
            elif "| WARNING |" in line or "| ERROR |" in line or "Traceback" in line:
                kinds[line.split(" | ", 3)[-1][:100]] += 1
        return kinds


SERVER_LOG = ServerLog()


# ---------------------------------------------------------------------------------------------
# the agents' server, in its own process


def _serve_agents(conn: Any, slow_delay: float) -> None:
    """Child process: run AgentServer on a free 127.0.0.1 port, send the port back, serve until killed."""
    raise_nofile()

    async def main() -> None:
        from agentwatch.demo import AgentServer

        async with AgentServer(port=0, slow_delay=slow_delay) as server:
            conn.send(server.port)
            await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


@contextlib.contextmanager
def agents_process(slow_delay: float = SLOW_DELAY) -> Iterator[tuple[int, int]]:
    """(pid, port) of a fresh agents' server process; terminated and joined on exit, whatever happens."""
    ctx = mp.get_context("spawn")  # no fork of a process that already runs Prefect's threads
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_serve_agents, args=(child, slow_delay), name="agentwatch-bench-agents", daemon=True)
    proc.start()
    try:
        if not parent.poll(30):
            raise RuntimeError("the agents' server did not report its port within 30 s")
        port = int(parent.recv())
        assert proc.pid is not None
        yield proc.pid, port
    finally:
        proc.terminate()
        proc.join(5)
        if proc.is_alive():
            proc.kill()
            proc.join(5)
        parent.close()


def fleet(port: int, n: int, failure_threshold: int) -> tuple[dict[str, Any], Counter[str]]:
    """A registry dict of `n` agents on the agents' server: 90% ok, 5% slow, 3% fail, 2% down,
    interleaved so no batch is all slow."""
    from agentwatch.demo import AgentServer, fleet_registry

    names: list[str] = []
    dead = 0
    for i in range(n):
        r = i % 100
        kind = "ok" if r < 90 else "slow" if r < 95 else "fail" if r < 98 else None
        if kind is None:
            dead += 1
        else:
            names.append(f"{kind}-{i:05d}")
    server = AgentServer(port=port)  # only for server.url(); the real one runs in the child
    registry = fleet_registry(server, names, dead=dead, timeout=TIMEOUT, failure_threshold=failure_threshold)
    mix = Counter(a["labels"]["kind"] for a in registry["agents"])
    return registry, mix


def write_registry(registry: dict[str, Any], path: Path) -> None:
    import yaml

    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    path.write_text(yaml.dump(registry, Dumper=dumper, sort_keys=False))


def registry_urls(registry: dict[str, Any]) -> list[str]:
    return [a["probe"]["http"]["url"] for a in registry["agents"]]


# ---------------------------------------------------------------------------------------------
# the baseline: a bare asyncio + httpx loop


async def bare_loop(urls: list[str], concurrency: int, timeout: float) -> tuple[float, Counter[str]]:
    """GET every URL (read the body) through one client, `concurrency` at a time; wall time and outcomes."""
    import httpx

    start = time.perf_counter()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    slots = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=timeout, trust_env=False) as client:

        async def one(url: str) -> str:
            async with slots:
                try:
                    async with asyncio.timeout(timeout):
                        response = await client.get(url)
                        _ = response.content
                        return str(response.status_code)
                except TimeoutError:
                    return "timeout"
                except httpx.HTTPError as exc:
                    return type(exc).__name__

        outcomes = Counter(await asyncio.gather(*(one(u) for u in urls)))
    return time.perf_counter() - start, outcomes


# ---------------------------------------------------------------------------------------------
# timing the flow's stages without editing it: swap the names flows/monitor.py calls


@dataclass
class Timeline:
    spans: list[tuple[str, float, float]] = field(default_factory=list)  # (name, start, end) of one cycle


TIMELINE = Timeline()

# What flows/monitor.py calls, in cycle order, and what each stands for. The bench times whichever of
# these the flow module has (the flow changes; a name it no longer has is skipped, a new call it makes
# shows up in "unaccounted"). Nested ones (inside another timed call) are indented in the report.
TIMED_CALLS: dict[str, str] = {
    "load_registry": "read + validate the registry YAML",
    "discover_docker_agents": "task: agents from Docker labels",
    "store.__aenter__": "StateStore() + ensure_schema",
    "store.load": "read every agent_state row",
    "store.load_restart_budgets": "read restart budgets",
    "heartbeat_round": "heartbeat agents: read beats, wake paused",
    "select_due": "pick the agents due",
    "batched": "split into batches",
    "probe_batch": "probe-batch tasks (first start -> last end, concurrent)",
    "probe_many": "  the probes themselves inside the tasks (first start -> last end)",
    "settle_results": "Docker stop / restart-budget rules",
    "apply_results": "health policy over every result",
    "store.commit": "write changed records + transitions (one transaction)",
    "store.drop_missing": "forget agents that left",
    "store.__aexit__": "dispose the engine",
    "publish_transitions": "task: one event + one artifact per transition",
    "raise_alerts": "task: alert routing for the registry's `alerts:` section",
    "reconcile_after_cycle": "Docker reconcile sub-flow when needed",
    "late_warnings": "heartbeat late warnings",
    "emit_late_warnings": "emit late-heartbeat events",
    "fleet_rows": "build the fleet table rows",
    "write_fleet_table": "task: the fleet table artifact",
    "fleet_summary": "summary text",
    "emit_event": "the agentwatch.monitor.cycle event",
}
NESTED = {"probe_many"}
CONCURRENT = {"probe_batch", "probe_many"}  # many overlapping calls: report first start -> last end
TASKS: set[str] = set()  # timed names that are Prefect tasks (each call is one task run)


def _timed(name: str, fn: Any) -> Any:
    """`fn` with its calls recorded in TIMELINE, whether it returns a value or an awaitable."""
    tl = TIMELINE

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        if inspect.isawaitable(result):

            async def finish() -> Any:
                try:
                    return await result
                finally:
                    tl.spans.append((name, start, time.perf_counter()))

            return finish()
        tl.spans.append((name, start, time.perf_counter()))
        return result

    return wrapped


def instrument() -> list[str]:
    """Swap what flows.monitor calls for timed versions (this process only); returns the names timed."""
    from prefect import Flow, Task

    import flows.monitor as monitor
    import tasks.probing as probing

    # Any other task or flow the monitor module imports is timed too (the flow grows new steps).
    others = [
        name
        for name, obj in vars(monitor).items()
        if isinstance(obj, Task | Flow) and name not in TIMED_CALLS and name != "monitor_fleet"
    ]
    timed: list[str] = []
    for name in [*TIMED_CALLS, *others]:
        if name.startswith("store."):
            continue
        module = probing if name == "probe_many" else monitor
        fn = getattr(module, name, None)
        if fn is None:
            continue
        if isinstance(fn, Task):
            TASKS.add(name)
        setattr(module, name, _timed(name, fn))
        timed.append(name)

    base = monitor.StateStore
    methods = {
        attr: _timed(f"store.{attr}", getattr(base, attr))
        for attr in (n.removeprefix("store.") for n in TIMED_CALLS if n.startswith("store."))
        if hasattr(base, attr)
    }
    monitor.StateStore = type("TimedStateStore", (base,), methods)
    timed += [f"store.{attr}" for attr in methods]
    return timed


def stage_times(spans: list[tuple[str, float, float]], call_start: float, call_end: float) -> dict[str, float]:
    """Seconds per timed call in one cycle, plus the engine's start and the time no timed call covers."""
    by: dict[str, list[tuple[float, float]]] = {}
    for name, a, b in spans:
        by.setdefault(name, []).append((a, b))
    out: dict[str, float] = {}
    top = [(a, b) for name, a, b in spans if name not in NESTED]
    out["flow start"] = (min(a for a, _ in top) if top else call_end) - call_start
    for name, pairs in by.items():
        if name in CONCURRENT:
            out[name] = max(b for _, b in pairs) - min(a for a, _ in pairs)
        else:
            out[name] = sum(b - a for a, b in pairs)
    # Wall time covered by no timed call (engine start/end, task-run machinery between calls, logging).
    covered, edge = 0.0, call_start
    for a, b in sorted(top):
        if b > edge:
            covered += b - max(a, edge)
            edge = b
    out["unaccounted"] = (call_end - call_start) - covered - out["flow start"]
    return out


def stage_order(points: list[Any]) -> list[str]:
    seen = {name for p in points for c in p.cycles for name in c.stages}
    known = ["flow start", *TIMED_CALLS]
    return [n for n in known if n in seen] + sorted(seen - set(known) - {"unaccounted"}) + ["unaccounted"]


# ---------------------------------------------------------------------------------------------
# reading back from the Prefect API and the state store


async def read_task_runs(flow_run_id: Any, expected: int, max_wait: float = 30.0) -> tuple[int, Counter[str]]:
    """Task runs of one flow run, by name prefix. Task runs reach the API through events, so poll
    (bounded) until the expected count shows up or the count holds still for 3 reads."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    flt = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
    deadline = time.monotonic() + max_wait
    last, same = -1, 0
    names: Counter[str] = Counter()
    async with get_client() as client:
        while True:
            runs: list[Any] = []
            for page in range(100):  # at most 20,000 task runs
                got = await client.read_task_runs(flow_run_filter=flt, limit=200, offset=page * 200)
                runs += got
                if len(got) < 200:
                    break
            names = Counter(r.name.split("-", 2)[0] + "-" + r.name.split("-", 2)[1] for r in runs)
            same = same + 1 if len(runs) == last else 0
            last = len(runs)
            if last >= expected or same >= 2 or time.monotonic() > deadline:
                return last, names
            await asyncio.sleep(1.0)


async def count_events(since: Any, until: Any, max_wait: float = 30.0, expect: int = 0) -> Counter[str]:
    """Events that occurred in [since, until], by name, read back from the API (bounded poll: the
    server persists events a few seconds after it receives them)."""
    from prefect import get_client

    body = {
        "filter": {"occurred": {"since": since.isoformat(), "until": until.isoformat()}, "order": "DESC"},
        "time_unit": "day",
        "time_interval": 1.0,
    }
    deadline = time.monotonic() + max_wait
    last: Counter[str] | None = None
    same = 0
    async with get_client() as client:
        while True:
            response = await client._client.post("/events/count-by/event", json=body)
            response.raise_for_status()
            counts = Counter({row["value"]: row["count"] for row in response.json()})
            agent_events = sum(c for name, c in counts.items() if name.startswith("agentwatch.agent."))
            same = same + 1 if counts == last else 0
            last = counts
            # Done when the count holds still over one read and has the transitions, or over three reads.
            if (agent_events >= expect and counts and same >= 1) or same >= 3 or time.monotonic() > deadline:
                return counts
            await asyncio.sleep(2.0)


def count_transitions(db_path: Path, run_id: str) -> int:
    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///{db_path}")
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(sa.text("SELECT count(*) FROM transitions WHERE run_id = :r"), {"r": run_id}).scalar_one()
            )
    except sa.exc.OperationalError:  # a run that failed before the store made its tables
        return 0
    finally:
        engine.dispose()


async def drain_workers(max_wait: float) -> float:
    """Flush the Prefect client's queued events and logs (as a flow process does at exit); seconds taken."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    start = time.perf_counter()

    async def drain() -> None:
        with contextlib.suppress(RuntimeError):
            result = APILogWorker.instance().drain()
            if inspect.isawaitable(result):
                await result
        result = EventsWorker.drain_all()
        if inspect.isawaitable(result):
            await result

    try:
        await asyncio.wait_for(drain(), max_wait)
    except TimeoutError:
        print(f"    ! client workers not drained within {max_wait:.0f} s", flush=True)
    return time.perf_counter() - start


async def settle(pids: list[int], max_wait: float, idle_pct: float = 5.0, step: float = 0.5) -> tuple[float, bool]:
    """Wait until every process in `pids` uses under `idle_pct`% CPU for two steps in a row (at most `max_wait`)."""
    start = time.monotonic()
    before = [cpu_seconds(p) for p in pids]
    quiet = 0
    while time.monotonic() - start < max_wait:
        await asyncio.sleep(step)
        now = [cpu_seconds(p) for p in pids]
        busy = max((b - a) / step * 100 for a, b in zip(before, now, strict=True))
        before = now
        quiet = quiet + 1 if busy < idle_pct else 0
        if quiet >= 2:
            return time.monotonic() - start, True
    return time.monotonic() - start, False


# ---------------------------------------------------------------------------------------------
# one fleet size: the bare loops and every (batch size, concurrency) point


@dataclass
class Bare:
    """Runs of the bare loop at one concurrency: wall times, and the outcomes of the last run."""

    concurrency: int
    walls: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)

    @property
    def median(self) -> float:
        return statistics.median(self.walls)

    @property
    def timeouts(self) -> int:
        return self.outcomes.get("timeout", 0)


@dataclass
class Cycle:
    wall: float
    transitions: int
    timeouts: int
    task_runs: int
    task_run_names: Counter[str]
    expected_task_runs: int
    events: Counter[str]
    stages: dict[str, float]
    flush: float
    settle: float
    monitor_cpu: float
    agents_cpu: float
    server_cpu: float
    state: str
    server_log: Counter[str]
    load: float

    @property
    def dropped(self) -> int:
        return self.server_log.get("events dropped: server queue full", 0)

    @property
    def agent_events(self) -> int:
        return sum(c for k, c in self.events.items() if k.startswith("agentwatch.agent."))


@dataclass
class Point:
    n: int
    batch_size: int
    concurrency: int
    cycles: list[Cycle]
    monitor_rss: float
    bare: Bare = field(default_factory=lambda: Bare(0))
    best_bare: Bare = field(default_factory=lambda: Bare(0))
    agents_rss: float | None = None
    server_rss: float | None = None

    @property
    def first(self) -> float:
        return self.cycles[0].wall

    def steady_of(self, get: Any) -> float | None:
        later = [get(c) for c in self.cycles[1:]]
        later = [v for v in later if v is not None]
        return statistics.median(later) if later else None

    @property
    def steady(self) -> float | None:
        return self.steady_of(lambda c: c.wall)


async def run_bare(bare: Bare, urls: list[str], runs: int, pids: list[int], settle_max: float) -> None:
    for _ in range(runs):
        await settle(pids, settle_max)
        cpu0 = cpu_seconds(os.getpid())
        wall, bare.outcomes = await bare_loop(urls, bare.concurrency, TIMEOUT_S)
        bare.walls.append(wall)
        bare.cpu.append(cpu_seconds(os.getpid()) - cpu0)
        print(
            f"   bare loop C={bare.concurrency:<4} {wall:8.3f} s  cpu={bare.cpu[-1]:.2f} s  {dict(bare.outcomes)}",
            flush=True,
        )


async def run_cycles(
    n: int,
    batch_size: int,
    concurrency: int,
    registry_path: Path,
    db_path: Path,
    pids: list[int],
    args: argparse.Namespace,
    profile: bool,
) -> Point:
    """--cycles monitor cycles on a fresh state store at one batch size and probe concurrency."""
    from datetime import UTC, datetime, timedelta

    from flows.monitor import monitor_fleet

    os.environ["AGENTWATCH_BATCH_SIZE"] = str(batch_size)
    os.environ["AGENTWATCH_PROBE_CONCURRENCY"] = str(concurrency)
    os.environ["AGENTWATCH_DATABASE_URL"] = f"sqlite:///{db_path}"
    server_pid = pids[2] if len(pids) > 2 else None
    print(f"-- monitor N={n} batch={batch_size} concurrency={concurrency}", flush=True)
    cycles: list[Cycle] = []
    for i in range(args.cycles + (1 if profile else 0)):  # a profiled cycle is an extra one, not counted
        await settle(pids, args.settle_max)
        cpu0 = [cpu_seconds(p) for p in pids]
        TIMELINE.spans.clear()
        since = datetime.now(UTC)
        profiler = None
        if i == args.cycles:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        start = time.perf_counter()
        try:
            state = await asyncio.wait_for(
                monitor_fleet(str(registry_path), force=True, return_state=True),  # type: ignore[call-overload]
                args.cycle_timeout,
            )
        finally:
            wall = time.perf_counter() - start
            if profiler is not None:
                profiler.disable()
                dump_profile(profiler, Path(args.profile), n)
        until = datetime.now(UTC)
        cpu1 = [cpu_seconds(p) for p in pids]
        load = os.getloadavg()[0]
        stages = stage_times(list(TIMELINE.spans), start, start + wall)
        rows = await state.aresult(raise_on_failure=False) if state.is_completed() else []
        timeouts = sum(1 for r in rows if "timed out" in (r.get("reason") or ""))
        flush = await drain_workers(args.settle_max)
        settled, idle = await settle(pids, args.settle_max)
        run_id = state.state_details.flow_run_id
        transitions = count_transitions(db_path, str(run_id))
        expected = sum(1 for name, _, _ in TIMELINE.spans if name in TASKS)  # one task run per task call
        task_runs, names = await read_task_runs(run_id, expected)
        events = await count_events(since, until + timedelta(seconds=1), expect=transitions)
        server_log = SERVER_LOG.take()
        cycle = Cycle(
            wall=wall,
            transitions=transitions,
            timeouts=timeouts,
            task_runs=task_runs,
            task_run_names=names,
            expected_task_runs=expected,
            events=events,
            stages=stages,
            flush=flush,
            settle=settled,
            monitor_cpu=cpu1[0] - cpu0[0],
            agents_cpu=cpu1[1] - cpu0[1],
            server_cpu=(cpu1[2] - cpu0[2]) if server_pid else float("nan"),
            state=state.type.value,
            server_log=server_log,
            load=load,
        )
        if i < args.cycles:
            cycles.append(cycle)
        print(
            f"   cycle {i + 1}{' (cProfile on, not counted)' if i == args.cycles else ''}: {wall:8.3f} s  {cycle.state}  transitions={transitions}  timed-out rows={timeouts}  "
            f"task runs={task_runs}/{expected} {dict(names)}  agent events={cycle.agent_events}  "
            f"all events={sum(events.values())}\n"
            f"            cpu s: monitor={cycle.monitor_cpu:.2f} agents={cycle.agents_cpu:.2f} "
            f"server={cycle.server_cpu:.2f}  flush={flush:.2f} s  "
            f"server busy after={settled:.1f} s{'' if idle else ' (not idle!)'}  load avg={load:.1f}",
            flush=True,
        )
        if server_log:
            print(f"            ! Prefect server log: {dict(server_log.most_common(5))}", flush=True)
        if i == 0:
            print(f"            events by name: {dict(events.most_common())}", flush=True)
        if not state.is_completed():
            print(f"   ! flow run ended {state.type.value}: {state.message}", flush=True)
    return Point(n=n, batch_size=batch_size, concurrency=concurrency, cycles=cycles, monitor_rss=self_peak_rss_mib())


async def run_size(n: int, args: argparse.Namespace, workdir: Path, server_pid: int | None) -> list[Point]:
    """Serve N agents, time the bare loops before and after, and the monitor at every combination."""
    points: list[Point] = []
    with agents_process() as (agents_pid, port):
        registry, mix = fleet(port, n, args.failure_threshold)
        registry_path = workdir / f"fleet-{n}.yaml"
        write_registry(registry, registry_path)
        urls = registry_urls(registry)
        pids = [os.getpid(), agents_pid] + ([server_pid] if server_pid else [])
        print(f"\n== N={n} mix={dict(mix)} agents pid={agents_pid} port={port}", flush=True)

        bares = {c: Bare(c) for c in sorted(set(args.concurrencies) | set(args.ref_concurrency))}
        runs_before = max(1, args.baseline_runs // 2)
        for bare in bares.values():  # with the Prefect server idle
            await run_bare(bare, urls, runs_before, pids, args.settle_max)
        for b in args.batch_sizes:
            for c in args.concurrencies:
                db_path = workdir / f"state-{n}-{b}-{c}.db"
                profile = bool(args.profile) and n == max(args.sizes) and not points
                points.append(await run_cycles(n, b, c, registry_path, db_path, pids, args, profile))
        for bare in bares.values():  # the same loop again after the cycles: drift shows here
            await run_bare(bare, urls, max(1, args.baseline_runs - runs_before), pids, args.settle_max)
        agents_rss = peak_rss_mib(agents_pid)

    best = min(bares.values(), key=lambda b: b.median)
    for p in points:
        p.bare, p.best_bare, p.agents_rss = bares[p.concurrency], best, agents_rss
        p.server_rss = peak_rss_mib(server_pid) if server_pid else None
    return points


def dump_profile(profiler: Any, path: Path, n: int) -> None:
    import io
    import pstats

    profiler.dump_stats(str(path))
    for key in ("cumulative", "tottime"):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats(key).print_stats(35)
        print(f"\n--- cProfile of the last cycle at N={n}, by {key} (main thread only; written to {path}) ---")
        print("\n".join(out.getvalue().splitlines()[:60]), flush=True)


# ---------------------------------------------------------------------------------------------
# report


def fmt(v: float | None, spec: str = ".3f") -> str:
    if v is None or v != v:
        return "-"
    return format(v, spec)


def print_tables(points: list[Point], sweep: bool) -> None:
    print("\n=== monitor cycle vs bare asyncio + httpx loop (timeout 2 s; ratio = monitor / bare loop) ===")
    head = (
        f"{'N':>6} {'B':>5} {'C':>4} {'cycle1 s':>9} {'steady s':>9} {'bare s':>8} {'ratio':>6} {'ratio1':>6} "
        f"{'best bare':>12} {'r(best)':>7} {'tasks/cyc':>9} {'bound':>11} {'trans':>9} {'ev1':>6} "
        f"{'t/o mon':>9} {'t/o bare':>8} {'dropped':>11} {'RSS MiB':>7} {'agents':>6} {'server':>6}"
    )
    print(head)
    print("-" * len(head))
    for p in points:
        first = p.cycles[0]
        steady = p.steady
        steady_tasks = p.steady_of(lambda c: c.task_runs)
        steady_trans = p.steady_of(lambda c: c.transitions)
        steady_to = p.steady_of(lambda c: c.timeouts)
        dropped = f"{first.dropped}/{sum(c.dropped for c in p.cycles[1:])}"
        bound = f"{p.n / 50 + first.transitions:.0f}/{p.n / 50 + (steady_trans or 0):.0f}"
        best = f"{p.best_bare.median:.3f}@{p.best_bare.concurrency}"
        print(
            f"{p.n:>6} {p.batch_size:>5} {p.concurrency:>4} {p.first:>9.3f} {fmt(steady):>9} {p.bare.median:>8.3f} "
            f"{fmt(steady / p.bare.median if steady else None, '.2f'):>6} {p.first / p.bare.median:>6.2f} "
            f"{best:>12} {fmt(steady / p.best_bare.median if steady else None, '.2f'):>7} "
            f"{first.task_runs:>4}/{fmt(steady_tasks, '.0f'):<4} {bound:>11} "
            f"{first.transitions:>4}/{fmt(steady_trans, '.0f'):<4} {first.agent_events:>6} "
            f"{first.timeouts:>4}/{fmt(steady_to, '.0f'):<4} {p.bare.timeouts:>8} {dropped:>11} {p.monitor_rss:>7.0f} "
            f"{fmt(p.agents_rss, '.0f'):>6} {fmt(p.server_rss, '.0f'):>6}"
        )
    print(
        "B/C: batch size / probe concurrency (AGENTWATCH_BATCH_SIZE / AGENTWATCH_PROBE_CONCURRENCY).\n"
        "steady: median of cycles 2..; bare s: median bare loop (one httpx client) at the same C; ratio = steady /\n"
        "  bare, ratio1 = cycle 1 / bare; best bare: the fastest bare loop at this N (median s @ its concurrency).\n"
        "tasks/cyc, bound, trans: first cycle / steady; bound = N/50 + transitions.\n"
        "ev1: agentwatch.agent.* events the API holds for cycle 1 (should equal its transitions).\n"
        "t/o mon: rows whose reason is a probe timeout (cycle 1 / steady); t/o bare: timeouts in the last bare run\n"
        "  at the same C. Nothing here should time out (slowest agent answers in 0.3 s, timeout 2 s).\n"
        "dropped: messages the Prefect server dropped ('Subscription queue is full'), cycle 1 / later cycles.\n"
        "RSS MiB: peak RSS of this bench process so far (monitor + Prefect client + bare loops; cumulative over\n"
        "  the run); agents / server: peak RSS (VmHWM, MiB) of the agents' server / Prefect server process."
    )

    print("\n=== where a cycle's time goes (s): first cycle | steady (median of later cycles) ===")
    cols = [f"N={p.n} B={p.batch_size} C={p.concurrency}" for p in points]
    width = max(26, *(len(c) + 2 for c in cols))
    print(f"{'stage':<28}" + "".join(f"{c:>{width}}" for c in cols))

    def row(label: str, get: Any, spec: str = ".3f") -> None:
        cells = [f"{fmt(get(p.cycles[0]), spec):>11} | {fmt(p.steady_of(get), spec):>10}" for p in points]
        print(f"{label:<28}" + "".join(f"{c:>{width}}" for c in cells))

    order = stage_order(points)
    for name in order:
        row(("  " if name in NESTED else "") + name, lambda c, name=name: c.stages.get(name))
    row("= cycle wall", lambda c: c.wall)
    row("monitor CPU s", lambda c: c.monitor_cpu, ".2f")
    row("server CPU s (in cyc)", lambda c: c.server_cpu, ".2f")
    row("agents CPU s", lambda c: c.agents_cpu, ".2f")
    row("server busy after s", lambda c: c.settle, ".1f")
    legend = {
        "flow start": "engine: flow run created, parameters, contexts (call -> first timed call)",
        **TIMED_CALLS,
        "unaccounted": "wall time no timed call covers: engine end, task-run set-up between calls, logging",
    }
    for name in order:
        print(f"  {name:<26} {legend.get(name, '')}")

    if sweep:
        print("\n=== sweep: steady cycle s (first cycle s) [task runs per steady cycle] {steady timed-out rows} ===")
        combos = sorted({(p.batch_size, p.concurrency) for p in points})
        print(f"{'N':>6}" + "".join(f"{f'B={b} C={c}':>34}" for b, c in combos))
        for n in sorted({p.n for p in points}):
            cells = []
            for b, c in combos:
                p = next((q for q in points if (q.n, q.batch_size, q.concurrency) == (n, b, c)), None)
                if p is None:
                    cells.append(f"{'-':>34}")
                    continue
                tasks = p.steady_of(lambda cy: cy.task_runs)
                timeouts = p.steady_of(lambda cy: cy.timeouts)
                cell = f"{fmt(p.steady)} ({p.first:.2f}) [{fmt(tasks, '.0f')}] {{{fmt(timeouts, '.0f')}}}"
                cells.append(f"{cell:>34}")
            print(f"{n:>6}" + "".join(cells))


# ---------------------------------------------------------------------------------------------


async def bench(args: argparse.Namespace, server_pid: int | None) -> list[Point]:
    print(f"timing: {', '.join(instrument())}", flush=True)
    points: list[Point] = []
    with tempfile.TemporaryDirectory(prefix="agentwatch-bench-") as tmp:
        for n in args.sizes:
            points += await run_size(n, args, Path(tmp), server_pid)
    return points


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    def ints(text: str) -> list[int]:
        return [int(x.replace("_", "")) for x in text.split(",") if x.strip()]

    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--sizes", type=ints, default=[100, 1000, 10000], help="fleet sizes (default 100,1000,10000)")
    parser.add_argument("--cycles", type=int, default=3, help="monitor cycles per point; >= 2 for a steady figure")
    parser.add_argument("--batch-size", type=int, default=None, help="AGENTWATCH_BATCH_SIZE (default: the setting's)")
    parser.add_argument("--batch-sizes", type=ints, default=None, help="sweep these batch sizes at every size")
    parser.add_argument("--concurrency", type=int, default=None, help="AGENTWATCH_PROBE_CONCURRENCY (default: setting)")
    parser.add_argument("--concurrencies", type=ints, default=None, help="sweep these probe concurrencies")
    parser.add_argument(
        "--ref-concurrency",
        type=ints,
        default=[20],
        help="also time the bare loop at these concurrencies, for 'best bare' (default 20; '' for none)",
    )
    parser.add_argument(
        "--baseline-runs",
        type=int,
        default=2,
        help="bare-loop runs per concurrency, split before/after the cycles (default 2)",
    )
    parser.add_argument(
        "--failure-threshold",
        type=int,
        default=1,
        help="registry failure_threshold (default 1: every later cycle has ~0 transitions)",
    )
    parser.add_argument("--cycle-timeout", type=float, default=900.0, help="give up on a cycle after this many s")
    parser.add_argument("--settle-max", type=float, default=90.0, help="max wait for the processes to go idle, s")
    parser.add_argument(
        "--profile", default=None, help="cProfile one extra (uncounted) cycle at the largest size into this file"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.cycles <= 20:
        parser.error("--cycles must be 1..20")
    if any(not 50 <= n <= 50_000 for n in args.sizes):
        parser.error("--sizes must be 50..50000")
    from agentwatch.settings import get_settings

    settings = get_settings()
    args.batch_sizes = args.batch_sizes or [args.batch_size or settings.batch_size]
    args.concurrencies = args.concurrencies or [args.concurrency or settings.probe_concurrency]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    nofile = raise_nofile()
    print(
        f"agentwatch monitor-cycle bench {time.strftime('%Y-%m-%d %H:%M')}: sizes={args.sizes} "
        f"batch sizes={args.batch_sizes} concurrencies={args.concurrencies} cycles={args.cycles} "
        f"failure_threshold={args.failure_threshold} nofile={nofile} cpus={os.cpu_count()} "
        f"python={sys.version.split()[0]}",
        flush=True,
    )
    with contextlib.ExitStack() as stack:
        server_pid: int | None = None
        if os.environ.get("PREFECT_API_URL"):
            print(f"Prefect API: {os.environ['PREFECT_API_URL']} (given; server CPU/RSS not measured)", flush=True)
        else:
            from prefect.server.api.server import SubprocessASGIServer
            from prefect.testing.utilities import prefect_test_harness

            started = time.perf_counter()
            SERVER_LOG.path = Path(tempfile.gettempdir()) / f"agentwatch-bench-server-{os.getpid()}.log"
            with SERVER_LOG.capture():
                stack.enter_context(prefect_test_harness(server_startup_timeout=120))
            server = SubprocessASGIServer._instances.get(None)
            process = getattr(server, "server_process", None)
            server_pid = process.pid if process is not None else None
            print(
                f"Prefect API: prefect_test_harness (pid {server_pid}) up in {time.perf_counter() - started:.1f} s;"
                f" its log: {SERVER_LOG.path}",
                flush=True,
            )
        points = asyncio.run(bench(args, server_pid))
        print_tables(points, sweep=len(points) > len(args.sizes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
