"""The transition log as an outbox: rows are born unpublished, claimed with compare-and-swap under a
lease, marked by their holder only, and given back when a publish fails; what publishing a batch
means (events with ids derived from rows, artifact versions, first sights folded); an older store
brought up to the outbox; the guard against forgetting most of the fleet at once."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio
import sqlalchemy as sa

from agentwatch.cycle import departed
from agentwatch.events import FLEET_FIRST_SEEN, derived_event_id
from agentwatch.models import AgentRecord, AgentState, Transition
from agentwatch.outbox import OutboxRow, plan_publish
from agentwatch.registry import parse_registry
from agentwatch.render import fleet_table
from agentwatch.store import StateStore
from agentwatch.store.schema import transitions

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LEASE = timedelta(minutes=2)
U, H, D, X = AgentState.UNKNOWN, AgentState.HEALTHY, AgentState.DEGRADED, AgentState.UNHEALTHY


@pytest_asyncio.fixture(loop_scope="function")
async def store(store_url: str) -> AsyncIterator[StateStore]:
    """A fresh store, SQLite or PostgreSQL (tests/conftest.py)."""
    s = StateStore(store_url)
    yield s
    await s.close()


async def commit(store: StateStore, *moves: tuple[str, AgentState, AgentState]) -> None:
    """One commit of new records, each with its transition (agents seen for the first time)."""
    changes = [
        (AgentRecord(agent, state=new, since=T0), Transition(agent, old, new, f"{old} -> {new}", 0, T0))
        for agent, old, new in moves
    ]
    result = await store.commit(changes, run_id="run-1")
    assert not result.conflicts


async def test_a_committed_transition_is_born_unpublished(store: StateStore) -> None:
    await commit(store, ("a", U, D), ("b", U, H))
    counts = await store.outbox_counts()
    assert (counts.unpublished, counts.unalerted) == (2, 2)
    rows = await store.claim_unpublished("p1", now=T0, lease=LEASE, max_costly=10)
    assert [r.agent_id for r in rows] == ["a", "b"]
    assert len({r.uid for r in rows}) == 2 and all(len(r.uid) == 36 for r in rows)
    assert all(r.attempts == 1 and r.published_at is None for r in rows)


async def test_a_claim_is_exclusive_until_its_lease_runs_out(store: StateStore) -> None:
    await commit(store, ("a", U, D), ("b", U, X))
    first = await store.claim_unpublished("p1", now=T0, lease=LEASE, max_costly=10)
    assert len(first) == 2
    # Another publisher, meanwhile: nothing for it.
    assert await store.claim_unpublished("p2", now=T0 + timedelta(seconds=30), lease=LEASE, max_costly=10) == []
    # p1 died holding them: after the lease they are taken again, and the retry is visible.
    again = await store.claim_unpublished("p2", now=T0 + LEASE + timedelta(seconds=1), lease=LEASE, max_costly=10)
    assert [(r.agent_id, r.attempts) for r in again] == [("a", 2), ("b", 2)]
    # The old holder can no longer mark them: only the holder's marks count.
    assert await store.mark_published("p1", [r.id for r in first], T0) == 0
    assert await store.mark_published("p2", [again[0].id], T0) == 1
    counts = await store.outbox_counts()
    assert counts.unpublished == 1


async def test_released_rows_are_taken_at_once_and_published_rows_never_again(store: StateStore) -> None:
    await commit(store, ("a", U, D), ("b", U, X))
    rows = await store.claim_unpublished("p1", now=T0, lease=LEASE, max_costly=10)
    await store.mark_published("p1", [rows[0].id], T0)
    assert await store.release_claims("p1", [rows[1].id]) == 1
    retry = await store.claim_unpublished("p2", now=T0 + timedelta(seconds=1), lease=LEASE, max_costly=10)
    assert [r.agent_id for r in retry] == ["b"]


async def test_a_claim_is_bounded_by_costly_rows_in_log_order(store: StateStore) -> None:
    # 3 first sights of healthy agents (cheap: folded), then 3 that each need an event and artifact.
    await commit(store, ("h1", U, H), ("h2", U, H), ("d1", U, D), ("h3", U, H), ("d2", U, D), ("d3", U, D))
    rows = await store.claim_unpublished("p1", now=T0, lease=LEASE, max_costly=2)
    assert [r.agent_id for r in rows] == ["h1", "h2", "d1", "h3", "d2"]
    rest = await store.claim_unpublished("p2", now=T0, lease=LEASE, max_costly=2)
    assert [r.agent_id for r in rest] == ["d3"]


async def test_unalerted_rows_are_the_published_ones_until_marked(store: StateStore) -> None:
    await commit(store, ("a", U, D), ("b", U, X))
    rows = await store.claim_unpublished("p1", now=T0, lease=LEASE, max_costly=10)
    assert await store.unalerted() == []  # not published yet: not alerted on yet
    await store.mark_published("p1", [r.id for r in rows], T0)
    assert [r.agent_id for r in await store.unalerted()] == ["a", "b"]
    await store.save_incidents([], alerted=[rows[0].id], now=T0)
    assert [r.agent_id for r in await store.unalerted()] == ["b"]
    await store.mark_alerted([rows[1].id], T0)
    assert await store.unalerted() == []
    assert (await store.outbox_counts()).unalerted == 0


async def test_a_store_of_the_previous_release_is_brought_up_to_the_outbox(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:  # the transitions table as the first release created it
        conn.execute(
            "CREATE TABLE transitions (id INTEGER PRIMARY KEY, agent_id VARCHAR(63) NOT NULL, seq INTEGER NOT NULL,"
            " from_state VARCHAR(16) NOT NULL, to_state VARCHAR(16) NOT NULL, reason TEXT NOT NULL,"
            " failures INTEGER NOT NULL, at DATETIME NOT NULL, run_id VARCHAR(64))"
        )
        conn.execute(
            "INSERT INTO transitions (agent_id, seq, from_state, to_state, reason, failures, at)"
            " VALUES ('old', 1, 'unknown', 'unhealthy', 'down', 3, '2026-01-01 00:00:00')"
        )
    async with StateStore(f"sqlite:///{path}") as store:
        # Published by the release that wrote it: not published again, not alerted again.
        assert await store.claim_unpublished("p1", now=T0, lease=LEASE, max_costly=10) == []
        assert await store.unalerted() == []
        await commit(store, ("new", U, D))
        rows = await store.claim_unpublished("p1", now=T0, lease=LEASE, max_costly=10)
        assert [r.agent_id for r in rows] == ["new"]
        names = await store._run(lambda c: {i["name"] for i in sa.inspect(c).get_indexes("transitions")})
        assert {"ix_transitions_published_at", "ix_transitions_alerted_at"} <= names
        old = await store._run(lambda c: c.execute(sa.select(transitions).where(transitions.c.agent_id == "old")).one())
        assert old.published_at is not None and old.alerted_at is not None


def row(i: int, agent: str, old: AgentState, new: AgentState, attempts: int = 1) -> OutboxRow:
    return OutboxRow(
        i, f"00000000-0000-4000-8000-{i:012d}", 1, Transition(agent, old, new, "why", 0, T0), "r", attempts
    )


FLEET = parse_registry(
    "agents:\n"
    + "".join(f"  - {{id: {a}, labels: {{team: t}}, probe: {{tcp: {{host: 127.0.0.1, port: 9}}}}}}\n" for a in "abcde")
)


def test_each_row_is_an_event_with_an_id_derived_from_it_and_an_artifact_version() -> None:
    rows = [row(1, "a", U, D), row(2, "a", D, X), row(3, "b", U, H)]
    plan = plan_publish(rows, FLEET, "http://ui/run", fold_above=20)
    assert [e.event for e in plan.events] == [
        "agentwatch.agent.degraded",
        "agentwatch.agent.unhealthy",
        "agentwatch.agent.healthy",
    ]
    assert [e.id for e in plan.events] == [derived_event_id(r.uid) for r in rows]
    assert plan.events[0].resource["agentwatch.label.team"] == "t"
    assert plan.events[1].payload["transition"] == rows[1].uid
    assert [a.key for a in plan.artifacts] == ["agent-a", "agent-a", "agent-b"]
    assert all(a.marker in a.description for a in plan.artifacts)
    assert plan.folded == []
    # The same rows, planned again (a retry): the same ids, so the server keeps each event once.
    assert [e.id for e in plan_publish(rows, FLEET, None).events] == [e.id for e in plan.events]


def test_many_first_sights_of_healthy_agents_are_one_fleet_event() -> None:
    rows = [row(i, f"agent-{i}", U, H) for i in range(1, 61)] + [row(61, "a", U, X)]
    plan = plan_publish(rows, FLEET, None, fold_above=20)
    assert len(plan.folded) == 60
    first_seen = [e for e in plan.events if e.event == FLEET_FIRST_SEEN]
    assert len(first_seen) == 1
    assert first_seen[0].payload["count"] == 60
    assert len(first_seen[0].payload["agents"]) == 50 and first_seen[0].payload["more"] == 10
    # The first sight that is not healthy is published on its own: it may need an alert.
    assert [a.key for a in plan.artifacts] == ["agent-a"]
    assert [e.event for e in plan.events if e.event != FLEET_FIRST_SEEN] == ["agentwatch.agent.unhealthy"]
    # At the threshold, nothing is folded.
    assert plan_publish(rows[:20], FLEET, None, fold_above=20).folded == []


def test_a_capped_fleet_table_keeps_the_agents_that_are_not_healthy_first() -> None:
    rows = [{"id": f"h{i}", "state": "healthy"} for i in range(30)]
    rows[7] = {"id": "bad", "state": "unhealthy"}
    rows[20] = {"id": "meh", "state": "degraded"}
    rows[25] = {"id": "dead", "state": "failed"}
    shown, description = fleet_table(rows, cap=10)
    assert [r["id"] for r in shown[:3]] == ["dead", "bad", "meh"]
    assert len(shown) == 10
    assert "Showing 10 of 30" in description and "1 unhealthy" in description
    every, description = fleet_table(rows, cap=30)
    assert every == rows and "Showing" not in description


@pytest.mark.parametrize(
    ("stored", "fleet", "expect", "refused"),
    [
        pytest.param(["a", "b", "c"], ["a", "b"], ["c"], False, id="one-left"),
        pytest.param([f"x{i}" for i in range(40)], [], [f"x{i}" for i in range(40)], True, id="empty-fleet-40-stored"),
        pytest.param(
            [f"x{i}" for i in range(40)],
            [f"x{i}" for i in range(25)],
            [f"x{i}" for i in range(25, 40)],
            False,
            id="15-of-40",
        ),
        pytest.param(
            [f"x{i}" for i in range(40)],
            [f"x{i}" for i in range(15)],
            [f"x{i}" for i in range(15, 40)],
            True,
            id="25-of-40",
        ),
        pytest.param(["a", "b"], [], ["a", "b"], False, id="small-fleet-emptied"),
    ],
)
def test_forgetting_most_of_the_fleet_at_once_is_refused(
    stored: list[str], fleet: list[str], expect: list[str], refused: bool
) -> None:
    gone = departed(stored, fleet, max_fraction=0.5)
    assert gone.ids == expect
    assert gone.refused is refused
