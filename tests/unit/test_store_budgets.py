"""Restart budgets in the state store (SQLite and PostgreSQL): compare-and-swap on the version read.

README (Reconcile): "two runs that overlap anyway (the monitor's sub-flow and a manual one) restart a
container once, as the budget is written with compare-and-swap before the restart". So a writer
holding a stale version must lose, and must learn that it lost (None), whatever it wanted to write.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest_asyncio

from agentwatch.docker.budget import RestartBudget
from agentwatch.store import StateStore

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest_asyncio.fixture(loop_scope="function")
async def store(store_url: str) -> AsyncIterator[StateStore]:
    s = StateStore(store_url)
    yield s
    await s.close()


async def test_a_writer_with_a_stale_version_loses(store: StateStore) -> None:
    first = await store.save_restart_budget(RestartBudget("a", restarts=(at(0),)))
    assert first is not None and first.version == 1
    # Two reconcile runs read the same budget (version 1) ...
    (mine,) = (await store.load_restart_budgets(["a"])).values()
    (theirs,) = (await store.load_restart_budgets(["a"])).values()
    assert mine.version == theirs.version == 1
    # ... the first to write wins and moves the version on ...
    won = await store.save_restart_budget(dataclasses.replace(mine, restarts=(at(0), at(10))))
    assert won is not None and won.version == 2
    # ... and the second, still holding version 1, loses and changes nothing.
    assert await store.save_restart_budget(dataclasses.replace(theirs, restarts=(at(0), at(11)))) is None
    assert await store.save_restart_budget(dataclasses.replace(theirs, restarts=())) is None
    stored = (await store.load_restart_budgets(["a"]))["a"]
    assert (stored.restarts, stored.version) == ((at(0), at(10)), 2)
    # Read again, it writes.
    again = await store.save_restart_budget(dataclasses.replace(stored, restarts=(at(0), at(10), at(12))))
    assert again is not None and again.version == 3


async def test_a_version_from_the_future_loses_too(store: StateStore) -> None:
    assert await store.save_restart_budget(RestartBudget("a")) is not None
    assert await store.save_restart_budget(RestartBudget("a", restarts=(at(0),), version=5)) is None
    assert (await store.load_restart_budgets(["a"]))["a"].version == 1


async def test_two_first_writers_one_wins(store: StateStore) -> None:
    assert await store.save_restart_budget(RestartBudget("a", restarts=(at(0),))) is not None
    # A second run that read no budget (version 0) must not overwrite the one just written.
    assert await store.save_restart_budget(RestartBudget("a", restarts=(at(5),))) is None
    assert (await store.load_restart_budgets(["a"]))["a"].restarts == (at(0),)


async def test_overlapping_writers_restart_once(store_url: str) -> None:
    """Two stores on one database (two runs), each saving from the same read at once: exactly one wins."""
    one, two = StateStore(store_url), StateStore(store_url)
    try:
        base = await one.save_restart_budget(RestartBudget("a"))
        assert base is not None
        for n in range(1, 6):
            read = (await one.load_restart_budgets(["a"]))["a"]
            saved = await asyncio.gather(
                one.save_restart_budget(dataclasses.replace(read, restarts=(at(n),))),
                two.save_restart_budget(dataclasses.replace(read, restarts=(at(n + 0.5),))),
            )
            winners = [s for s in saved if s is not None]
            assert len(winners) == 1, f"round {n}: {saved}"
            stored = (await two.load_restart_budgets(["a"]))["a"]
            assert (stored.restarts, stored.version) == (winners[0].restarts, read.version + 1)
    finally:
        await one.close()
        await two.close()
