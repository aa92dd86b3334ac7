"""Benchmark one monitor cycle against a bare asyncio + httpx loop and the fastest raw client
(bench/probe_clients.py's floor) over the same URLs, and count what each cycle writes to Prefect
and what the Prefect server does with it.

    python bench/monitor_cycle.py [--sizes 100,1000,10000] [--cycles 3] [--batch-size B] [--concurrency C]
                                  [--batch-sizes 50,100,200] [--concurrencies 64,100] [--profile FILE]
                                  [--flip K [--flip-back]] [--alerts] [--skip-httpx]

For each fleet size N it serves N fake HTTP agents on 127.0.0.1 (agentwatch.demo.AgentServer, in a
process of its own so it shares neither the event loop nor the CPU-time accounting of the monitor;
~90% ok, ~5% slow (0.3 s), ~3% answering 500, ~2% on a closed port), writes a registry (timeout 2 s,
failure_threshold 1 so that later cycles have no transitions unless --flip makes some), and runs
`monitor_fleet(registry, force=True)` --cycles times against a real Prefect API (PREFECT_API_URL
when set, else one `prefect_test_harness()` for the whole run) with a fresh SQLite state store per
(N, batch size, concurrency).

Per cycle it prints: wall time and load average; transition rows committed (and how many need an
event + artifact of their own, i.e. are not first sights of healthy agents); what the publish step
claimed, folded and published; events agentwatch posted and the agentwatch.* events of the run the
API holds, and every event that occurred during the cycle; artifact versions of the run (API);
task runs of the run (API); Prefect writes = task runs + events posted + artifacts, against
N/200 + transitions + 10; messages the server dropped ("Subscription queue is full") and events
it refused as too large ("Refusing to publish event of size", PREFECT_SERVER_EVENTS_MAXIMUM_SIZE_BYTES),
counted in the server's log; the outbox backlog left (unpublished rows of the transition log); and
the peak RSS of the bench process, the agents' server and the Prefect server. The server accepts
dropped and refused events with 204 alike: only the read-back tells them apart.

The stage table comes from timing the monitor's own building blocks: the bench swaps the names
flows/monitor.py, tasks/publishing.py, tasks/alerting.py and tasks/recording.py call (load_registry,
the StateStore methods, probe_batch, publish_step -> publish_pending -> claim_unpublished /
post_events / artifact writes / mark_published, alert_step -> raise_alerts, write_fleet_table, ...)
for timed wrappers in this process only; nothing in the project is edited. Between cycles it drains
the Prefect client's event and log workers and waits (bounded) until the processes are idle, so one
cycle's leftovers do not slow the next. The harness server's stderr goes to a file whose warnings
are counted per cycle (late ones go to the cycle before).

Linux only (/proc, RLIMIT_NOFILE). Everything listens on 127.0.0.1 and is stopped on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
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


DROPPED = "messages dropped: subscription queue is full"
REFUSED = "events refused: over PREFECT_SERVER_EVENTS_MAXIMUM_SIZE_BYTES"


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
            if "queue is full" in line:  # prefect/server/utilities/messaging/memory.py
                kinds[DROPPED] += 1
            elif "Refusing to publish event" in line:  # prefect/server/events/messaging.py (maximum_size_bytes)
                kinds[REFUSED] += 1
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


ALERTS_SECTION = {  # --alerts: one webhook route for every agent (only bootstrap reads the variable)
    "group_threshold": 5,
    "routes": [{"name": "bench", "kind": "webhook", "url_env": "AGENTWATCH_BENCH_HOOK"}],
}


def flipped(registry: dict[str, Any], k: int) -> dict[str, Any]:
    """The registry with `k` of its `ok` agents (spread over the fleet) pointed at a URL that answers
    500: same ids and labels, so the monitor sees k agents go unhealthy (and back, with the original)."""
    ok = [i for i, a in enumerate(registry["agents"]) if a["labels"]["kind"] == "ok"]
    step = max(1, len(ok) // max(1, k))
    chosen = set(ok[::step][:k])
    agents = []
    for i, agent in enumerate(registry["agents"]):
        if i in chosen:
            url = agent["probe"]["http"]["url"].replace("/agents/ok-", "/agents/fail-")
            agent = {**agent, "probe": {"http": {**agent["probe"]["http"], "url": url}}}
        agents.append(agent)
    return {**registry, "agents": agents}


def registry_variant(i: int, variants: int, back: bool) -> int:
    """Which registry cycle i (0-based) reads: the base (0), or from cycle 2 on the flipped one (1)."""
    if variants < 2 or i == 0:
        return 0
    return i % 2 if back else 1


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


async def raw_loop(urls: list[str], concurrency: int, timeout: float) -> tuple[float, Counter[str]]:
    """The fastest raw client here (bench/probe_clients.py's floor: hand-written HTTP/1.1 on an
    asyncio Protocol, no checks), a fresh connection per GET as the monitor's probes open;
    `concurrency` at a time, each within `timeout`; wall time and outcomes. It runs on the loop
    the monitor's probes run on (agentwatch.probes.loop: uvloop, in a thread of its own), the
    fastest this machine has, so r(raw) compares like with like."""
    from probe_clients import raw_loop as floor  # bench/ is on sys.path: this script's directory

    from agentwatch.probes.loop import in_probe_loop

    start = time.perf_counter()
    outcomes = await in_probe_loop(floor(urls, concurrency, timeout))
    return time.perf_counter() - start, outcomes


# ---------------------------------------------------------------------------------------------
# timing the flow's stages without editing it: swap the names the monitor's path calls


@dataclass
class Timeline:
    spans: list[tuple[str, float, float]] = field(default_factory=list)  # (label, start, end) of one cycle
    tally: Counter[str] = field(default_factory=Counter)  # what the calls of one cycle counted, by label
    results: dict[str, Any] = field(default_factory=dict)  # the last result of some calls, by label

    def clear(self) -> None:
        self.spans.clear()
        self.tally.clear()
        self.results.clear()


TIMELINE = Timeline()


class GcClock:
    """Time the cyclic garbage collector spends in this process (every thread), from gc.callbacks."""

    def __init__(self) -> None:
        self.spent = 0.0
        self._began = 0.0
        gc.callbacks.append(self._tick)

    def reset(self) -> None:
        self.spent = 0.0

    def _tick(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.spent += time.perf_counter() - self._began


GC_CLOCK = GcClock()


@dataclass(frozen=True)
class Call:
    """One building block of the monitor's path: where its name is looked up (a module whose global
    the caller reads at call time, or "store" for a StateStore method), how deep it sits (0 = called
    by the flow itself; deeper ones are inside a timed call and indented in the report), and what it is."""

    label: str
    module: str
    attr: str
    what: str
    depth: int = 0
    concurrent: bool = False  # many overlapping calls: report first start -> last end
    tally: Any = None  # (args, kwargs, result) -> int, summed per cycle under `label`
    keep: bool = False  # keep the last result (TIMELINE.results[label])


def _n_specs(args: tuple[Any, ...], kwargs: dict[str, Any], result: Any) -> int:
    return int(result) if isinstance(result, int) else 0  # post_events returns how many it posted


def _one(args: tuple[Any, ...], kwargs: dict[str, Any], result: Any) -> int:
    return 1


def _table_bytes(args: tuple[Any, ...], kwargs: dict[str, Any], result: Any) -> int:
    import json

    table = kwargs.get("table", args[0] if args else None)
    return len(json.dumps(table, default=str)) + len(str(kwargs.get("description") or ""))


M, P, A, R, S = "flows.steps", "tasks.publishing", "tasks.alerting", "tasks.recording", "store"
# flows/steps.py holds the cycle's steps (the one-run monitor and a shard share them).
# In cycle order. A name the code no longer has is skipped; a task or flow flows.steps imports that
# is not listed is timed too (depth 0); any other new call shows up in "unaccounted".
CALLS: list[Call] = [
    Call("load_registry", "flows.registry_block", "load_registry", "read + validate the registry YAML"),
    Call("discover_docker_agents", M, "discover_docker_agents", "task: agents from Docker labels"),
    Call("store.__aenter__", S, "__aenter__", "StateStore() + ensure_schema"),
    Call("store.remember_label_agents", S, "remember_label_agents", "remember label-registered agents"),
    Call("store.remembered_label_agents", S, "remembered_label_agents", "read remembered label agents"),
    Call("store.load", S, "load", "read every agent_state row"),
    Call("store.load_restart_budgets", S, "load_restart_budgets", "read restart budgets"),
    Call("heartbeat_round", M, "heartbeat_round", "heartbeat agents: read beats, wake paused"),
    Call("select_due", M, "select_due", "pick the agents due"),
    Call("batched", M, "batched", "split into batches"),
    Call("probe_batch", M, "probe_batch", "probe-batch tasks (first start -> last end)", concurrent=True),
    Call("probe_many", "tasks.probing", "probe_many", "the probes inside them (first start -> last end)", 1, True),
    Call("settle_results", M, "settle_results", "Docker stop / restart-budget rules"),
    Call("apply_results", M, "apply_results", "health policy over every result"),
    Call("store.commit", S, "commit", "write changed records + transition rows (one transaction)"),
    Call("store.drop_missing", S, "drop_missing", "forget agents that left"),
    Call("publish_step", M, "publish_step", "task publish-transitions: publish the outbox"),
    Call("publish_pending", M, "publish_pending", "claim, plan, post events, write artifacts, mark", 1, keep=True),
    Call("store.claim_unpublished", S, "claim_unpublished", "claim unpublished rows (CAS, bounded)", 2),
    Call("plan_publish", P, "plan_publish", "events + artifact versions; fold first sights", 2),
    Call("post_events[publish]", P, "post_events", "POST /api/events, 200 a request (acknowledged)", 2, tally=_n_specs),
    Call("_write_artifacts", P, "_write_artifacts", "artifact versions, in order per agent", 2),
    Call("markdown artifacts", P, "acreate_markdown_artifact", "one agent-<id> version each", 3, True, tally=_one),
    Call("store.mark_published", S, "mark_published", "mark the rows published", 2),
    Call("store.release_claims", S, "release_claims", "give back rows not published", 2),
    Call("alert_step", M, "alert_step", "task raise-alerts: decide on the published rows"),
    Call("raise_alerts", M, "raise_alerts", "incidents + alert events", 1),
    Call("store.unalerted", S, "unalerted", "read published rows not alerted on", 2),
    Call("store.drop_missing_incidents", S, "drop_missing_incidents", "forget incidents of departed agents", 2),
    Call("store.load_incidents", S, "load_incidents", "read open incidents", 2),
    Call("post_events[alerts]", A, "post_events", "alert events", 2, tally=_n_specs),
    Call("store.save_incidents", S, "save_incidents", "write incidents + mark rows alerted", 2),
    Call("store.mark_alerted", S, "mark_alerted", "mark rows alerted (no alerts section)", 2),
    Call("report_drift", M, "report_drift", "identity changes: event + artifact each"),
    Call("store.load_identities", S, "load_identities", "read stored identities", 1),
    Call("store.save_identities", S, "save_identities", "write identities", 1),
    Call("post_events[drift]", "tasks.drift", "post_events", "agentwatch.agent.changed events", 1, tally=_n_specs),
    Call("drift artifacts", "tasks.drift", "acreate_markdown_artifact", "agent-<id> versions", 1, True, tally=_one),
    Call("reconcile_after_cycle", M, "reconcile_after_cycle", "Docker reconcile sub-flow when needed"),
    Call("reconcile_in_cycle", "flows.monitor", "reconcile_in_cycle", "Docker reconcile in the cycle"),
    Call("store.__aexit__", S, "__aexit__", "dispose the engine"),
    Call("fleet_rows", M, "fleet_rows", "build the fleet table rows"),
    Call("write_fleet_table", M, "write_fleet_table", "task: the fleet table artifact (capped)"),
    Call(
        "fleet table artifact",
        R,
        "acreate_table_artifact",
        "POST the table (tally: its JSON bytes)",
        1,
        tally=_table_bytes,
    ),
    Call("late_warnings", M, "late_warnings", "heartbeat late warnings"),
    Call("fleet_summary", M, "fleet_summary", "summary text"),
    Call("post_events[cycle]", M, "post_events", "late events + agentwatch.monitor.cycle", tally=_n_specs),
]
BY_LABEL: dict[str, Call] = {c.label: c for c in CALLS}
TASKS: set[str] = set()  # timed labels that are Prefect tasks (each call is one task run)
EVENT_TALLIES = ("post_events[publish]", "post_events[alerts]", "post_events[drift]", "post_events[cycle]")


def _timed(call: Call, fn: Any) -> Any:
    """`fn` with its calls recorded in TIMELINE, whether it returns a value or an awaitable."""
    tl = TIMELINE

    def record(start: float, args: tuple[Any, ...], kwargs: dict[str, Any], result: Any) -> None:
        tl.spans.append((call.label, start, time.perf_counter()))
        if call.tally is not None:
            tl.tally[call.label] += call.tally(args, kwargs, result)
        if call.keep:
            tl.results[call.label] = result

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        if inspect.isawaitable(result):

            async def finish() -> Any:
                value = None
                try:
                    value = await result
                    return value
                finally:
                    record(start, args, kwargs, value)

            return finish()
        record(start, args, kwargs, result)
        return result

    return wrapped


def instrument() -> list[str]:
    """Swap what the monitor's path calls for timed versions (this process only); returns the labels timed."""
    import importlib

    from prefect import Flow, Task

    import flows.monitor as monitor

    steps = importlib.import_module(M)
    listed = {c.attr for c in CALLS if c.module == M}
    extra = [
        Call(name, M, name, f"{type(obj).__name__.lower()} (not in the bench's list)")
        for name, obj in vars(steps).items()
        if isinstance(obj, Task | Flow) and name not in listed and name != "monitor_fleet"
    ]
    CALLS.extend(extra)
    BY_LABEL.update({c.label: c for c in extra})
    timed: list[str] = []
    for call in CALLS:
        if call.module == S:
            continue
        try:
            module = importlib.import_module(call.module)
        except ImportError:
            continue
        fn = getattr(module, call.attr, None)
        if fn is None:
            continue
        if isinstance(fn, Task):
            TASKS.add(call.label)
        setattr(module, call.attr, _timed(call, fn))
        timed.append(call.label)

    base = monitor.StateStore
    methods = {c.attr: _timed(c, getattr(base, c.attr)) for c in CALLS if c.module == S and hasattr(base, c.attr)}
    monitor.StateStore = type("TimedStateStore", (base,), methods)
    timed += [c.label for c in CALLS if c.module == S and c.attr in methods]
    return timed


def stage_times(spans: list[tuple[str, float, float]], call_start: float, call_end: float) -> dict[str, float]:
    """Seconds per timed call in one cycle, plus the engine's start and the time no timed call covers."""
    by: dict[str, list[tuple[float, float]]] = {}
    for name, a, b in spans:
        by.setdefault(name, []).append((a, b))
    out: dict[str, float] = {}
    top = [(a, b) for name, a, b in spans if BY_LABEL[name].depth == 0]
    out["flow start"] = (min(a for a, _ in top) if top else call_end) - call_start
    for name, pairs in by.items():
        if BY_LABEL[name].concurrent:
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
    known = ["flow start", *(c.label for c in CALLS)]
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


async def count_events(
    flt: dict[str, Any], max_wait: float = 30.0, expect: int = 0, prefix: str = "agentwatch."
) -> Counter[str]:
    """Events the API holds that match `flt` (an EventFilter body), by name (bounded poll: the server
    persists events a few seconds after it accepts them). Done when the events named `prefix`* reach
    `expect` and the count holds over one read, or when it holds over three."""
    from prefect import get_client

    body = {"filter": {**flt, "order": "DESC"}, "time_unit": "day", "time_interval": 1.0}
    deadline = time.monotonic() + max_wait
    last: Counter[str] | None = None
    same = 0
    async with get_client() as client:
        while True:
            response = await client._client.post("/events/count-by/event", json=body)
            response.raise_for_status()
            counts = Counter({row["value"]: row["count"] for row in response.json()})
            ours = sum(c for name, c in counts.items() if name.startswith(prefix))
            same = same + 1 if counts == last else 0
            last = counts
            if (ours >= expect and counts and same >= 1) or same >= 3 or time.monotonic() > deadline:
                return counts
            await asyncio.sleep(2.0)


def window_filter(since: Any, until: Any) -> dict[str, Any]:
    """Every event that occurred during the cycle (task runs, flow run, artifacts, agentwatch.*)."""
    return {"occurred": {"since": since.isoformat(), "until": until.isoformat()}}


def run_filter(run_id: Any, since: Any, until: Any) -> dict[str, Any]:
    """Every event about the flow run or related to it, whenever it occurred: the transition events of
    a backlog that this run published carry their transition's time, which may be an earlier cycle's."""
    return {
        "occurred": {"since": since.isoformat(), "until": until.isoformat()},
        "any_resource": {"id": [f"prefect.flow-run.{run_id}"]},
    }


async def count_artifacts(run_id: Any) -> int:
    """Artifact versions the flow run wrote (its tasks' included), read back from the API."""
    from prefect import get_client

    async with get_client() as client:
        response = await client._client.post(
            "/artifacts/count", json={"artifacts": {"flow_run_id": {"any_": [str(run_id)]}}}
        )
        response.raise_for_status()
        return int(response.json())


async def count_logs(run_id: Any, max_wait: float = 10.0) -> int:
    """Log lines of the flow run that reached the API (bounded poll until the count holds)."""
    from prefect import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    flt = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id]))
    deadline = time.monotonic() + max_wait
    last, same = -1, 0
    async with get_client() as client:
        while True:
            total = 0
            for page in range(50):  # at most 10,000 lines
                got = await client.read_logs(log_filter=flt, limit=200, offset=page * 200)
                total += len(got)
                if len(got) < 200:
                    break
            same = same + 1 if total == last else 0
            last = total
            if same >= 1 or time.monotonic() > deadline:
                return total
            await asyncio.sleep(1.0)


@dataclass
class StoreCounts:
    transitions: int = 0  # rows this run wrote
    own: int = 0  # of those, the ones that need an event and an artifact each (not unknown -> healthy)
    unpublished: int = 0  # outbox backlog after the run, every run's
    unalerted: int = 0


def store_counts(db_path: Path, run_id: str) -> StoreCounts:
    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///{db_path}")
    try:
        with engine.connect() as conn:

            def one(sql: str, **params: Any) -> int:
                return int(conn.execute(sa.text(sql), params).scalar_one())

            return StoreCounts(
                transitions=one("SELECT count(*) FROM transitions WHERE run_id = :r", r=run_id),
                own=one(
                    "SELECT count(*) FROM transitions WHERE run_id = :r "
                    "AND NOT (from_state = 'unknown' AND to_state = 'healthy')",
                    r=run_id,
                ),
                unpublished=one("SELECT count(*) FROM transitions WHERE published_at IS NULL"),
                unalerted=one("SELECT count(*) FROM transitions WHERE alerted_at IS NULL"),
            )
    except sa.exc.OperationalError:  # a run that failed before the store made its tables
        return StoreCounts()
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
    client: str = "httpx"  # "httpx": bare_loop; "raw": raw_loop

    @property
    def median(self) -> float:
        return statistics.median(self.walls) if self.walls else float("nan")

    @property
    def timeouts(self) -> int:
        return self.outcomes.get("timeout", 0)


@dataclass
class Cycle:
    wall: float
    store: StoreCounts
    timeouts: int
    task_runs: int
    task_run_names: Counter[str]
    expected_task_runs: int
    events: Counter[str]  # every event that occurred during the cycle, by name (API)
    run_events: Counter[str]  # events about or related to the flow run, whenever they occurred (API)
    posted: Counter[str]  # events agentwatch posted (and acknowledged), by caller (client side)
    artifacts: int  # artifact versions of the run (API)
    artifact_calls: int  # artifact writes the monitor made (client side)
    table_bytes: int  # the fleet table artifact's JSON (its server event is a little larger)
    publish: Any  # publish_pending's PublishReport
    log_lines: int
    stages: dict[str, float]
    flush: float
    settle: float
    monitor_cpu: float
    gc_pause: float  # seconds the cyclic garbage collector ran in this process during the cycle
    agents_cpu: float
    server_cpu: float
    state: str
    server_log: Counter[str]
    load: tuple[float, float, float]
    rss: tuple[float | None, float | None, float | None]  # peak RSS so far: bench, agents, server

    @property
    def transitions(self) -> int:
        return self.store.transitions

    @property
    def dropped(self) -> int:
        return self.server_log.get(DROPPED, 0)

    @property
    def refused(self) -> int:
        return self.server_log.get(REFUSED, 0)

    @property
    def agentwatch_events(self) -> int:
        """agentwatch.* events of this run that reached the API's event store."""
        return sum(c for k, c in self.run_events.items() if k.startswith("agentwatch."))

    @property
    def agent_events(self) -> int:
        return sum(c for k, c in self.run_events.items() if k.startswith("agentwatch.agent."))

    @property
    def all_events(self) -> int:
        return sum(self.events.values())

    @property
    def events_posted(self) -> int:
        return sum(self.posted.values())

    @property
    def writes(self) -> int:
        """Prefect writes the monitor made: task runs + events it posted + artifact versions."""
        return self.task_runs + self.events_posted + self.artifacts

    def bound(self, n: int, own_only: bool = False) -> float:
        """N/200 + transitions + 10; own_only: count only transitions that get an event and artifact each."""
        return n / 200 + (self.store.own if own_only else self.transitions) + 10

    @property
    def backlog(self) -> int:
        return self.store.unpublished


@dataclass
class Point:
    n: int
    batch_size: int
    concurrency: int
    cycles: list[Cycle]
    monitor_rss: float
    bare: Bare = field(default_factory=lambda: Bare(0))
    best_bare: Bare = field(default_factory=lambda: Bare(0))
    raw: Bare = field(default_factory=lambda: Bare(0, client="raw"))
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
        load = os.getloadavg()[0]
        loop = raw_loop if bare.client == "raw" else bare_loop
        wall, bare.outcomes = await loop(urls, bare.concurrency, TIMEOUT_S)
        bare.walls.append(wall)
        bare.cpu.append(cpu_seconds(os.getpid()) - cpu0)
        print(
            f"   {bare.client + ' loop':10} C={bare.concurrency:<4} {wall:8.3f} s  cpu={bare.cpu[-1]:.2f} s  "
            f"load={load:.2f}  {dict(bare.outcomes)}",
            flush=True,
        )


async def run_cycles(
    n: int,
    batch_size: int,
    concurrency: int,
    registry_path: Path,
    variants: list[Path],
    db_path: Path,
    pids: list[int],
    args: argparse.Namespace,
    profile: bool,
) -> Point:
    """--cycles monitor cycles on a fresh state store at one batch size and probe concurrency. With
    --flip, cycle 1 reads the base registry and later cycles the flipped one (--flip-back: the base
    again on odd cycles)."""
    import shutil
    from datetime import UTC, datetime, timedelta

    from flows.monitor import monitor_fleet

    os.environ["AGENTWATCH_BATCH_SIZE"] = str(batch_size)
    os.environ["AGENTWATCH_PROBE_CONCURRENCY"] = str(concurrency)
    os.environ["AGENTWATCH_DATABASE_URL"] = f"sqlite:///{db_path}"
    server_pid = pids[2] if len(pids) > 2 else None
    print(f"-- monitor N={n} batch={batch_size} concurrency={concurrency}", flush=True)
    point_start = datetime.now(UTC) - timedelta(minutes=1)
    cycles: list[Cycle] = []
    for i in range(args.cycles + (1 if profile else 0)):  # a profiled cycle is an extra one, not counted
        shutil.copyfile(variants[registry_variant(i, len(variants), args.flip_back)], registry_path)
        await settle(pids, args.settle_max)
        between = SERVER_LOG.take()  # logged after the last cycle's count: late, so still the last cycle's
        if between:
            print(f"   ! Prefect server log between cycles: {dict(between.most_common(5))}", flush=True)
            if cycles:
                cycles[-1].server_log.update(between)
        cpu0 = [cpu_seconds(p) for p in pids]
        TIMELINE.clear()
        since = datetime.now(UTC)
        profiler = None
        if i == args.cycles:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        GC_CLOCK.reset()
        start = time.perf_counter()
        try:
            state = await asyncio.wait_for(
                monitor_fleet(str(registry_path), force=True, return_state=True),  # type: ignore[call-overload]
                args.cycle_timeout,
            )
        finally:
            wall = time.perf_counter() - start
            gc_pause = GC_CLOCK.spent
            if profiler is not None:
                profiler.disable()
                dump_profile(profiler, Path(args.profile), n)
        until = datetime.now(UTC)
        cpu1 = [cpu_seconds(p) for p in pids]
        load = os.getloadavg()
        stages = stage_times(list(TIMELINE.spans), start, start + wall)
        posted = Counter({k.removeprefix("post_events[").rstrip("]"): TIMELINE.tally[k] for k in EVENT_TALLIES})
        artifact_calls = (
            TIMELINE.tally["markdown artifacts"]
            + TIMELINE.tally["drift artifacts"]
            + sum(1 for name, _, _ in TIMELINE.spans if name == "fleet table artifact")
        )
        table_bytes = TIMELINE.tally["fleet table artifact"]
        publish = TIMELINE.results.get("publish_pending")
        expected = sum(1 for name, _, _ in TIMELINE.spans if name in TASKS)  # one task run per task call
        rows = await state.aresult(raise_on_failure=False) if state.is_completed() else []
        timeouts = sum(1 for r in rows if "timed out" in (r.get("reason") or ""))
        flush = await drain_workers(args.settle_max)
        settled, idle = await settle(pids, args.settle_max)
        run_id = state.state_details.flow_run_id
        counts = store_counts(db_path, str(run_id))
        task_runs, names = await read_task_runs(run_id, expected)
        run_events = await count_events(
            run_filter(run_id, point_start, datetime.now(UTC) + timedelta(minutes=1)), expect=sum(posted.values())
        )
        events = await count_events(window_filter(since, until + timedelta(seconds=1)), max_wait=6.0)
        artifacts = await count_artifacts(run_id)
        log_lines = await count_logs(run_id)
        await asyncio.sleep(1.0)  # the server logs a drop when it happens; give the last ones a moment
        server_log = SERVER_LOG.take()
        rss = (self_peak_rss_mib(), peak_rss_mib(pids[1]), peak_rss_mib(server_pid) if server_pid else None)
        cycle = Cycle(
            wall=wall,
            store=counts,
            timeouts=timeouts,
            task_runs=task_runs,
            task_run_names=names,
            expected_task_runs=expected,
            events=events,
            run_events=run_events,
            posted=posted,
            artifacts=artifacts,
            artifact_calls=artifact_calls,
            table_bytes=table_bytes,
            publish=publish,
            log_lines=log_lines,
            stages=stages,
            flush=flush,
            settle=settled,
            monitor_cpu=cpu1[0] - cpu0[0],
            gc_pause=gc_pause,
            agents_cpu=cpu1[1] - cpu0[1],
            server_cpu=(cpu1[2] - cpu0[2]) if server_pid else float("nan"),
            state=state.type.value,
            server_log=server_log,
            load=load,
            rss=rss,
        )
        if i < args.cycles:
            cycles.append(cycle)
        print_cycle(i, n, cycle, profiled=i == args.cycles, server_idle=idle)
        if not state.is_completed():
            print(f"   ! flow run ended {state.type.value}: {state.message}", flush=True)
    return Point(n=n, batch_size=batch_size, concurrency=concurrency, cycles=cycles, monitor_rss=self_peak_rss_mib())


def print_cycle(i: int, n: int, c: Cycle, profiled: bool, server_idle: bool) -> None:
    p = c.publish
    published = (
        f"claimed={p.claimed} published={p.published} folded={p.folded} events={p.events} artifacts={p.artifacts}"
        + (f" ERROR={p.error}" if p.error else "")
        if p is not None
        else "-"
    )
    bound, bound_own = c.bound(n), c.bound(n, own_only=True)
    print(
        f"   cycle {i + 1}{' (cProfile on, not counted)' if profiled else ''}: {c.wall:8.3f} s  {c.state}  "
        f"load avg {c.load[0]:.2f} {c.load[1]:.2f} {c.load[2]:.2f}\n"
        f"            transitions={c.transitions} (own event+artifact: {c.store.own}, first sights healthy: "
        f"{c.transitions - c.store.own})  timed-out rows={c.timeouts}  outbox backlog after: "
        f"unpublished={c.store.unpublished} unalerted={c.store.unalerted}\n"
        f"            publish step: {published}\n"
        f"            events: agentwatch posted={c.events_posted} {dict(c.posted)}, reached the API={c.agentwatch_events} "
        f"(agentwatch.agent.*={c.agent_events}); all events during the cycle={c.all_events}, "
        f"about/related to the run={sum(c.run_events.values())}\n"
        f"            artifacts={c.artifacts} (written {c.artifact_calls}; fleet table {c.table_bytes / 1024:.0f} KiB)  "
        f"task runs={c.task_runs}/{c.expected_task_runs} {dict(c.task_run_names)}  log lines={c.log_lines}\n"
        f"            Prefect writes={c.writes} (task runs + events posted + artifacts) vs bound N/200+transitions+10="
        f"{bound:.0f} [{'ok' if c.writes <= bound else 'OVER'}]; with own transitions only {bound_own:.0f} "
        f"[{'ok' if c.writes <= bound_own else 'OVER'}]\n"
        f"            server: dropped={c.dropped} refused={c.refused}  "
        f"peak RSS MiB bench={fmt(c.rss[0], '.0f')} agents={fmt(c.rss[1], '.0f')} server={fmt(c.rss[2], '.0f')}\n"
        f"            cpu s: monitor={c.monitor_cpu:.2f} agents={c.agents_cpu:.2f} server={c.server_cpu:.2f}  "
        f"flush={c.flush:.2f} s  server busy after={c.settle:.1f} s{'' if server_idle else ' (not idle!)'}",
        flush=True,
    )
    others = {k: v for k, v in c.server_log.items() if k not in (DROPPED, REFUSED)}
    if others:
        print(f"            ! Prefect server log: {dict(Counter(others).most_common(5))}", flush=True)
    if i == 0:
        print(f"            events during the cycle by name: {dict(c.events.most_common())}", flush=True)


async def run_size(n: int, args: argparse.Namespace, workdir: Path, server_pid: int | None) -> list[Point]:
    """Serve N agents, time the bare loops before and after, and the monitor at every combination."""
    points: list[Point] = []
    with agents_process() as (agents_pid, port):
        registry, mix = fleet(port, n, args.failure_threshold)
        if args.alerts:
            registry["alerts"] = ALERTS_SECTION
        registry_path = workdir / f"fleet-{n}.yaml"
        write_registry(registry, registry_path)
        variants = [workdir / f"fleet-{n}.base.yaml"]
        write_registry(registry, variants[0])
        if args.flip:
            variants.append(workdir / f"fleet-{n}.flipped.yaml")
            write_registry(flipped(registry, args.flip), variants[1])
        urls = registry_urls(registry)
        pids = [os.getpid(), agents_pid] + ([server_pid] if server_pid else [])
        print(f"\n== N={n} mix={dict(mix)} agents pid={agents_pid} port={port}", flush=True)

        bares = {c: Bare(c) for c in sorted(set(args.concurrencies) | set(args.ref_concurrency))}
        if args.skip_httpx:  # the raw client only: the httpx loops take a minute at 10,000
            bares = {c: Bare(c) for c in args.concurrencies}  # never run: their median is NaN
        raws = {c: Bare(c, client="raw") for c in args.concurrencies}
        runs_before = max(1, args.baseline_runs // 2)
        loops = [*([] if args.skip_httpx else bares.values()), *raws.values()]
        for bare in loops:  # with the Prefect server idle
            await run_bare(bare, urls, runs_before, pids, args.settle_max)
        for b in args.batch_sizes:
            for c in args.concurrencies:
                db_path = workdir / f"state-{n}-{b}-{c}.db"
                profile = bool(args.profile) and n == max(args.sizes) and not points
                points.append(await run_cycles(n, b, c, registry_path, variants, db_path, pids, args, profile))
        for bare in loops:  # the same loops again after the cycles: drift shows here
            await run_bare(bare, urls, max(1, args.baseline_runs - runs_before), pids, args.settle_max)
        agents_rss = peak_rss_mib(agents_pid)

    best = min(bares.values(), key=lambda b: b.median)
    for p in points:
        p.bare, p.best_bare, p.agents_rss = bares[p.concurrency], best, agents_rss
        p.raw = raws[p.concurrency]
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
    print(
        "\n=== monitor cycle vs a bare asyncio + httpx loop and the raw client (timeout 2 s; ratio = monitor / loop) ==="
    )
    head = (
        f"{'N':>6} {'B':>5} {'C':>4} {'cycle1 s':>9} {'steady s':>9} {'bare s':>8} {'ratio':>6} {'ratio1':>6} "
        f"{'best bare':>12} {'r(best)':>7} {'raw s':>7} {'r(raw)':>6} {'t/o mon':>9} {'t/o bare':>8} "
        f"{'RSS MiB':>7} {'agents':>6} {'server':>6}"
    )
    print(head)
    print("-" * len(head))
    for p in points:
        first = p.cycles[0]
        steady = p.steady
        steady_to = p.steady_of(lambda c: c.timeouts)
        best = f"{p.best_bare.median:.3f}@{p.best_bare.concurrency}"
        print(
            f"{p.n:>6} {p.batch_size:>5} {p.concurrency:>4} {p.first:>9.3f} {fmt(steady):>9} {p.bare.median:>8.3f} "
            f"{fmt(steady / p.bare.median if steady else None, '.2f'):>6} {p.first / p.bare.median:>6.2f} "
            f"{best:>12} {fmt(steady / p.best_bare.median if steady else None, '.2f'):>7} "
            f"{fmt(p.raw.median if p.raw.walls else None):>7} "
            f"{fmt(steady / p.raw.median if steady and p.raw.walls else None, '.2f'):>6} "
            f"{first.timeouts:>4}/{fmt(steady_to, '.0f'):<4} {p.bare.timeouts:>8} {p.monitor_rss:>7.0f} "
            f"{fmt(p.agents_rss, '.0f'):>6} {fmt(p.server_rss, '.0f'):>6}"
        )
    print(
        "B/C: batch size / probe concurrency (AGENTWATCH_BATCH_SIZE / AGENTWATCH_PROBE_CONCURRENCY).\n"
        "steady: median of cycles 2..; bare s: median bare loop (one httpx client) at the same C; ratio = steady /\n"
        "  bare, ratio1 = cycle 1 / bare; best bare: the fastest bare loop at this N (median s @ its concurrency).\n"
        "raw s: median of the raw client (bench/probe_clients.py's floor: hand-written HTTP/1.1, a fresh connection\n"
        "  per GET, no checks, on uvloop: the monitor's probe loop) at the same C over the same URLs; r(raw) = steady /\n"
        "  raw s.\n"
        "t/o mon: rows whose reason is a probe timeout (cycle 1 / steady); t/o bare: timeouts in the last bare run\n"
        "  at the same C. Nothing here should time out (slowest agent answers in 0.3 s, timeout 2 s).\n"
        "RSS MiB: peak RSS of this bench process (monitor + Prefect client + bare loops; cumulative over the run);\n"
        "  agents / server: peak RSS (VmHWM, MiB) of the agents' server / Prefect server process."
    )

    print("\n=== what each cycle wrote to Prefect, and what the server did with it ===")
    head = (
        f"{'N':>6} {'cyc':>3} {'wall s':>8} {'load1':>5} {'trans':>6} {'own':>5} {'tasks':>5} {'ev post':>7} "
        f"{'ev API':>6} {'all ev':>6} {'artif':>5} {'writes':>6} {'bound':>6} {'bound*':>6} {'dropped':>7} "
        f"{'refused':>7} {'backlog':>7} {'table KiB':>9} {'logs':>5} {'RSS b/a/s MiB':>14}"
    )
    print(head)
    print("-" * len(head))
    for p in points:
        for i, cy in enumerate(p.cycles):
            rss = "/".join(fmt(v, ".0f") for v in cy.rss)
            print(
                f"{p.n:>6} {i + 1:>3} {cy.wall:>8.2f} {cy.load[0]:>5.2f} {cy.transitions:>6} {cy.store.own:>5} "
                f"{cy.task_runs:>5} {cy.events_posted:>7} {cy.agentwatch_events:>6} {cy.all_events:>6} "
                f"{cy.artifacts:>5} {cy.writes:>6} {cy.bound(p.n):>6.0f} {cy.bound(p.n, True):>6.0f} "
                f"{cy.dropped:>7} {cy.refused:>7} {cy.backlog:>7} {cy.table_bytes / 1024:>9.0f} {cy.log_lines:>5} "
                f"{rss:>14}"
            )
    print(
        "trans: transition rows the run committed; own: those that need an event + artifact each (all but\n"
        "  unknown -> healthy, which past AGENTWATCH_FIRST_SEEN_FOLD are one agentwatch.fleet.first-seen event).\n"
        "tasks: task runs of the flow run (API). ev post: events agentwatch posted and the API acknowledged\n"
        "  (transitions, first-seen, alerts, late, monitor.cycle); ev API: agentwatch.* events of the run in the\n"
        "  server's event store; all ev: every event that occurred during the cycle (task runs, artifacts, ...).\n"
        "artif: artifact versions of the run (API). writes = tasks + ev post + artif; bound = N/200 + trans + 10;\n"
        "  bound* = N/200 + own + 10. dropped: 'Subscription queue is full' lines in the server's log;\n"
        "  refused: 'Refusing to publish event of size' lines (events over the server's 1.5 MB limit).\n"
        "backlog: unpublished rows of the transition log after the run. table KiB: the fleet table artifact's\n"
        "  JSON. logs: log lines of the run (API). RSS b/a/s: peak RSS so far of bench / agents / Prefect server."
    )

    print("\n=== where a cycle's time goes (s): first cycle | steady (median of later cycles) ===")
    cols = [f"N={p.n} B={p.batch_size} C={p.concurrency}" for p in points]
    width = max(26, *(len(c) + 2 for c in cols))
    print(f"{'stage':<32}" + "".join(f"{c:>{width}}" for c in cols))

    def row(label: str, get: Any, spec: str = ".3f") -> None:
        cells = [f"{fmt(get(p.cycles[0]), spec):>11} | {fmt(p.steady_of(get), spec):>10}" for p in points]
        print(f"{label:<32}" + "".join(f"{c:>{width}}" for c in cells))

    def indent(name: str) -> str:
        call = BY_LABEL.get(name)
        return "  " * (call.depth if call else 0) + name

    order = stage_order(points)
    for name in order:
        row(indent(name), lambda c, name=name: c.stages.get(name))
    row("= cycle wall", lambda c: c.wall)
    row("monitor CPU s", lambda c: c.monitor_cpu, ".2f")
    row("  of it GC pauses s", lambda c: c.gc_pause, ".2f")
    row("server CPU s (in cyc)", lambda c: c.server_cpu, ".2f")
    row("agents CPU s", lambda c: c.agents_cpu, ".2f")
    row("server busy after s", lambda c: c.settle, ".1f")
    legend = {
        "flow start": "engine: flow run created, parameters, contexts (call -> first timed call)",
        **{c.label: c.what for c in CALLS},
        "unaccounted": "wall time no depth-0 timed call covers: engine end, task-run set-up, logging",
    }
    for name in order:
        print(f"  {indent(name):<34} {legend.get(name, '')}")

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
    parser.add_argument(
        "--flip",
        type=int,
        default=0,
        help="from cycle 2 on, K healthy agents answer 500 (same ids): cycle 2 has K transitions to publish,\n"
        "and past AGENTWATCH_PUBLISH_MAX the rest drains over the next cycles (default 0)",
    )
    parser.add_argument(
        "--flip-back",
        action="store_true",
        help="with --flip: the K agents answer 200 again on odd cycles (K transitions every cycle)",
    )
    parser.add_argument(
        "--alerts",
        action="store_true",
        help="give the registry an alerts: section (one webhook route for every agent, group_threshold 5),\n"
        "so the raise-alerts step opens incidents and posts alert events",
    )
    parser.add_argument(
        "--skip-httpx", action="store_true", help="time the raw client only, not the bare httpx loops (quicker)"
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


MONITOR_SOURCES = (
    "flows/monitor.py",
    "flows/steps.py",
    "flows/reconcile.py",
    "tasks/publishing.py",
    "tasks/alerting.py",
    "tasks/recording.py",
    "tasks/probing.py",
    "tasks/drift.py",
    "agentwatch/outbox.py",
    "agentwatch/store/outbox.py",
    "agentwatch/store/agents.py",
    "agentwatch/settings.py",
)


def source_fingerprint() -> str:
    """git HEAD and a hash of the monitor's source files as they are now (the tree has uncommitted
    edits while several people work in it): figures can be tied to the code they measured."""
    import hashlib
    import subprocess

    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for name in MONITOR_SOURCES:
        path = root / name
        digest.update(name.encode() + b"\0" + (path.read_bytes() if path.exists() else b"-"))
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        head = "?"
    return f"HEAD {head or '?'}, monitor sources sha256 {digest.hexdigest()[:12]}"


def main(argv: list[str] | None = None) -> int:
    from agentwatch.settings import get_settings

    args = parse_args(argv)
    nofile = raise_nofile()
    print(
        f"agentwatch monitor-cycle bench {time.strftime('%Y-%m-%d %H:%M')}: sizes={args.sizes} "
        f"batch sizes={args.batch_sizes} concurrencies={args.concurrencies} cycles={args.cycles} "
        f"failure_threshold={args.failure_threshold} flip={args.flip}{' (back)' if args.flip_back else ''} "
        f"alerts={args.alerts} "
        f"publish_max={get_settings().publish_max} first_seen_fold={get_settings().first_seen_fold} "
        f"fleet_table_rows={get_settings().fleet_table_rows} nofile={nofile} cpus={os.cpu_count()} "
        f"python={sys.version.split()[0]}\ntree: {source_fingerprint()}",
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
