"""Sharded monitor cycles under real faults, on a scale stack of this module's own (a Prefect server
on PostgreSQL with the Redis broker: scale_stack.py), so that what these tests break is never the
session's stack: a worker killed with SIGKILL (its flow run's process with it) while its shard runs,
the Prefect server's PostgreSQL link cut (a TCP proxy in front of the machine's cluster, killed with
SIGKILL: the cluster keeps serving the state store and the other tests), Redis killed with SIGKILL.
Each time the cycle ends within its bounds (never hangs), says what failed, and what was committed
is kept and published by the next cycle once the fault is gone.

The agents are real HTTP servers on 127.0.0.1 (agentwatch.demo); `slow-*` agents answer after
SLOW seconds, so that a shard is still probing when the fault strikes. Timings are printed (-s)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import sqlalchemy as sa
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId
from prefect.client.schemas.objects import FlowRun

from agentwatch.demo import fleet_registry, serve_in_thread
from agentwatch.events import MONITOR_CYCLE
from agentwatch.shards import shard_of
from agentwatch.store import StateStore
from agentwatch.store.schema import transitions

from .prefect_reads import wait_for_events
from .scale_stack import ScaleStack, TcpProxy, running_scale_stack, unavailable
from .shard_support import SHARDS, Workers, ensure_pool_and_deployment, pool_workers, wait_for_workers

pytestmark = pytest.mark.integration

SLOW = 6.0  # seconds a slow agent takes to answer
MONITOR_TIMEOUT = 50  # s: the parent waits for its shards 50 - 2 * 10 = 30 s (flows/shard.py: shard_wait)
PUBLISH_TIMEOUT = 10


@dataclass(frozen=True)
class FaultStack:
    """The module's scale stack, its Prefect database reached through `proxy`."""

    stack: ScaleStack
    proxy: TcpProxy


@pytest.fixture(scope="module")
def fault_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    try:  # the cluster's URL: the proxy's target, and the store's
        url = request.getfixturevalue("postgres_databases").url
    except pytest.skip.Exception as exc:
        unavailable(f"no PostgreSQL to put the stack's database behind a proxy: {exc}")
    proxy = TcpProxy(url.host or "127.0.0.1", int(url.port or 5432))
    proxy.start()
    admin = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    try:
        with running_scale_stack(
            tmp_path_factory.mktemp("fault-stack"),
            SCALE_STACK_POSTGRES_URL=admin,
            SCALE_STACK_DATABASE=f"prefect_faults_t{os.getpid()}",
        ) as stack:
            try:
                yield FaultStack(stack, proxy)
            finally:
                if not proxy.alive():  # the stop drops the database through it
                    proxy.start()
    finally:
        proxy.kill()


@pytest.fixture
def store(fault_stack: FaultStack, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The agentwatch state store (PostgreSQL, straight to the cluster, never through the proxy) and
    the monitor's bounds, for the parent here and the workers (they inherit this environment)."""
    postgres_databases = request.getfixturevalue("postgres_databases")  # after fault_stack: its skip or failure
    url = postgres_databases.create()
    monkeypatch.setenv("AGENTWATCH_DATABASE_URL", url)
    monkeypatch.setenv("AGENTWATCH_MONITOR_TIMEOUT", f"{MONITOR_TIMEOUT}s")
    monkeypatch.setenv("AGENTWATCH_PUBLISH_TIMEOUT", f"{PUBLISH_TIMEOUT}s")
    try:
        yield url
    finally:
        postgres_databases.drop(url)


def write_fleet(path: Path, agents: Any) -> tuple[list[str], dict[int, list[str]]]:
    """A fleet with slow and healthy agents in both shards; checked once per 10 minutes, so the
    second cycle probes only the agents the first did not commit. Returns the ids, and by shard."""
    names = [f"ok-{i}" for i in range(6)] + [f"slow-{i}" for i in range(6)]
    registry = fleet_registry(agents, names, timeout="20s", interval="10m")
    ids = [a["id"] for a in registry["agents"]]
    by_shard = {s: [i for i in ids if shard_of(i, SHARDS) == s] for s in range(SHARDS)}
    assert all(any(i.startswith("slow-") for i in own) for own in by_shard.values()), by_shard
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(registry))
    return ids, by_shard


async def shard_runs(parent: UUID) -> dict[int, FlowRun]:
    async with get_client() as client:
        runs = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent]))
        )
    return {int(r.parameters["shard"]): r for r in runs}


async def running_shard(since: datetime, shard: int, timeout: float = 60.0) -> FlowRun:
    """The run of `shard` started after `since`, once it is Running in a worker's process."""
    deadline = time.monotonic() + timeout
    while True:
        async with get_client() as client:
            runs = await client.read_flow_runs()
        for run in runs:
            if (
                run.name == f"shard-{shard + 1}-of-{SHARDS}"
                and run.created is not None
                and run.created >= since
                and run.state is not None
                and run.state.is_running()
                and run.infrastructure_pid
            ):
                return run
        assert time.monotonic() < deadline, f"no running run of shard {shard + 1} within {timeout:g}s"
        await asyncio.sleep(0.3)


async def stored(url: str) -> tuple[dict[str, Any], list[Any]]:
    """The records and the transition rows (agent, run, published) in the state store."""
    async with StateStore(url) as store:
        records = await store.load()
        query = sa.select(transitions.c.id, transitions.c.agent_id, transitions.c.run_id, transitions.c.published_at)
        rows = await store._run(lambda conn: conn.execute(query).all())
    return records, list(rows)


def outputs(workers: Workers) -> str:
    return "\n".join(f"--- {n}\n{workers.output(n)[-2500:]}" for n in workers.names)


async def test_a_worker_killed_mid_shard_fails_the_cycle_in_time_and_the_next_cycle_checks_its_agents(
    fault_stack: FaultStack, store: str, tmp_path: Path
) -> None:
    """SIGKILL one worker's process group (the worker and the flow run process it started) while its
    shard probes. The parent waits no longer than its bound, cancels the orphaned run, publishes the
    surviving shard's transitions, posts no cycle event and ends Failed naming the shard. The next
    cycle, on a replacement worker, checks the killed shard's agents; nothing committed is lost."""
    from flows.monitor import monitor_fleet

    times: dict[str, float] = {}
    victim = 0
    with fault_stack.stack.settings(), serve_in_thread(slow_delay=SLOW) as agents:
        path = tmp_path / "fleet.yaml"
        ids, by_shard = write_fleet(path, agents)
        await ensure_pool_and_deployment(str(path))
        with pool_workers(fault_stack.stack.api_url, store, tmp_path / "workers") as workers:
            await wait_for_workers(workers)
            since = datetime.now(UTC)
            clock = time.monotonic()
            cycle = asyncio.create_task(monitor_fleet(str(path), shards=SHARDS, return_state=True))
            run = await running_shard(since, victim)
            pid = int(str(run.infrastructure_pid).rsplit(":", 1)[-1])
            name = workers.holding(pid)
            assert name is not None, (run.infrastructure_pid, outputs(workers))
            # As a crash of the machine would: the worker's process group and the flow run's.
            group = os.getpgid(pid)
            os.killpg(workers.processes[name].pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
            workers.processes[name].wait(timeout=10)
            times["killed after"] = time.monotonic() - clock
            state = await asyncio.wait_for(cycle, timeout=MONITOR_TIMEOUT + 30)
            times["cycle 1"] = time.monotonic() - clock
            assert state.is_failed(), state
            message = state.message or ""
            assert f"shard {victim + 1} of {SHARDS} did not finish in time" in message, message
            assert f"shard {2 - victim} of {SHARDS}" not in message, message  # the other shard completed
            parent = state.state_details.flow_run_id
            assert parent is not None
            runs = await shard_runs(parent)
            assert runs[1 - victim].state is not None and runs[1 - victim].state.is_completed()
            # The parent asked the orphan to stop; no process is left to finish that, so it stays
            # Cancelling (Prefect 3.8.8 with no zombie guard; it never blocks a cycle: the shard
            # deployment has no concurrency limit).
            orphan = runs[victim].state
            print(f"\nthe killed shard's run after the parent: {orphan.name if orphan else None}")
            assert orphan is not None and orphan.type.value in {"CANCELLING", "CANCELLED", "CRASHED"}, orphan

            records, rows = await stored(store)
            survivors = by_shard[1 - victim]
            assert sorted(records) == sorted(survivors), "the killed shard committed nothing, the other all"
            assert sorted(r.agent_id for r in rows) == sorted(survivors)
            assert all(r.published_at is not None for r in rows), "the parent published the survivors' rows"
            first = {r.id for r in rows}

            # The next cycle, with a worker in the dead one's place.
            restarted = datetime.now(UTC)
            workers.start_one(name)
            await worker_back(name, restarted)
            clock = time.monotonic()
            state = await asyncio.wait_for(
                monitor_fleet(str(path), shards=SHARDS, return_state=True), timeout=MONITOR_TIMEOUT + 30
            )
            times["cycle 2"] = time.monotonic() - clock
            assert state.is_completed(), f"{state.message}\n{outputs(workers)}"
            # One cycle event, the second run's: the first did not check the whole fleet. The second
            # probed the killed shard's agents only (the others are not due for 10 minutes).
            second = f"prefect.flow-run.{state.state_details.flow_run_id}"

            def by(run: str, events: list[Any]) -> list[Any]:
                return [e for e in events if any(r.id == run for r in e.related)]

            cycles = await wait_for_events(MONITOR_CYCLE, since=since, until=lambda evs: bool(by(second, evs)))
            assert not by(f"prefect.flow-run.{parent}", cycles), "the first cycle did not check every agent"
            (event,) = by(second, cycles)
            assert event.payload["probed"] == len(by_shard[victim]), event.payload

    records, rows = await stored(store)
    assert sorted(records) == sorted(ids)
    assert sorted(r.agent_id for r in rows) == sorted(ids), "one transition each: the killed shard's now too"
    assert first <= {r.id for r in rows}, "the first cycle's rows are kept"
    assert all(r.published_at is not None for r in rows)
    print("timings:", ", ".join(f"{phase} {seconds:.1f}s" for phase, seconds in times.items()))


async def worker_back(name: str, since: datetime, timeout: float = 60.0) -> None:
    """The worker `name` has sent a heartbeat after `since` (a fresh process, not the dead one's record)."""
    from prefect.client.schemas.objects import WorkerStatus

    from deployments.definitions import WORK_POOL

    deadline = time.monotonic() + timeout
    while True:
        async with get_client() as client:
            workers = await client.read_workers_for_work_pool(WORK_POOL)
        if any(
            w.name == name
            and w.status == WorkerStatus.ONLINE
            and w.last_heartbeat_time is not None
            and w.last_heartbeat_time > since
            for w in workers
        ):
            return
        assert time.monotonic() < deadline, f"worker {name} not back within {timeout:g}s"
        await asyncio.sleep(0.5)


async def api_ready(api_url: str, timeout: float = 60.0) -> None:
    """The server answers /api/ready (its database is reachable) again."""
    import httpx

    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=api_url, timeout=5) as api:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if (await api.get("/ready")).status_code == 200:
                    return
            assert time.monotonic() < deadline, f"{api_url} not ready within {timeout:g}s"
            await asyncio.sleep(0.5)


async def committed(url: str, ids: list[str], timeout: float = 60.0) -> None:
    """Every agent of `ids` has a record in the store (both shards have committed)."""
    deadline = time.monotonic() + timeout
    while True:
        records, _ = await stored(url)
        if set(ids) <= set(records):
            return
        assert time.monotonic() < deadline, f"not committed within {timeout:g}s: {sorted(set(ids) - set(records))}"
        await asyncio.sleep(0.2)


async def fault_after_commit(
    stack: ScaleStack,
    store: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    cut: Callable[[], None],
    restore: Callable[[], None],
) -> dict[str, float]:
    """One sharded cycle whose Prefect server loses a service (`cut`, a SIGKILL) as soon as both shards
    have committed, before the parent publishes: the cycle ends within its bound and says it failed;
    every commit is kept. Then `restore`, and the next cycle (nothing due: it only publishes) publishes
    every transition of the first, once. Returns the phases' times."""
    from flows.monitor import monitor_fleet

    times: dict[str, float] = {}
    with stack.settings(), serve_in_thread(slow_delay=SLOW) as agents:
        path = tmp_path / "fleet.yaml"
        ids, _ = write_fleet(path, agents)
        await ensure_pool_and_deployment(str(path))
        with pool_workers(stack.api_url, store, tmp_path / "workers") as workers:
            await wait_for_workers(workers)
            since = datetime.now(UTC)
            clock = time.monotonic()
            cycle = asyncio.create_task(monitor_fleet(str(path), shards=SHARDS, return_state=True))
            await committed(store, ids)
            cut()
            times["cut after"] = time.monotonic() - clock
            outcome: Any
            try:
                outcome = await asyncio.wait_for(cycle, timeout=MONITOR_TIMEOUT + 30)
            except Exception as exc:  # the API could not even record the run's end: it raises here
                outcome = exc
            times["cycle 1"] = time.monotonic() - clock
            if isinstance(outcome, Exception):
                failure = f"{type(outcome).__name__}: {outcome}"
            else:
                assert outcome.is_failed(), outcome
                failure = outcome.message or ""
            print(f"\ncycle 1 with the fault: {failure[:300]}")
            # Said in the run's log even when the API could not record the run's end.
            said = [r.getMessage() for r in caplog.records if "the cycle is incomplete" in r.getMessage()]
            assert said and "publishing: " in said[0], said
            records, rows = await stored(store)
            assert sorted(records) == sorted(ids), "both shards' commits are kept"
            assert sorted(r.agent_id for r in rows) == sorted(ids)
            unpublished = sum(1 for r in rows if r.published_at is None)
            times["unpublished"] = unpublished
            assert unpublished > 0, "the fault came after the parent published: this test proves nothing"

            back = datetime.now(UTC)
            restore()
            await api_ready(stack.api_url)
            times["back after"] = time.monotonic() - clock
            for name, process in workers.processes.items():
                if process.poll() is not None:  # a worker gives up after enough failed polls
                    workers.start_one(name)
            for name in workers.names:
                await worker_back(name, back)
            clock = time.monotonic()
            state = await asyncio.wait_for(
                monitor_fleet(str(path), shards=SHARDS, return_state=True), timeout=MONITOR_TIMEOUT + 30
            )
            times["cycle 2"] = time.monotonic() - clock
            assert state.is_completed(), f"{state.message}\n{outputs(workers)}"

            # The server's event pipeline works again: each agent's event stored, once (the ids come
            # from the rows: what the first cycle posted before the fault is not doubled).
            resources = {f"agentwatch.agent.{i}" for i in ids}
            events = await wait_for_events(
                "agentwatch.agent.",
                sorted(resources),
                since=since,
                until=lambda evs: {e.resource.id for e in evs} >= resources,
            )
            assert sorted(e.resource.id for e in events) == sorted(resources), events
            parent = f"prefect.flow-run.{state.state_details.flow_run_id}"
            await wait_for_events(
                MONITOR_CYCLE, since=since, until=lambda evs: any(r.id == parent for e in evs for r in e.related)
            )

    after, rows = await stored(store)
    assert {k: r.version for k, r in after.items()} == {k: r.version for k, r in records.items()}, "nothing re-probed"
    assert sorted(r.agent_id for r in rows) == sorted(ids), "each transition once"
    assert all(r.published_at is not None for r in rows), "the next cycle published the outbox"
    return times


async def test_the_prefect_database_cut_mid_cycle_fails_the_cycle_in_time_and_the_next_publishes(
    fault_stack: FaultStack, store: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The Prefect server's PostgreSQL link dies (the TCP proxy in front of the cluster, SIGKILL; the
    cluster itself stays up for the state store and everyone else) after the shards commit."""

    def restore() -> None:
        fault_stack.proxy.start()

    times = await fault_after_commit(fault_stack.stack, store, tmp_path, caplog, fault_stack.proxy.kill, restore)
    print("timings:", ", ".join(f"{phase} {seconds:.1f}s" for phase, seconds in times.items()))


async def test_redis_killed_mid_cycle_fails_the_cycle_in_time_and_the_next_publishes(
    fault_stack: FaultStack, store: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The server's Redis (its event broker, lease and docket storage) dies (SIGKILL, no persistence:
    its streams are gone) after the shards commit; `scale-stack.sh start` brings it back. Last in the
    module: the stack is this module's own, and goes with it."""
    stack = fault_stack.stack

    def cut() -> None:
        stack.kill("redis")

    times = await fault_after_commit(stack, store, tmp_path, caplog, cut, stack.start_again)
    print("timings:", ", ".join(f"{phase} {seconds:.1f}s" for phase, seconds in times.items()))
