"""The state store against a real SQLite file and a real PostgreSQL database (each test runs on
both: the `store_url` fixture): schema, round trips, compare-and-swap, history."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import sqlalchemy as sa

from agentwatch.errors import AgentwatchError, StoreConflict, StoreError
from agentwatch.models import AgentRecord, AgentState, ProbeResult, Transition
from agentwatch.policy import evaluate
from agentwatch.registry import Policy
from agentwatch.store import CommitResult, StateStore, async_url
from agentwatch.store.schema import metadata

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def url_of(path: Path) -> str:
    return f"sqlite:///{path}"


@pytest_asyncio.fixture(loop_scope="function")
async def store(store_url: str) -> AsyncIterator[StateStore]:
    s = StateStore(store_url)
    yield s
    await s.close()


def tr(agent: str, old: AgentState, new: AgentState, t: float, failures: int = 0, reason: str = "") -> Transition:
    return Transition(agent, old, new, reason or f"{old.value} -> {new.value}", failures, at(t))


def full_record(agent: str = "web-1") -> AgentRecord:
    return AgentRecord(
        agent_id=agent,
        state=AgentState.DEGRADED,
        since=at(1),
        reason="failed 2 of 3 consecutive health checks: connection refused",
        failures=2,
        successes=5,
        first_seen=at(-3600),
        last_checked=at(2),
        next_check=at(32),
        latency_ms=12.5,
        paused=True,
        paused_until=at(600),
        sticky=True,
        version=0,
    )


async def raw_rows(store: StateStore, sql: str) -> list[tuple[Any, ...]]:
    """What a plain SQL query reads, past the store's own code."""
    async with store.engine.connect() as conn:
        return [tuple(row) for row in await conn.execute(sa.text(sql))]


async def seed(store: StateStore, agent: str = "web-1") -> AgentRecord:
    """Store a healthy agent at version 1 (with its first transition)."""
    rec = AgentRecord(agent, state=AgentState.HEALTHY, since=at(0), first_seen=at(0), last_checked=at(0))
    result = await store.commit([(rec, tr(agent, AgentState.UNKNOWN, AgentState.HEALTHY, 0))])
    (saved,) = result.saved
    assert saved.version == 1
    return saved


# --- schema -------------------------------------------------------------------------------------


async def tables(store: StateStore) -> set[str]:
    async with store.engine.connect() as conn:
        return set(await conn.run_sync(lambda c: sa.inspect(c).get_table_names()))


async def test_schema_created_on_first_use(store: StateStore) -> None:
    assert await tables(store) == set()
    assert await store.load() == {}
    assert await tables(store) == set(metadata.tables)
    if store.engine.dialect.name == "sqlite":
        assert await raw_rows(store, "PRAGMA journal_mode") == [("wal",)]
    assert await store.history() == []


async def test_schema_creation_is_idempotent(store_url: str) -> None:
    async with StateStore(store_url) as first:
        await first.ensure_schema()
        await first.ensure_schema()
        await seed(first)
    async with StateStore(store_url) as second:
        assert list(await second.load()) == ["web-1"]


async def test_parent_directories_are_created(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "state.db"
    async with StateStore(url_of(path)) as s:
        await seed(s)
    assert path.exists()


# --- round trips --------------------------------------------------------------------------------


async def test_insert_then_update_round_trips_every_field(store: StateStore) -> None:
    rec = full_record()
    transition = tr("web-1", AgentState.HEALTHY, AgentState.DEGRADED, 1, failures=2, reason=rec.reason)
    result = await store.commit([(rec, transition)], run_id="run-1")
    assert result == CommitResult(saved=[rec.evolve(version=1)], transitions=[transition], conflicts=[])

    loaded = (await store.load())["web-1"]
    assert loaded == rec.evolve(version=1)
    for name in ("since", "first_seen", "last_checked", "next_check", "paused_until"):
        value = getattr(loaded, name)
        assert value.tzinfo is not None and value.utcoffset() == timedelta(0), name

    updated = loaded.evolve(
        state=AgentState.HEALTHY,
        since=at(40),
        reason="200 OK",
        failures=0,
        successes=1,
        last_checked=at(40),
        next_check=None,
        latency_ms=None,
        paused=False,
        paused_until=None,
        sticky=False,
    )
    result = await store.commit([(updated, None)])
    assert result.saved == [updated.evolve(version=2)]
    assert result.transitions == []
    assert (await store.load())["web-1"] == updated.evolve(version=2)


async def test_minimal_record_round_trips(store: StateStore) -> None:
    rec = AgentRecord("bare")
    await store.commit([(rec, None)])
    assert (await store.load())["bare"] == rec.evolve(version=1)


async def test_policy_output_round_trips(store: StateStore) -> None:
    pol = Policy()
    ev = evaluate(None, ProbeResult("web-1", ok=False, latency_ms=3.25, reason="refused"), pol, at(0))
    assert ev.transition is not None
    await store.commit([(ev.record, ev.transition)])
    loaded = (await store.load())["web-1"]
    assert loaded == ev.record.evolve(version=1)
    ev2 = evaluate(loaded, ProbeResult("web-1", ok=False, reason="refused"), pol, at(10))
    result = await store.commit([(ev2.record, ev2.transition)])
    assert result.saved[0].version == 2
    assert (await store.load())["web-1"].failures == 2


async def test_transition_round_trips_with_run_id(store: StateStore) -> None:
    transition = tr("web-1", AgentState.DEGRADED, AgentState.UNHEALTHY, 5, failures=3, reason="unreachable")
    await store.commit([(AgentRecord("web-1", state=AgentState.UNHEALTHY, since=at(5)), transition)], run_id="r-42")
    (got,) = await store.history()
    assert got == transition
    assert got.at.tzinfo is not None and got.at.utcoffset() == timedelta(0)
    assert await raw_rows(store, "SELECT agent_id, seq, run_id FROM transitions") == [("web-1", 1, "r-42")]


async def test_non_utc_datetime_keeps_its_instant(store: StateStore) -> None:
    plus_two = datetime(2025, 3, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    transition = Transition("web-1", AgentState.UNKNOWN, AgentState.HEALTHY, "ok", 0, plus_two)
    await store.commit([(AgentRecord("web-1", state=AgentState.HEALTHY, since=plus_two), transition)])
    assert (await store.load())["web-1"].since == plus_two
    assert (await store.history())[0].at == plus_two


async def test_load_by_ids(store: StateStore) -> None:
    await store.commit([(AgentRecord(a), None) for a in ("a", "b", "c")])
    assert sorted(await store.load()) == ["a", "b", "c"]
    assert sorted(await store.load(["a", "c", "zzz"])) == ["a", "c"]
    assert await store.load([]) == {}
    # More ids than one IN (...) chunk.
    many = [f"x-{i}" for i in range(1200)] + ["b"]
    assert list(await store.load(iter(many))) == ["b"]


async def test_empty_commit(store: StateStore) -> None:
    assert await store.commit([]) == CommitResult()


# --- compare-and-swap ---------------------------------------------------------------------------


async def test_stale_update_is_a_conflict_and_writes_nothing(store: StateStore) -> None:
    base = await seed(store)
    winner = base.evolve(state=AgentState.DEGRADED, failures=1, since=at(10), reason="winner")
    won = await store.commit([(winner, tr("web-1", AgentState.HEALTHY, AgentState.DEGRADED, 10, 1))])
    assert [r.version for r in won.saved] == [2]

    stale = base.evolve(state=AgentState.PAUSED, since=at(11), reason="stale", paused=True)
    lost = await store.commit([(stale, tr("web-1", AgentState.HEALTHY, AgentState.PAUSED, 11))], run_id="late")
    assert lost == CommitResult(saved=[], transitions=[], conflicts=["web-1"])

    assert (await store.load())["web-1"] == winner.evolve(version=2)
    assert [(t.from_state, t.to_state) for t in await store.history("web-1")] == [
        (AgentState.HEALTHY, AgentState.DEGRADED),
        (AgentState.UNKNOWN, AgentState.HEALTHY),
    ]


async def test_second_insert_of_new_agent_is_a_conflict(store: StateStore) -> None:
    first = AgentRecord("web-1", state=AgentState.HEALTHY, since=at(0), reason="first")
    second = AgentRecord("web-1", state=AgentState.DEGRADED, since=at(0), reason="second")
    t = tr("web-1", AgentState.UNKNOWN, AgentState.HEALTHY, 0)
    assert (await store.commit([(first, t)])).conflicts == []
    result = await store.commit([(second, tr("web-1", AgentState.UNKNOWN, AgentState.DEGRADED, 0))])
    assert result == CommitResult(conflicts=["web-1"])
    assert (await store.load())["web-1"].reason == "first"
    assert await store.history() == [t]


async def test_version_ahead_of_store_is_a_conflict(store: StateStore) -> None:
    base = await seed(store)
    result = await store.commit([(base.evolve(version=7, reason="from the future"), None)])
    assert result.conflicts == ["web-1"]
    assert (await store.load())["web-1"] == base


async def test_conflict_for_one_agent_does_not_block_others(store: StateStore) -> None:
    a = await seed(store, "a")
    await seed(store, "b")
    stale_b = AgentRecord("b", state=AgentState.DEGRADED, version=0)
    new_a = a.evolve(state=AgentState.DEGRADED, since=at(5))
    new_c = AgentRecord("c", state=AgentState.HEALTHY, since=at(5))
    result = await store.commit(
        [
            (new_a, tr("a", AgentState.HEALTHY, AgentState.DEGRADED, 5)),
            (stale_b, tr("b", AgentState.HEALTHY, AgentState.DEGRADED, 5)),
            (new_c, tr("c", AgentState.UNKNOWN, AgentState.HEALTHY, 5)),
        ]
    )
    assert [r.agent_id for r in result.saved] == ["a", "c"]
    assert [t.agent_id for t in result.transitions] == ["a", "c"]
    assert result.conflicts == ["b"]
    loaded = await store.load()
    assert (loaded["a"].version, loaded["b"].version, loaded["c"].version) == (2, 1, 1)
    assert loaded["b"].state is AgentState.HEALTHY
    assert len(await store.history("b")) == 1


def _degrade(base: AgentRecord, t: float, reason: str) -> tuple[AgentRecord, Transition]:
    new = base.evolve(state=AgentState.DEGRADED, failures=1, since=at(t), reason=reason)
    return new, Transition(base.agent_id, base.state, AgentState.DEGRADED, reason, 1, at(t))


async def test_concurrent_commits_on_one_store_record_one_transition(store: StateStore) -> None:
    agents = [f"agent-{i}" for i in range(5)]
    bases = [await seed(store, a) for a in agents]

    run_a = [_degrade(b, 10, "run a") for b in bases]
    run_b = [_degrade(b, 10, "run b") for b in bases]
    ra, rb = await asyncio.gather(store.commit(run_a, run_id="a"), store.commit(run_b, run_id="b"))

    for agent in agents:
        assert (agent in ra.conflicts) != (agent in rb.conflicts), agent
        degraded = [t for t in await store.history(agent) if t.to_state is AgentState.DEGRADED]
        assert len(degraded) == 1, agent
        assert (await store.load([agent]))[agent].version == 2
    assert len(ra.transitions) + len(rb.transitions) == len(agents)
    rows = await raw_rows(store, "SELECT count(*) FROM transitions WHERE to_state = 'degraded'")
    assert rows == [(len(agents),)]


async def test_concurrent_first_inserts_record_one_transition(store: StateStore) -> None:
    await store.ensure_schema()
    rec = AgentRecord("web-1", state=AgentState.HEALTHY, since=at(0))
    t = tr("web-1", AgentState.UNKNOWN, AgentState.HEALTHY, 0)
    results = await asyncio.gather(*(store.commit([(rec, t)]) for _ in range(4)))
    assert sum(len(r.transitions) for r in results) == 1
    assert sum(len(r.conflicts) for r in results) == 3
    assert await store.history() == [t]


async def test_two_store_instances_on_one_database_record_one_transition(store_url: str) -> None:
    async with StateStore(store_url) as first, StateStore(store_url) as second:
        base = await seed(first)
        # Each "run" reads the record itself, at the same version.
        read_a = (await first.load())["web-1"]
        read_b = (await second.load())["web-1"]
        assert read_a == read_b == base
        ra, rb = await asyncio.gather(
            first.commit([_degrade(read_a, 10, "run a")], run_id="a"),
            second.commit([_degrade(read_b, 10, "run b")], run_id="b"),
        )
        assert sorted(ra.conflicts + rb.conflicts) == ["web-1"]
        winner = ra if ra.saved else rb
        history = await second.history("web-1")
        assert [t.to_state for t in history] == [AgentState.DEGRADED, AgentState.HEALTHY]
        assert history[0] == winner.transitions[0]
        assert (await first.load())["web-1"].reason == winner.saved[0].reason


async def test_two_fresh_stores_create_schema_concurrently(store_url: str) -> None:
    for _ in range(5):
        first, second = StateStore(store_url), StateStore(store_url)
        try:
            # return_exceptions: let both finish before the engines are disposed.
            outcomes = await asyncio.gather(first.ensure_schema(), second.ensure_schema(), return_exceptions=True)
            assert outcomes == [None, None]
            assert await tables(first) == set(metadata.tables)
            async with first.engine.begin() as conn:  # empty again for the next round
                await conn.run_sync(metadata.drop_all)
        finally:
            await first.close()
            await second.close()


# --- leaving the fleet, history -----------------------------------------------------------------


async def test_drop_missing_forgets_records_but_keeps_history(store: StateStore) -> None:
    for agent in ("a", "b", "c"):
        await seed(store, agent)
    b = (await store.load(["b"]))["b"]
    await store.commit(
        [
            (
                b.evolve(failures=2, state=AgentState.DEGRADED, since=at(5)),
                tr("b", AgentState.HEALTHY, AgentState.DEGRADED, 5, 2),
            )
        ]
    )

    gone = await store.drop_missing(["a", "not-stored"])
    assert sorted(gone) == ["b", "c"]
    assert list(await store.load()) == ["a"]
    assert [t.agent_id for t in await store.history()] == ["b", "c", "b", "a"]
    assert len(await store.history("b")) == 2
    assert len(await store.history("c")) == 1

    assert await store.drop_missing(["a"]) == []
    # An agent that comes back without a transition starts fresh: a version-0 insert succeeds.
    back = await store.commit([(AgentRecord("c"), None)])
    assert back.conflicts == []
    reloaded = (await store.load(["c"]))["c"]
    assert (reloaded.state, reloaded.failures, reloaded.version) == (AgentState.UNKNOWN, 0, 1)


async def test_agent_returning_after_drop_records_transitions(store: StateStore) -> None:
    a = await seed(store, "a")
    await seed(store, "b")
    assert await store.drop_missing(["a"]) == ["b"]
    result = await store.commit(
        [
            (a.evolve(state=AgentState.DEGRADED, since=at(9)), tr("a", AgentState.HEALTHY, AgentState.DEGRADED, 9)),
            (
                AgentRecord("b", state=AgentState.HEALTHY, since=at(9)),
                tr("b", AgentState.UNKNOWN, AgentState.HEALTHY, 9),
            ),
        ]
    )
    assert [r.agent_id for r in result.saved] == ["a", "b"]
    assert [t.at for t in await store.history("b")] == [at(9), at(0)]


async def test_drop_missing_everything_in_chunks(store: StateStore) -> None:
    await store.commit([(AgentRecord(f"a-{i}"), None) for i in range(1100)])
    gone = await store.drop_missing([])
    assert len(gone) == 1100
    assert await store.load() == {}


async def test_history_newest_first_and_per_agent(store: StateStore) -> None:
    steps = [
        ("a", AgentState.UNKNOWN, AgentState.HEALTHY, 0),
        ("b", AgentState.UNKNOWN, AgentState.HEALTHY, 1),
        ("a", AgentState.HEALTHY, AgentState.DEGRADED, 2),
        ("b", AgentState.HEALTHY, AgentState.FAILED, 3),
        ("a", AgentState.DEGRADED, AgentState.UNHEALTHY, 4),
    ]
    versions: dict[str, int] = {}
    written = []
    for agent, old, new, t in steps:
        transition = tr(agent, old, new, t)
        rec = AgentRecord(agent, state=new, since=at(t), version=versions.get(agent, 0))
        (saved,) = (await store.commit([(rec, transition)])).saved
        versions[agent] = saved.version
        written.append(transition)

    assert await store.history() == written[::-1]
    assert await store.history("a") == [written[4], written[2], written[0]]
    assert await store.history("b") == [written[3], written[1]]
    assert await store.history(limit=2) == [written[4], written[3]]
    assert await store.history("a", limit=1) == [written[4]]
    assert await store.history("nobody") == []


# --- errors and URLs ----------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["not a url", "://nothing", ""], ids=["words", "no-scheme", "empty"])
def test_bad_url_raises_store_error(url: str) -> None:
    with pytest.raises(StoreError, match="not a database URL"):
        StateStore(url)


async def test_unknown_scheme_raises_store_error() -> None:
    with pytest.raises(StoreError):
        s = StateStore("nosuchdb://host/db")
        await s.load()


async def test_unopenable_path_raises_store_error(tmp_path: Path) -> None:
    # The database path is a directory: SQLite cannot open it (works as root too, unlike chmod).
    s = StateStore(url_of(tmp_path))
    try:
        with pytest.raises(StoreError) as info:
            await s.load()
        assert not isinstance(info.value, StoreConflict)
        assert "unable to open database file" in str(info.value)
        with pytest.raises(StoreError):
            await s.commit([(AgentRecord("a"), None)])
    finally:
        await s.close()


async def test_uncreatable_parent_raises_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("", encoding="utf-8")
    with pytest.raises(StoreError):
        s = StateStore(url_of(blocker / "state.db"))
        await s.load()


async def test_unreachable_postgres_raises_store_error_without_password() -> None:
    s = StateStore("postgresql://watch:s3cret@127.0.0.1:1/agentwatch")
    try:
        with pytest.raises(StoreError) as info:
            await s.load()
        assert isinstance(info.value, AgentwatchError)
        assert "s3cret" not in str(info.value)
        assert "postgresql+asyncpg://watch:***@127.0.0.1:1/agentwatch" in str(info.value)
    finally:
        await s.close()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///state.db", "sqlite+aiosqlite:///state.db"),
        ("sqlite:////var/lib/agentwatch/state.db", "sqlite+aiosqlite:////var/lib/agentwatch/state.db"),
        ("sqlite://", "sqlite+aiosqlite://"),
        ("postgresql://u:p@db:5432/aw", "postgresql+asyncpg://u:p@db:5432/aw"),
        ("postgres://db/aw", "postgresql+asyncpg://db/aw"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("postgresql+asyncpg://db/aw", "postgresql+asyncpg://db/aw"),
        ("postgresql+psycopg://db/aw", "postgresql+psycopg://db/aw"),
    ],
)
def test_async_url(url: str, expected: str) -> None:
    assert async_url(url) == expected


def test_store_url_is_async(tmp_path: Path) -> None:
    assert StateStore(url_of(tmp_path / "s.db")).url == f"sqlite+aiosqlite:///{tmp_path}/s.db"


async def test_a_claimer_too_long_for_its_column_is_refused_on_every_backend(store: StateStore) -> None:
    # PostgreSQL enforces VARCHAR(64), SQLite does not: the store refuses it before either sees it.
    for claimer in ("", "x" * 65):
        with pytest.raises(ValueError, match="1 to 64 characters"):
            await store.claim_unpublished(claimer, now=T0, lease=timedelta(minutes=1), max_costly=1)
    assert await store.claim_unpublished("x" * 64, now=T0, lease=timedelta(minutes=1), max_costly=1) == []


async def test_a_connection_the_server_dropped_is_replaced(store: StateStore, store_url: str) -> None:
    """A long-lived process keeps pooled connections; one the server closed (a restart, an idle
    timeout) must cost nothing but a new connection, not a failed cycle."""
    if store.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has no server to drop a connection")
    await seed(store)
    async with store.engine.connect() as conn:  # back in the pool after this
        pid = (await conn.execute(sa.text("SELECT pg_backend_pid()"))).scalar_one()
    # Another store: another process, as far as the pool knows.
    async with StateStore(store_url) as other, other.engine.connect() as conn:
        killed = await conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        assert killed.scalar_one() is True
    assert list(await store.load()) == ["web-1"]


def test_a_record_writes_every_column_of_its_row() -> None:
    """The commit's columns are written out by hand (store/agents.py:_values): every field of a
    record that has a column must be among them, and nothing else."""
    import dataclasses

    from agentwatch.models import AgentRecord
    from agentwatch.store.agents import _RECORD_FIELDS, _values
    from agentwatch.store.schema import agent_state

    written = set(_values(AgentRecord("a")))
    assert written == set(_RECORD_FIELDS)
    fields = {f.name for f in dataclasses.fields(AgentRecord)} - {"agent_id", "version"}
    assert written == fields == set(agent_state.c.keys()) - {"agent_id", "version", "updated_at"}
