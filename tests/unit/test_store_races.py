"""Two writers on one state store at once (two StateStore objects on one database, as two monitor
runs or two workers have): every decision is made once, and neither writer fails for the other's
sake (no deadlock, no duplicate key), on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio
import sqlalchemy as sa

from agentwatch.alerts import Incident, IncidentChange
from agentwatch.docker.budget import RestartBudget
from agentwatch.models import AgentRecord, AgentState, Transition
from agentwatch.store import StateStore
from agentwatch.store.schema import transitions

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
LEASE = timedelta(minutes=2)
N = 300


@pytest_asyncio.fixture(loop_scope="function")
async def two(store_url: str) -> AsyncIterator[tuple[StateStore, StateStore]]:
    first, second = StateStore(store_url), StateStore(store_url)
    await first.ensure_schema()
    await second.ensure_schema()
    yield first, second
    await first.close()
    await second.close()


def degrade(record: AgentRecord, reason: str) -> tuple[AgentRecord, Transition]:
    new = record.evolve(state=AgentState.DEGRADED, failures=1, since=T0, reason=reason)
    return new, Transition(record.agent_id, record.state, AgentState.DEGRADED, reason, 1, T0)


async def test_commits_in_opposite_orders_each_record_once(two: tuple[StateStore, StateStore]) -> None:
    """Each writer has every agent, in opposite orders: on PostgreSQL row locks taken in the order
    given would deadlock; every agent must end with exactly one writer's transition."""
    first, second = two
    agents = [f"agent-{i:03d}" for i in range(N)]
    for round_ in range(3):
        if round_ == 0:  # first sights: both insert every agent
            read = {a: AgentRecord(a, state=AgentState.HEALTHY, since=T0) for a in agents}
            change_a = [(read[a], Transition(a, AgentState.UNKNOWN, AgentState.HEALTHY, "a", 0, T0)) for a in agents]
            change_b = [(read[a], Transition(a, AgentState.UNKNOWN, AgentState.HEALTHY, "b", 0, T0)) for a in agents]
        else:
            read = await first.load()
            change_a = [degrade(read[a], f"a{round_}") for a in agents]
            change_b = [degrade(read[a], f"b{round_}") for a in agents]
        ra, rb = await asyncio.gather(first.commit(change_a, run_id="a"), second.commit(change_b[::-1], run_id="b"))
        assert sorted(ra.conflicts + rb.conflicts) == agents, round_
        assert len(ra.saved) + len(rb.saved) == N
        stored = await second.load()
        assert {r.version for r in stored.values()} == {round_ + 1}
        winners = {r.agent_id: r.reason for r in ra.saved + rb.saved}
        assert {a: r.reason for a, r in stored.items()} == winners
    assert len(await first.history(limit=10 * N)) == 3 * N


async def test_outbox_claims_race_and_each_row_goes_to_one_claimer(two: tuple[StateStore, StateStore]) -> None:
    first, second = two
    changes = [
        (
            AgentRecord(f"a-{i}", state=AgentState.DEGRADED, since=T0),
            Transition(f"a-{i}", AgentState.UNKNOWN, AgentState.DEGRADED, "down", 1, T0),
        )
        for i in range(N)
    ]
    await first.commit(changes)
    claimed: dict[str, list[int]] = {}
    for round_ in range(20):
        claimers = [(first, f"p1-{round_}"), (second, f"p2-{round_}"), (first, f"p3-{round_}")]
        got = await asyncio.gather(
            *(store.claim_unpublished(name, now=T0, lease=LEASE, max_costly=40) for store, name in claimers)
        )
        for (_, name), rows in zip(claimers, got, strict=True):
            claimed[name] = [r.id for r in rows]
            assert all(r.attempts == 1 for r in rows), name
        # Side by side, claimers take different rows rather than the same ones (none is left empty
        # handed while rows are free).
        assert sum(bool(rows) for rows in got) == min(3, -(-(N - 120 * round_) // 40)), round_
        # Each claimer publishes what it holds; another's rows are not its to mark.
        for store, name in claimers:
            assert await store.mark_published(name + "-not", claimed[name], T0) == 0
            assert await store.mark_published(name, claimed[name], T0) == len(claimed[name])
        if (await second.outbox_counts()).unpublished == 0:
            break
    ids = [i for rows in claimed.values() for i in rows]
    assert len(ids) == len(set(ids)) == N
    counts = await second.outbox_counts()
    assert counts.unpublished == 0


async def test_outbox_claims_race_past_an_expired_lease(two: tuple[StateStore, StateStore]) -> None:
    first, second = two
    changes = [
        (
            AgentRecord(f"a-{i}", state=AgentState.DEGRADED, since=T0),
            Transition(f"a-{i}", AgentState.UNKNOWN, AgentState.DEGRADED, "down", 1, T0),
        )
        for i in range(50)
    ]
    await first.commit(changes)
    dead = await first.claim_unpublished("dead", now=T0, lease=LEASE, max_costly=100)
    assert len(dead) == 50
    later = T0 + LEASE + timedelta(seconds=1)
    a, b = await asyncio.gather(
        first.claim_unpublished("p1", now=later, lease=LEASE, max_costly=100),
        second.claim_unpublished("p2", now=later, lease=LEASE, max_costly=100),
    )
    assert sorted(r.id for r in a + b) == sorted(r.id for r in dead)
    assert {r.attempts for r in a + b} == {2}
    assert await first.mark_published("dead", [r.id for r in dead], later) == 0


async def test_restart_budgets_race_one_winner_each(two: tuple[StateStore, StateStore]) -> None:
    first, second = two
    for round_ in range(5):
        read = await first.load_restart_budgets()
        budgets = [read.get(f"a-{i}", RestartBudget(f"a-{i}")) for i in range(20)]
        mine = [dataclasses.replace(b, restarts=(T0 + timedelta(seconds=round_),)) for b in budgets]
        theirs = [dataclasses.replace(b, restarts=(T0 + timedelta(seconds=round_ + 0.5),)) for b in budgets]
        results = await asyncio.gather(
            *(first.save_restart_budget(b) for b in mine), *(second.save_restart_budget(b) for b in theirs[::-1])
        )
        assert sum(r is not None for r in results) == 20, round_


async def test_incidents_race_one_winner_each(two: tuple[StateStore, StateStore]) -> None:
    first, second = two
    ids = [f"a-{i:02d}" for i in range(40)]
    opened = [IncidentChange(a, 0, Incident(a, T0, AgentState.FAILED, "down")) for a in ids]
    won = await asyncio.gather(first.save_incidents(opened), second.save_incidents(opened[::-1]))
    assert sorted(won[0] + won[1]) == ids
    read = await first.load_incidents()
    closed = [IncidentChange(a, read[a].version, None) for a in ids]
    reminded = [IncidentChange(a, read[a].version, dataclasses.replace(read[a], reminders=1)) for a in ids]
    won = await asyncio.gather(first.save_incidents(closed), second.save_incidents(reminded[::-1]))
    assert sorted(won[0] + won[1]) == ids
    left = await second.load_incidents()
    assert sorted(left) == sorted(won[1]) and all(i.reminders == 1 for i in left.values())


async def test_identities_and_label_memory_written_by_two_at_once(two: tuple[StateStore, StateStore]) -> None:
    """Not compare-and-swap (the last writer's view stands), but two writers must never fail."""
    first, second = two
    ids = [f"a-{i:02d}" for i in range(60)]
    for round_ in range(3):
        mine = {a: {"name": a, "version": f"1.{round_}"} for a in ids}
        theirs = {a: {"name": a, "version": f"2.{round_}"} for a in reversed(ids)}
        await asyncio.gather(first.save_identities(mine), second.save_identities(theirs))
        stored = await first.load_identities(ids)
        assert sorted(stored) == ids
        assert {i["version"] for i in stored.values()} <= {f"1.{round_}", f"2.{round_}"}

        memory_a = {a: f"seen-a-{round_}" for a in ids[round_:]}
        memory_b = {a: f"seen-b-{round_}" for a in reversed(ids[: 60 - round_])}
        await asyncio.gather(first.remember_label_agents(memory_a), second.remember_label_agents(memory_b))
        remembered = await second.remembered_label_agents()
        assert remembered in (memory_a, memory_b)


async def test_a_claimer_passes_over_rows_another_is_taking(store_url: str) -> None:
    """PostgreSQL: while another claimer's transaction holds the oldest rows, a claim takes the next
    ones at once instead of waiting for it (SQLite has one writer at a time: nothing to pass over)."""
    if not store_url.startswith("postgresql"):
        pytest.skip("row locks are PostgreSQL's; SQLite writers queue on one database lock")
    async with StateStore(store_url) as store:
        changes = [
            (
                AgentRecord(f"a-{i:02d}", state=AgentState.DEGRADED, since=T0),
                Transition(f"a-{i:02d}", AgentState.UNKNOWN, AgentState.DEGRADED, "down", 1, T0),
            )
            for i in range(30)
        ]
        await store.commit(changes)
        async with store.engine.connect() as other:
            ids = sorted((await other.execute(sa.select(transitions.c.id))).scalars())
            await other.commit()
            held = sa.select(transitions.c.id).where(transitions.c.id.in_(ids[:10])).with_for_update()
            await other.execute(held)  # a claimer in the middle of its transaction
            rows = await asyncio.wait_for(store.claim_unpublished("p2", now=T0, lease=LEASE, max_costly=15), timeout=10)
            await other.rollback()
        assert [r.id for r in rows] == ids[10:25]
