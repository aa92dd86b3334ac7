"""The monitor flow against a real Prefect test server, real HTTP agents on 127.0.0.1 and a real
SQLite state store: transitions become events and keyed artifact versions, and two overlapping
runs never record one transition twice (on SQLite and on PostgreSQL)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import yaml

from agentwatch.demo import AgentServer, fleet_registry, serve_in_thread
from agentwatch.models import AgentState
from agentwatch.settings import get_settings
from agentwatch.store import StateStore
from flows.monitor import monitor_fleet

from .prefect_reads import artifact_versions, read_events, wait_for_events

pytestmark = pytest.mark.integration


@pytest.fixture
def agents() -> Iterator[AgentServer]:
    with serve_in_thread(slow_delay=0.5) as server:
        yield server


async def monitor_run(registry: str) -> tuple[dict[str, dict[str, Any]], UUID]:
    """One monitor run: its rows by agent id, and its flow run id."""
    state = await monitor_fleet(registry, return_state=True)
    rows = await state.aresult()
    return {row["id"]: row for row in rows}, state.state_details.flow_run_id


def write_registry(path: Path, registry: dict) -> str:
    path.write_text(yaml.safe_dump(registry))
    return str(path)


async def test_transitions_become_events_and_artifacts(
    prefect_server: str, state_db: str, agents: AgentServer, tmp_path: Path
) -> None:
    registry = write_registry(
        tmp_path / "fleet.yaml",
        fleet_registry(agents, ["ok-web", "fail-api"], dead=1, failure_threshold=2, timeout="1s"),
    )
    started = datetime.now(UTC)

    first, first_run = await monitor_run(registry)
    assert first["ok-web"]["state"] == "healthy"
    assert first["fail-api"]["state"] == "degraded"
    assert first["down-0"]["state"] == "degraded"
    assert "connection refused" in first["down-0"]["reason"]

    second, second_run = await monitor_run(registry)
    assert second["ok-web"]["state"] == "healthy"
    assert second["down-0"]["state"] == "unhealthy"
    assert second["down-0"]["reason"].startswith(
        "unhealthy after 2 consecutive failed health checks: connection refused"
    )
    assert second["fail-api"]["reason"].startswith("unhealthy after 2 consecutive failed health checks: HTTP 500")

    # The store holds exactly the transitions that happened: no more, no less.
    async with StateStore(get_settings().resolved_database_url()) as store:
        history = await store.history("down-0")
    assert [(t.from_state, t.to_state) for t in reversed(history)] == [
        (AgentState.UNKNOWN, AgentState.DEGRADED),
        (AgentState.DEGRADED, AgentState.UNHEALTHY),
    ]

    # The events, read back through the Prefect client.
    resource = "agentwatch.agent.down-0"
    events = await wait_for_events("agentwatch.agent.", [resource], since=started, until=lambda evs: len(evs) >= 2)
    assert [e.event for e in events] == ["agentwatch.agent.degraded", "agentwatch.agent.unhealthy"]
    down = events[-1]
    assert down.resource.id == resource
    assert down.resource.get("agentwatch.label.kind") == "down"
    assert down.payload["from"] == "degraded"
    assert down.payload["to"] == "unhealthy"
    assert down.payload["failures"] == 2
    assert "unhealthy after 2 consecutive failed health checks" in down.payload["reason"]
    assert datetime.fromisoformat(down.payload["since"]) >= started
    # The healthy agent changed state once (unknown -> healthy) and only once.
    healthy = await read_events("agentwatch.agent.", ["agentwatch.agent.ok-web"], since=started)
    assert [e.event for e in healthy] == ["agentwatch.agent.healthy"]

    # Artifacts are read back by the runs that wrote them: other tests write these keys too.
    runs = {first_run, second_run}

    async def ours(key: str) -> list[Any]:
        return [v for v in await artifact_versions(key) if v.flow_run_id in runs]

    # The keyed artifact: one version per transition, the newest says what changed and why.
    versions = await ours("agent-down-0")
    assert len(versions) == 2
    assert "degraded → unhealthy" in versions[-1].data
    assert "unhealthy after 2 consecutive failed health checks" in versions[-1].data
    assert len(await ours("agent-ok-web")) == 1

    # One fleet table per run.
    tables = await ours("agentwatch-fleet")
    assert sorted(str(t.flow_run_id) for t in tables) == sorted(str(r) for r in runs)


def test_overlapping_runs_record_no_duplicate_transition(prefect_server: str, store_url: str, tmp_path: Path) -> None:
    # Two monitor processes at once, as two workers would run them, on one store (a SQLite file,
    # or a PostgreSQL database as workers on several machines share). Slow agents keep both runs
    # probing after both have read the store and before either commits.
    state_db = store_url
    started = datetime.now(UTC)
    with serve_in_thread(slow_delay=4.0) as agents:
        names = [f"slow-{i}" for i in range(5)]
        registry = write_registry(tmp_path / "fleet.yaml", fleet_registry(agents, names, dead=2, timeout="8s"))
        env = {**os.environ, "PREFECT_API_URL": prefect_server, "AGENTWATCH_DATABASE_URL": state_db}
        code = "import asyncio, sys; from flows.monitor import monitor_fleet; asyncio.run(monitor_fleet(sys.argv[1]))"
        procs = [
            subprocess.Popen([sys.executable, "-c", code, registry], env=env, stderr=subprocess.PIPE, text=True)
            for _ in range(2)
        ]
        try:
            logs = [p.communicate(timeout=120)[1] for p in procs]
        finally:
            for p in procs:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0], logs
    # Both runs probed every agent; the loser of the race says so instead of recording twice.
    assert all("Probing 7 of 7 agents" in log for log in logs), logs
    assert sum("updated by an overlapping run" in log for log in logs) == 1, logs

    async def read_store() -> tuple[list, dict]:
        async with StateStore(state_db) as store:
            return await store.history(limit=1000), await store.load()

    history, records = asyncio.run(read_store())
    keys = [(t.agent_id, t.from_state, t.to_state) for t in history]
    assert len(keys) == len(set(keys)) == 7, keys
    assert {r.version for r in records.values()} == {1}

    events = asyncio.run(
        wait_for_events(
            "agentwatch.agent.",
            [f"agentwatch.agent.{n}" for n in [*names, "down-0", "down-1"]],
            since=started,
            until=lambda evs: len(evs) >= 7,
            timeout=20,
        )
    )
    assert len(events) == 7
