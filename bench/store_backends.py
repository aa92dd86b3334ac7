"""The state store's hot writes on SQLite and on PostgreSQL, side by side: what one monitor cycle of
N agents costs the store.

    .venv/bin/python bench/store_backends.py [--agents 10000] [--repeat 3] [--postgres URL]

`--postgres` defaults to $AGENTWATCH_TEST_POSTGRES_URL (scripts/postgres.sh prints one); without it
only SQLite runs. Per backend and repeat, on a fresh store (a SQLite file in a temporary directory;
a PostgreSQL database made for the run and dropped after it):

- `commit` of N new records, each with its first transition (a first cycle);
- `load()` of every record (each cycle starts with it);
- `commit` of N changed records without transitions (a steady cycle: every agent checked);
- `commit` of N changed records, 10% with a transition (a cycle with many changes);
- `claim_unpublished` + `mark_published` of the log's rows (max 500 costly; first sights are cheap);
- two stores committing the same N records at once from the same read (two overlapping runs): the
  time until both are done, and that every agent was written once.

It prints the median and range of each, in ms. Nothing is asserted: the machines are shared.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agentwatch.models import AgentRecord, AgentState, Transition  # noqa: E402
from agentwatch.store import StateStore  # noqa: E402

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


async def timed(fn: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = await fn()
    return (time.perf_counter() - start) * 1000, result


async def one_run(url: str, n: int) -> dict[str, float]:
    ids = [f"agent-{i:05d}" for i in range(n)]
    out: dict[str, float] = {}
    async with StateStore(url) as store, StateStore(url) as other:
        first = [
            (
                AgentRecord(a, state=AgentState.HEALTHY, since=T0, first_seen=T0, last_checked=T0),
                Transition(a, AgentState.UNKNOWN, AgentState.HEALTHY, "ok", 0, T0),
            )
            for a in ids
        ]
        out["commit N new + transitions"], _ = await timed(lambda: store.commit(first, run_id="r1"))
        out["load all"], records = await timed(store.load)
        steady = [(records[a].evolve(last_checked=T0 + timedelta(seconds=30), latency_ms=1.5), None) for a in ids]
        out["commit N changed, no transition"], _ = await timed(lambda: store.commit(steady, run_id="r2"))
        records = await store.load()
        changes: list[tuple[AgentRecord, Transition | None]] = []
        for i, a in enumerate(ids):
            if i % 10 == 0:
                new = records[a].evolve(state=AgentState.DEGRADED, since=T0, failures=1, reason="500")
                changes.append((new, Transition(a, AgentState.HEALTHY, AgentState.DEGRADED, "500", 1, T0)))
            else:
                changes.append((records[a].evolve(last_checked=T0 + timedelta(seconds=60)), None))
        out["commit N changed, 10% transitions"], _ = await timed(lambda: store.commit(changes, run_id="r3"))

        async def drain() -> int:
            published = 0
            while rows := await store.claim_unpublished("bench", now=T0, lease=timedelta(minutes=2), max_costly=500):
                published += await store.mark_published("bench", [r.id for r in rows], T0)
            return published

        out["claim + mark the whole log"], _ = await timed(drain)
        records = await store.load()
        mine = [(records[a].evolve(reason="a"), None) for a in ids]
        theirs = [(records[a].evolve(reason="b"), None) for a in reversed(ids)]
        ms, (ra, rb) = await timed(
            lambda: asyncio.gather(store.commit(mine, run_id="a"), other.commit(theirs, run_id="b"))
        )
        assert len(ra.saved) + len(rb.saved) == n and len(ra.conflicts) + len(rb.conflicts) == n
        out["two stores commit the same N at once"] = ms
    return out


class PostgresDatabase:
    """A database of its own on the cluster of `base` (a URL whose role has CREATEDB)."""

    def __init__(self, base: str) -> None:
        self.base = sa.engine.make_url(base).set(drivername="postgresql")
        self.name = f"agentwatch_bench_{os.getpid()}"

    def _admin(self, statement: str) -> None:
        import asyncpg

        async def run() -> None:
            u = self.base
            conn = await asyncpg.connect(
                host=u.host, port=u.port, user=u.username, password=u.password, database=u.database
            )
            try:
                await conn.execute(statement)
            finally:
                await conn.close()

        # A thread of its own: never inside the bench's event loop.
        worker = threading.Thread(target=lambda: asyncio.run(run()))
        worker.start()
        worker.join()

    def __enter__(self) -> str:
        self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        self._admin(f'CREATE DATABASE "{self.name}"')
        return self.base.set(database=self.name).render_as_string(hide_password=False)

    def __exit__(self, *exc: object) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--postgres", default=os.environ.get("AGENTWATCH_TEST_POSTGRES_URL", ""))
    args = parser.parse_args()
    backends = ["sqlite"] + (["postgresql"] if args.postgres else [])
    results: dict[str, list[dict[str, float]]] = {b: [] for b in backends}
    for _ in range(args.repeat):
        for backend in backends:
            if backend == "sqlite":
                with tempfile.TemporaryDirectory() as tmp:
                    results[backend].append(asyncio.run(one_run(f"sqlite:///{tmp}/state.db", args.agents)))
            else:
                with PostgresDatabase(args.postgres) as url:
                    results[backend].append(asyncio.run(one_run(url, args.agents)))
    print(f"state store, {args.agents:,} agents, {args.repeat} runs each (ms: median, range)")
    header = f"{'step':<40}" + "".join(f"{b:>26}" for b in backends)
    print(header)
    for step in results[backends[0]][0]:
        cells = []
        for backend in backends:
            values = [r[step] for r in results[backend]]
            cells.append(f"{statistics.median(values):>9,.0f} ({min(values):,.0f}-{max(values):,.0f})")
        print(f"{step:<40}" + "".join(f"{c:>26}" for c in cells))
    if not args.postgres:
        print(
            "(no PostgreSQL: pass --postgres URL or set AGENTWATCH_TEST_POSTGRES_URL; scripts/postgres.sh prints one)"
        )


if __name__ == "__main__":
    main()
