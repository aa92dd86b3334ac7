"""A sharded monitor cycle on real things, for any Prefect server and state store: the work pool
`agentwatch-pool` (type process), the `monitor-shard` deployment on it, `prefect worker start`
subprocesses (started and stopped by pid, in their own process groups), a fleet of HTTP agents on
127.0.0.1, and a parent `monitor-fleet` run with `shards=2` in this process.

`sharded_cycle_scenario` runs the cycle and checks everything a sharded cycle promises; the test
on the session server and SQLite (test_shards.py) and the one on the scale stack (PostgreSQL and
Redis) both call it with their server's URL and their store's URL."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import sqlalchemy as sa
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId
from prefect.client.schemas.objects import WorkerStatus
from prefect.exceptions import ObjectAlreadyExists
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.workers.process import ProcessWorker

from agentwatch.demo import fleet_registry, serve_in_thread
from agentwatch.events import FLEET_FIRST_SEEN, MONITOR_CYCLE
from agentwatch.models import AgentRecord
from agentwatch.shards import shard_of
from agentwatch.store import StateStore
from agentwatch.store.schema import transitions
from deployments.definitions import SHARD, WORK_POOL

from .prefect_reads import artifact_versions, read_events, wait_for_events
from .watchdog_support import ROOT, stop_group

PREFECT = str(Path(sys.executable).with_name("prefect"))
SHARDS = 2
LEFT = ("left-a", "left-c")  # stored, not in the registry: one in each shard, each forgotten by its own


@dataclass
class Workers:
    """`prefect worker start` processes on the pool, one flow run at a time each."""

    api_url: str
    database_url: str
    home: Path
    names: tuple[str, ...] = ("shard-worker-1", "shard-worker-2")
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(
            PREFECT_API_URL=self.api_url,
            PREFECT_HOME=str(self.home / "prefect-home"),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_WORKER_QUERY_SECONDS="1",
            DO_NOT_TRACK="1",
            AGENTWATCH_DATABASE_URL=self.database_url,
            # The flows are loaded from the deployment's entrypoint in the working directory (ROOT).
            PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
        )
        return env

    def log(self, name: str) -> Path:
        return self.home / f"{name}.log"

    def start(self) -> None:
        for name in self.names:
            self.start_one(name)

    def start_one(self, name: str) -> None:
        """Start the worker `name` (again: a worker that died is replaced; its log is appended to)."""
        self.home.mkdir(parents=True, exist_ok=True)
        command = [PREFECT, "worker", "start", "--pool", WORK_POOL, "--type", "process"]
        command += ["--name", name, "--limit", "1"]
        with self.log(name).open("ab") as out:
            self.processes[name] = subprocess.Popen(
                command, cwd=ROOT, env=self.env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def holding(self, pid: int) -> str | None:
        """The worker that started `pid` (a flow run's process: a descendant of the worker's)."""
        ours = {p.pid: name for name, p in self.processes.items()}
        while pid > 1 and pid not in ours:
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                return None
            pid = int(stat.rsplit(")", 1)[1].split()[1])  # the parent's pid, after "(comm) state"
        return ours.get(pid)

    def output(self, name: str) -> str:
        return self.log(name).read_text(errors="replace")

    def stop(self) -> None:
        for process in self.processes.values():
            stop_group(process, grace=15)


@contextmanager
def pool_workers(api_url: str, database_url: str, home: Path) -> Iterator[Workers]:
    workers = Workers(api_url, database_url, home)
    workers.start()
    try:
        yield workers
    finally:
        workers.stop()


async def ensure_pool_and_deployment(registry: str) -> None:
    """The process pool and the monitor-shard deployment on it, its runs in ROOT (idempotent)."""
    async with get_client() as client:
        try:
            template = ProcessWorker.get_default_base_job_template()
            await client.create_work_pool(WorkPoolCreate(name=WORK_POOL, type="process", base_job_template=template))
        except ObjectAlreadyExists:
            pass
    # Entrypoints are relative to the directory the deployment is built in: the project's.
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        deployment = await asyncio.to_thread(SHARD.runner, registry)
    finally:
        os.chdir(cwd)
    deployment.job_variables = {"working_dir": str(ROOT)}
    await deployment.aapply(work_pool_name=WORK_POOL)


async def wait_for_workers(workers: Workers, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        for name, process in workers.processes.items():
            assert process.poll() is None, f"{name} exited: {workers.output(name)[-3000:]}"
        async with get_client() as client:
            online = {
                w.name for w in await client.read_workers_for_work_pool(WORK_POOL) if w.status == WorkerStatus.ONLINE
            }
        if set(workers.names) <= online:
            return
        assert time.monotonic() < deadline, f"workers not online: {online}"
        await asyncio.sleep(0.5)


async def sharded_cycle_scenario(
    api_url: str, database_url: str, home: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, float]:
    """One sharded cycle over ~40 HTTP agents (some failing) on two workers, checked whole.
    Returns the time each phase took, for the test's report."""
    from flows.monitor import monitor_fleet

    times: dict[str, float] = {}
    clock = time.monotonic()
    monkeypatch.setenv("AGENTWATCH_DATABASE_URL", database_url)
    monkeypatch.setenv("AGENTWATCH_MONITOR_TIMEOUT", "180s")  # the parent waits at most 90 s for its shards
    with temporary_settings(updates={PREFECT_API_URL: api_url}), serve_in_thread(slow_delay=1.0) as agents:
        names = [f"ok-{i}" for i in range(32)] + [f"slow-{i}" for i in range(3)] + [f"fail-{i}" for i in range(3)]
        registry = fleet_registry(agents, names, dead=2, timeout="3s")
        ids = [a["id"] for a in registry["agents"]]
        path = home / "fleet.yaml"
        home.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(registry))
        assert {shard_of(i, SHARDS) for i in LEFT} == {0, 1}
        async with StateStore(database_url) as store:  # agents that left the registry since the last cycle
            await store.commit([(AgentRecord(i), None) for i in LEFT])

        await ensure_pool_and_deployment(str(path))
        with pool_workers(api_url, database_url, home / "workers") as workers:
            await wait_for_workers(workers)
            times["workers online"] = time.monotonic() - clock
            started = datetime.now(UTC)
            clock = time.monotonic()
            state = await monitor_fleet(str(path), shards=SHARDS, return_state=True)
            times["sharded cycle"] = time.monotonic() - clock
            assert state.is_completed(), f"{state.message}\n" + "\n".join(
                workers.output(n)[-3000:] for n in workers.names
            )
            rows = await state.aresult()
            parent = state.state_details.flow_run_id
            assert parent is not None
            logs = {name: workers.output(name) for name in workers.names}

        clock = time.monotonic()
        shard_runs = await _check_shard_runs(parent, logs)
        await _check_store(database_url, ids, shard_runs)
        await _check_prefect(parent, rows, ids, started)
        times["checks"] = time.monotonic() - clock
    return times


async def _check_shard_runs(parent: UUID, logs: dict[str, str]) -> dict[int, UUID]:
    """Both shard runs completed, on the pool, each on another worker."""
    async with get_client() as client:
        runs = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent]))
        )
    assert sorted(r.parameters["shard"] for r in runs) == list(range(SHARDS)), runs
    for run in runs:
        assert run.state is not None and run.state.is_completed(), (run.name, run.state)
        assert run.work_pool_name == WORK_POOL
        assert run.parameters["shards"] == SHARDS
        assert str(run.parameters["registry_path"]).startswith("block:agentwatch-registry-")
        assert run.infrastructure_pid, run.name
    # Each run was submitted by exactly one worker, and each worker ran one: two processes, two shards.
    # Both workers may start submitting a run; the server lets one through and the other aborts.
    takers = {run.id: [name for name, text in logs.items() if _submitted(text, str(run.id))] for run in runs}
    assert sorted(len(t) for t in takers.values()) == [1] * SHARDS, takers
    assert len({t[0] for t in takers.values()}) == SHARDS, takers
    assert len({run.infrastructure_pid for run in runs}) == SHARDS
    return {int(run.parameters["shard"]): run.id for run in runs}


async def _check_store(database_url: str, ids: list[str], shard_runs: dict[int, UUID]) -> None:
    """Each agent's record committed once, by the run of its own shard; its transition published once;
    the agents that left forgotten (each by its own shard)."""
    async with StateStore(database_url) as store:
        records = await store.load()
        query = sa.select(transitions.c.agent_id, transitions.c.run_id, transitions.c.published_at)
        logged = await store._run(lambda conn: conn.execute(query).all())
        counts = await store.outbox_counts()
    assert sorted(records) == sorted(ids), sorted(set(records) ^ set(ids))
    assert {r.agent_id: r.version for r in records.values()} == dict.fromkeys(ids, 1)
    assert Counter(row.agent_id for row in logged) == Counter(ids)  # one transition each, LEFT had none
    assert all(row.run_id == str(shard_runs[shard_of(row.agent_id, SHARDS)]) for row in logged), logged
    assert all(row.published_at is not None for row in logged)
    assert counts.unpublished == 0, counts


async def _check_prefect(parent: UUID, rows: list[dict[str, Any]], ids: list[str], since: datetime) -> None:
    """What the parent published, once for the whole fleet: one event per transition that needs one
    (first sights of the healthy agents folded into one), the fleet table, one cycle event."""
    assert sorted(r["id"] for r in rows) == sorted(ids)
    down = sorted(i for i in ids if i.startswith(("fail-", "down-")))
    assert {r["id"] for r in rows if r["state"] == "degraded"} == set(down)
    assert all(r["state"] == "healthy" for r in rows if r["id"] not in down)
    related = f"prefect.flow-run.{parent}"

    def by_parent(events: list[Any]) -> list[Any]:
        return [e for e in events if any(r.id == related for r in e.related)]

    resources = [f"agentwatch.agent.{i}" for i in down]
    agent_events = await wait_for_events(
        "agentwatch.agent.", resources, since=since, until=lambda evs: len(by_parent(evs)) >= len(down)
    )
    assert sorted(e.resource.id for e in by_parent(agent_events)) == sorted(resources)
    first_seen = by_parent(await read_events(FLEET_FIRST_SEEN, since=since))
    assert len(first_seen) == 1 and first_seen[0].payload["count"] == len(ids) - len(down), first_seen
    for agent_id in down:
        versions = [v for v in await artifact_versions(f"agent-{agent_id}") if v.flow_run_id == parent]
        assert len(versions) == 1, agent_id
    tables = [t for t in await artifact_versions("agentwatch-fleet") if t.flow_run_id == parent]
    assert len(tables) == 1
    assert sorted(row["id"] for row in _table(tables[0].data)) == sorted(ids)
    cycles = await wait_for_events(MONITOR_CYCLE, since=since, until=lambda evs: bool(by_parent(evs)))
    (cycle,) = by_parent(cycles)
    assert cycle.payload["agents"] == len(ids)
    assert cycle.payload["probed"] == len(ids)
    assert cycle.payload["transitions"] == len(ids)
    assert cycle.payload["shards"] == SHARDS


def _table(data: Any) -> list[dict[str, Any]]:
    import json

    return json.loads(data) if isinstance(data, str) else list(data)


def _submitted(log: str, run_id: str) -> bool:
    """The worker whose log this is submitted the run (Prefect's worker log lines), and kept it."""
    return f"submitting flow run '{run_id}'" in log and f"Aborted submission of flow run '{run_id}'" not in log
