"""Beats in the state store, SQLite and PostgreSQL (merged like Beat.merged, apart from the monitor's records) and
the operator actions on top of it: pause, resume, status."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio

from agentwatch.beats import Beat, PingKind
from agentwatch.errors import UnknownAgent
from agentwatch.maintenance import parse_until, require_agent, set_paused, set_resumed
from agentwatch.models import AgentState
from agentwatch.policy import new_record
from agentwatch.registry import parse_registry
from agentwatch.status import read_status
from agentwatch.store import StateStore

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest_asyncio.fixture(loop_scope="function")  # the test's loop: asyncpg's connections belong to one
async def store(store_url: str) -> AsyncIterator[StateStore]:
    async with StateStore(store_url) as s:
        yield s


async def test_windows_merge_like_single_pings(store: StateStore) -> None:
    pings = [
        Beat.ping("a", PingKind.BEAT, at(0)),
        Beat.ping("a", PingKind.START, at(1)),
        Beat.ping("a", PingKind.FAIL, at(2), 4),
        Beat.ping("a", PingKind.START, at(3)),
        Beat.ping("b", PingKind.FAIL, at(3)),
    ]
    await store.record_beats(pings[:2])
    await store.record_beats(pings[2:])  # and one write of duplicates, merged before the upsert
    await store.record_beats([Beat.ping("c", PingKind.BEAT, at(0)), Beat.ping("c", PingKind.BEAT, at(9), 0)])
    beats = await store.load_beats()
    expected_a = pings[0]
    for p in pings[1:4]:
        expected_a = expected_a.merged(p)
    a = beats["a"]
    assert (a.last_beat_at, a.last_start_at, a.last_fail_at, a.last_exit_code, a.beats) == (
        expected_a.last_beat_at,
        expected_a.last_start_at,
        expected_a.last_fail_at,
        4,
        4,
    )
    assert a.failing  # the start after the failure does not clear it; only a beat does
    assert beats["b"].failing and beats["b"].last_exit_code is None
    assert beats["c"].beats == 2 and beats["c"].last_beat_at == at(9) and beats["c"].last_exit_code == 0
    await store.record_beats([Beat.ping("a", PingKind.BEAT, at(10))])
    a = (await store.load_beats(["a"]))["a"]
    assert not a.failing and a.last_exit_code == 4  # a plain beat keeps the last exit code


async def test_beats_and_records_are_separate(store: StateStore) -> None:
    await store.commit([(new_record("a", at(0)), None)])
    await store.record_beats([Beat.ping("a", PingKind.BEAT, at(1))])
    assert (await store.load())["a"].version == 1  # a beat never bumps the monitor's CAS version
    await store.record_beats([Beat.ping("gone", PingKind.BEAT, at(1))])
    assert await store.drop_missing_beats(["a"]) == ["gone"]
    assert set(await store.load_beats()) == {"a"}
    assert await store.record_beats([]) == 0


REGISTRY = parse_registry(
    """
agents:
  - {id: batch-1, probe: {heartbeat: {timeout: 30s, max_missed: 3}}}
  - {id: web-1, probe: {http: {url: "http://127.0.0.1:9/"}}}
"""
)


async def test_pause_resume_and_status(store: StateStore) -> None:
    await store.record_beats([Beat.ping("batch-1", PingKind.BEAT, at(0))])
    paused = await set_paused(store, "web-1", at(10), until=at(3600), reason="deploying")
    assert [(t.from_state, t.to_state, t.reason) for t in paused.transitions] == [
        (AgentState.UNKNOWN, AgentState.PAUSED, "deploying")
    ]
    again = await set_paused(store, "web-1", at(11), sticky=True)  # replaces until and sticky; same state
    assert again.transitions == [] and again.saved[0].sticky and again.saved[0].paused_until is None
    await set_paused(store, "batch-1", at(20), sticky=True)
    rows = {r["id"]: r for r in await read_status(store, REGISTRY, at(95))}
    batch = rows["batch-1"]
    assert (batch["state"], batch["paused"], batch["sticky"], batch["missed"]) == ("paused", True, True, None)
    assert batch["seconds_since"] == 95.0 and batch["last_beat"] == "2025-03-01T12:00:00+00:00"
    assert rows["web-1"]["last_beat"] is None and rows["web-1"]["missed"] is None

    resumed = await set_resumed(store, "batch-1", at(100))
    assert [(t.from_state, t.to_state) for t in resumed.transitions] == [(AgentState.PAUSED, AgentState.UNKNOWN)]
    assert (await set_resumed(store, "batch-1", at(101))).saved == []  # not paused: nothing to write
    rows = {r["id"]: r for r in await read_status(store, REGISTRY, at(129))}
    assert rows["batch-1"]["missed"] == 0  # resume reset the timer: the old beat does not count
    rows = {r["id"]: r for r in await read_status(store, REGISTRY, at(131))}
    assert rows["batch-1"]["missed"] == 1


def test_unknown_agents_and_until() -> None:
    with pytest.raises(UnknownAgent, match=r"no agent 'nope' in fleet.yaml \(known: batch-1, web-1\)"):
        require_agent(REGISTRY, "nope", "fleet.yaml")
    assert parse_until("2h", at(0)) == at(7200)
    assert parse_until("2025-03-01T13:00", at(0)) == at(3600)
    assert parse_until("2025-03-01T14:00+01:00", at(0)) == at(3600)
    with pytest.raises(ValueError, match="in the past"):
        parse_until("2025-03-01T11:00", at(0))
    with pytest.raises(ValueError, match="not a time or a duration"):
        parse_until("tomorrow", at(0))
