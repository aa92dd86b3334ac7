"""The one compare-and-swap helper (agentwatch.store.cas): a write lands only on the version it was
read at, and the helper says which writes landed, in their order (on SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta, timezone

import pytest
import pytest_asyncio
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from agentwatch.store import StateStore
from agentwatch.store.cas import Swap, compare_and_swap
from agentwatch.store.schema import flap_state

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def values(changes: int) -> dict[str, object]:
    return {"since": T0, "changes": changes, "notified_at": None}


class Db:
    """compare_and_swap in a transaction of its own on a real database, as the store calls it."""

    def __init__(self, store: StateStore) -> None:
        self.store = store

    async def run(self, fn: Callable[[Connection], object]) -> object:
        async with self.store.engine.begin() as conn:
            return await conn.run_sync(fn)

    async def cas(self, swaps: Sequence[Swap], now: datetime) -> object:
        return await self.run(lambda conn: compare_and_swap(conn, flap_state, swaps, now))

    async def rows(self) -> dict[str, tuple[int, int]]:
        """agent id -> (changes, version)."""
        return await self.run(  # type: ignore[return-value]
            lambda conn: {r.agent_id: (r.changes, r.version) for r in conn.execute(sa.select(flap_state))}
        )


@pytest_asyncio.fixture(loop_scope="function")
async def db(store_url: str) -> AsyncIterator[Db]:
    async with StateStore(store_url) as store:
        yield Db(store)


async def test_a_new_row_lands_once(db: Db) -> None:
    assert await db.cas([Swap("a", 0, values(1))], T0) == [True]
    assert await db.cas([Swap("a", 0, values(2))], T0 + timedelta(seconds=1)) == [False]
    assert await db.rows() == {"a": (1, 1)}


@pytest.mark.parametrize(
    ("read_at", "landed", "after"),
    [(1, True, (5, 2)), (0, False, (1, 1)), (7, False, (1, 1))],
    ids=["current-version", "stale-version", "version-from-the-future"],
)
async def test_an_update_lands_only_on_the_version_it_read(
    db: Db, read_at: int, landed: bool, after: tuple[int, int]
) -> None:
    await db.cas([Swap("a", 0, values(1))], T0)
    later = T0 + timedelta(seconds=1)
    assert await db.cas([Swap("a", read_at, values(5))], later) == [landed]
    assert await db.rows() == {"a": after}


@pytest.mark.parametrize(("read_at", "landed"), [(1, True), (0, False), (2, False)], ids=["current", "stale", "future"])
async def test_a_delete_lands_only_on_the_version_it_read(db: Db, read_at: int, landed: bool) -> None:
    await db.cas([Swap("a", 0, values(1))], T0)
    assert await db.cas([Swap("a", read_at, None)], T0 + timedelta(seconds=1)) == [landed]
    assert ("a" in await db.rows()) is not landed


async def test_a_batch_says_which_landed_in_its_order(db: Db) -> None:
    await db.cas([Swap("a", 0, values(1)), Swap("b", 0, values(1))], T0)
    batch = [
        Swap("c", 0, values(1)),  # new
        Swap("a", 0, values(9)),  # a second insert: lost
        Swap("b", 1, None),  # delete at its version
        Swap("a", 1, values(2)),  # update at its version
        Swap("d", 3, values(1)),  # update of a row that does not exist: lost
    ]
    assert await db.cas(batch, T0 + timedelta(seconds=1)) == [True, False, True, True, False]
    assert await db.rows() == {"a": (2, 2), "c": (1, 1)}


async def test_one_write_per_agent_per_call(db: Db) -> None:
    await db.cas([Swap("a", 0, values(1))], T0)
    later = T0 + timedelta(seconds=1)
    # Two swaps of one agent read at one version: the first lands, the second must not as well.
    assert await db.cas([Swap("a", 1, values(2)), Swap("a", 1, values(3)), Swap("a", 1, None)], later) == [
        True,
        False,
        False,
    ]
    assert await db.rows() == {"a": (2, 2)}
    assert await db.cas([Swap("n", 0, values(1)), Swap("n", 0, values(2))], later) == [True, False]
    assert (await db.rows())["n"] == (1, 1)


async def test_a_batch_of_thousands_is_chunked(db: Db) -> None:
    ids = [f"a-{i:04d}" for i in range(1200)]
    assert await db.cas([Swap(a, 0, values(1)) for a in ids], T0) == [True] * 1200
    mixed = [Swap(a, 1 if i % 3 else 0, values(2) if i % 2 else None) for i, a in enumerate(ids)]
    expected = [bool(i % 3) for i in range(1200)]
    assert await db.cas(mixed, T0 + timedelta(seconds=1)) == expected
    stored = await db.rows()
    assert len(stored) == 1200 - sum(1 for i in range(1200) if i % 3 and not i % 2)


async def test_an_update_stores_exactly_what_an_insert_stores(db: Db) -> None:
    """On SQLite the UPDATE goes to the driver with the dialect's own value processors (the fast
    path of a cycle's commit): what it stores must be what SQLAlchemy's INSERT stores, byte for
    byte, or comparisons on the stored text (`since >= ...`) and reads would drift."""
    odd = datetime(2025, 3, 1, 12, 0, 0, 7, tzinfo=UTC)  # microseconds, and an offset instant below
    row = {"since": odd, "changes": 3, "notified_at": odd.astimezone(timezone(timedelta(hours=5)))}
    assert await db.cas([Swap("a", 0, row), Swap("b", 0, values(1))], T0) == [True, True]
    assert await db.cas([Swap("b", 1, row)], T0) == [True]  # an UPDATE of b to a's values

    def raw(conn: Connection) -> dict[str, tuple[object, ...]]:
        columns = "since, changes, notified_at, updated_at"
        return {r[0]: tuple(r[1:]) for r in conn.exec_driver_sql(f"SELECT agent_id, {columns} FROM flap_state")}

    stored = await db.run(raw)
    assert stored["a"] == stored["b"], stored  # type: ignore[index]
