"""The one compare-and-swap helper (agentwatch.store.cas): a write lands only on the version it was
read at, and the helper says which writes landed, in their order."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from agentwatch.store.cas import Swap, compare_and_swap
from agentwatch.store.schema import flap_state, metadata

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def values(changes: int) -> dict[str, object]:
    return {"since": T0, "changes": changes, "notified_at": None}


@pytest.fixture
def conn() -> Iterator[Connection]:
    engine = sa.create_engine("sqlite://")
    metadata.create_all(engine)
    with engine.begin() as connection:
        yield connection
    engine.dispose()


def rows(conn: Connection) -> dict[str, tuple[int, int]]:
    """agent id -> (changes, version)."""
    return {r.agent_id: (r.changes, r.version) for r in conn.execute(sa.select(flap_state))}


def test_a_new_row_lands_once(conn: Connection) -> None:
    assert compare_and_swap(conn, flap_state, [Swap("a", 0, values(1))], T0) == [True]
    assert compare_and_swap(conn, flap_state, [Swap("a", 0, values(2))], T0 + timedelta(seconds=1)) == [False]
    assert rows(conn) == {"a": (1, 1)}


@pytest.mark.parametrize(
    ("read_at", "landed", "after"),
    [(1, True, (5, 2)), (0, False, (1, 1)), (7, False, (1, 1))],
    ids=["current-version", "stale-version", "version-from-the-future"],
)
def test_an_update_lands_only_on_the_version_it_read(
    conn: Connection, read_at: int, landed: bool, after: tuple[int, int]
) -> None:
    compare_and_swap(conn, flap_state, [Swap("a", 0, values(1))], T0)
    later = T0 + timedelta(seconds=1)
    swap = Swap("a", read_at, values(5))
    assert compare_and_swap(conn, flap_state, [swap], later) == [landed]
    assert rows(conn) == {"a": after}


@pytest.mark.parametrize(("read_at", "landed"), [(1, True), (0, False), (2, False)], ids=["current", "stale", "future"])
def test_a_delete_lands_only_on_the_version_it_read(conn: Connection, read_at: int, landed: bool) -> None:
    compare_and_swap(conn, flap_state, [Swap("a", 0, values(1))], T0)
    assert compare_and_swap(conn, flap_state, [Swap("a", read_at, None)], T0 + timedelta(seconds=1)) == [landed]
    assert ("a" in rows(conn)) is not landed


def test_a_batch_says_which_landed_in_its_order(conn: Connection) -> None:
    compare_and_swap(conn, flap_state, [Swap("a", 0, values(1)), Swap("b", 0, values(1))], T0)
    batch = [
        Swap("c", 0, values(1)),  # new
        Swap("a", 0, values(9)),  # a second insert: lost
        Swap("b", 1, None),  # delete at its version
        Swap("a", 1, values(2)),  # update at its version
        Swap("d", 3, values(1)),  # update of a row that does not exist: lost
    ]
    assert compare_and_swap(conn, flap_state, batch, T0 + timedelta(seconds=1)) == [True, False, True, True, False]
    assert rows(conn) == {"a": (2, 2), "c": (1, 1)}
