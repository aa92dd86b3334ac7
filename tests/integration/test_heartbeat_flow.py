"""Heartbeat agents through the monitor flow: a real Prefect test server, a real heartbeat server
(uvicorn on 127.0.0.1) with the real client, a real SQLite store. Beats whose age matters are
written into the store with explicit timestamps, so nothing sleeps for a timeout."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from agentwatch.beats import Beat, PingKind
from agentwatch.heartbeat.client import HeartbeatClient
from agentwatch.heartbeat.server import ServerConfig
from agentwatch.models import AgentState
from agentwatch.policy import new_record
from agentwatch.registry import load_registry
from agentwatch.store import StateStore
from flows.monitor import monitor_fleet
from flows.operator import fleet_status, pause_agent, resume_agent

from .heartbeat_support import RunningServer, running_server
from .prefect_reads import read_events, wait_for_events

pytestmark = pytest.mark.integration

# 10 s: wide enough that a slow flow run never adds a missed beat; no test waits for it.
HEARTBEAT = {"heartbeat": {"timeout": "10s", "max_missed": 3}}
# Each test has agents of its own, so one test's events never show up in another's reads.
AGENTS = {
    "test_missed_beats_warn_then_time_out_and_a_beat_brings_it_back": ["hb-life", "hb-job", "hb-new"],
    "test_pause_sticky_pause_and_resume": ["hb-plain", "hb-sticky"],
}


@pytest.fixture
def registry_path(tmp_path: Path, request: pytest.FixtureRequest) -> str:
    path = tmp_path / "fleet.yaml"
    agents = AGENTS[request.node.originalname]
    path.write_text(yaml.safe_dump({"agents": [{"id": a, "probe": HEARTBEAT} for a in agents]}))
    return str(path)


@pytest.fixture
def server(registry_path: str, state_db: str) -> Iterator[RunningServer]:
    with running_server(
        load_registry(registry_path), state_db, config=ServerConfig(rate=0, flush_interval=0.05)
    ) as srv:
        yield srv


async def beat_now(server: RunningServer, state_db: str, *agents: str, signal: str = "") -> None:
    """Real pings through the real client, then wait until the server has flushed them."""
    async with StateStore(state_db) as store:
        before = {a: b.beats for a, b in (await store.load_beats(agents)).items()}
        for agent in agents:
            client = HeartbeatClient(server.url, agent)
            assert await (client.beat() if not signal else client.finish(int(signal)))
            await client.aclose()
        for _ in range(500):
            beats = await store.load_beats(agents)
            if all(a in beats and beats[a].beats > before.get(a, 0) for a in agents):
                return
            await asyncio.sleep(0.02)
    raise AssertionError("beats were not flushed")


async def beat_at(state_db: str, agent: str, seconds_ago: float) -> None:
    """Set an agent's last beat back in time (the newer write wins in the store)."""
    when = datetime.now(UTC) - timedelta(seconds=seconds_ago)
    async with StateStore(state_db) as store:
        await store.record_beats([Beat.ping(agent, PingKind.BEAT, when)])


async def known_since(state_db: str, seconds_ago: float, *agents: str) -> None:
    """Records as if the monitor had first seen these agents a while ago (the missed-beat clock
    runs from the later of the last beat and first sight)."""
    first_seen = datetime.now(UTC) - timedelta(seconds=seconds_ago)
    async with StateStore(state_db) as store:
        await store.commit([(new_record(a, first_seen), None) for a in agents])


async def cycle(registry_path: str) -> dict[str, dict]:
    return {row["id"]: row for row in await monitor_fleet(registry_path)}


async def history(state_db: str, agent: str) -> list[tuple[AgentState, AgentState]]:
    async with StateStore(state_db) as store:
        return [(t.from_state, t.to_state) for t in reversed(await store.history(agent))]


async def test_missed_beats_warn_then_time_out_and_a_beat_brings_it_back(
    prefect_server: str, state_db: str, registry_path: str, server: RunningServer
) -> None:
    started = datetime.now(UTC)
    await known_since(state_db, 100, "hb-life", "hb-job")
    await beat_now(server, state_db, "hb-life", "hb-job")
    rows = await cycle(registry_path)
    assert rows["hb-life"]["state"] == "healthy" and rows["hb-job"]["state"] == "healthy"
    assert rows["hb-new"]["state"] == "starting"  # never beat: one timeout before its first miss

    await beat_at(state_db, "hb-life", 12)  # one missed beat
    await beat_now(server, state_db, "hb-job", signal="2")  # a job reports exit code 2
    rows = await cycle(registry_path)
    assert rows["hb-life"]["state"] == "degraded"
    assert rows["hb-life"]["reason"].startswith("late: 1 missed beat (last beat 1")
    assert rows["hb-job"]["state"] == "degraded"  # at once, not after a timeout
    assert rows["hb-job"]["reason"] == "failed 1 of 3 consecutive health checks: job reported failure (exit code 2)"

    await beat_at(state_db, "hb-life", 35)  # max_missed missed beats
    rows = await cycle(registry_path)
    assert rows["hb-life"]["state"] == "unhealthy"
    assert rows["hb-life"]["reason"].startswith("no beat for 3") and "3 missed beats" in rows["hb-life"]["reason"]

    await beat_now(server, state_db, "hb-life")
    await beat_now(server, state_db, "hb-job", signal="0")
    rows = await cycle(registry_path)
    assert rows["hb-life"]["state"] == "healthy" and rows["hb-job"]["state"] == "healthy"
    assert await history(state_db, "hb-life") == [
        (AgentState.UNKNOWN, AgentState.HEALTHY),
        (AgentState.HEALTHY, AgentState.DEGRADED),
        (AgentState.DEGRADED, AgentState.UNHEALTHY),
        (AgentState.UNHEALTHY, AgentState.HEALTHY),
    ]

    resource = "agentwatch.agent.hb-life"
    events = await wait_for_events(
        "agentwatch.agent.", [resource], since=started, until=lambda evs: len(evs) >= 5, timeout=30
    )
    names = [e.event for e in events]
    assert sorted(names) == sorted(
        [
            "agentwatch.agent.healthy",
            "agentwatch.agent.degraded",
            "agentwatch.agent.late",  # one warning, with the first missed beat
            "agentwatch.agent.unhealthy",
            "agentwatch.agent.healthy",
        ]
    )
    late = next(e for e in events if e.event == "agentwatch.agent.late")
    assert late.payload["missed"] == 1 and late.payload["agent"] == "hb-life"
    assert late.payload["reason"].startswith("late: 1 missed beat")
    # A reported failure is a failed check, not a missed beat: no late warning for the job.
    job_events = await read_events("agentwatch.agent.late", ["agentwatch.agent.hb-job"], since=started)
    assert job_events == []


async def test_pause_sticky_pause_and_resume(
    prefect_server: str, state_db: str, registry_path: str, server: RunningServer
) -> None:
    started = datetime.now(UTC)
    await beat_now(server, state_db, "hb-plain", "hb-sticky")
    rows = await cycle(registry_path)
    assert rows["hb-plain"]["state"] == rows["hb-sticky"]["state"] == "healthy"

    row = await pause_agent("hb-plain", registry_path=registry_path, reason="maintenance")
    assert (row["state"], row["paused"], row["sticky"], row["reason"]) == ("paused", True, False, "maintenance")
    row = await pause_agent("hb-sticky", sticky=True, registry_path=registry_path)
    assert (row["state"], row["sticky"]) == ("paused", True)

    # Paused agents are not alerted: beats far past max_missed change nothing.
    await beat_at(state_db, "hb-plain", 60)
    await beat_at(state_db, "hb-sticky", 60)
    rows = await cycle(registry_path)
    assert rows["hb-plain"]["state"] == rows["hb-sticky"]["state"] == "paused"

    # A beat wakes a plain pause (healthchecks semantics); a sticky pause ignores it.
    await beat_now(server, state_db, "hb-plain", "hb-sticky")
    rows = await cycle(registry_path)
    assert rows["hb-plain"]["state"] == "healthy"
    assert rows["hb-sticky"]["state"] == "paused"

    # Resume resets the timer: a last beat a minute old is not a missed beat yet.
    row = await resume_agent("hb-sticky", registry_path=registry_path)
    assert (row["state"], row["paused"], row["missed"]) == ("unknown", False, 0)
    await beat_at(state_db, "hb-sticky", 60)
    rows = await cycle(registry_path)
    assert rows["hb-sticky"]["state"] == "healthy" and rows["hb-sticky"]["reason"].startswith("last beat 6")

    assert await history(state_db, "hb-plain") == [
        (AgentState.UNKNOWN, AgentState.HEALTHY),
        (AgentState.HEALTHY, AgentState.PAUSED),
        (AgentState.PAUSED, AgentState.UNKNOWN),  # "resumed by a beat at ..."
        (AgentState.UNKNOWN, AgentState.HEALTHY),
    ]
    assert await history(state_db, "hb-sticky") == [
        (AgentState.UNKNOWN, AgentState.HEALTHY),
        (AgentState.HEALTHY, AgentState.PAUSED),
        (AgentState.PAUSED, AgentState.UNKNOWN),
        (AgentState.UNKNOWN, AgentState.HEALTHY),
    ]
    resources = ["agentwatch.agent.hb-plain", "agentwatch.agent.hb-sticky"]
    events = await wait_for_events(
        "agentwatch.agent.", resources, since=started, until=lambda evs: len(evs) >= 8, timeout=30
    )
    names = {e.event for e in events}
    assert "agentwatch.agent.paused" in names
    assert not names & {"agentwatch.agent.late", "agentwatch.agent.degraded", "agentwatch.agent.unhealthy"}

    status = {r["id"]: r for r in await fleet_status(registry_path)}
    assert status["hb-plain"]["missed"] == 0 and status["hb-plain"]["seconds_since"] is not None
