"""Compare-and-swap on a per-row version: the one way a versioned row is written.

The tables whose writes decide something (agent records, restart budgets, flap episodes, alert
incidents) keep a `version` on each agent's row. A writer hands back what it read at the version
it read it (0: there was no row), and its write lands only where the row is still at that version:

- new (version 0): an INSERT that does nothing when the row exists (another writer was first);
- change: UPDATE ... WHERE agent_id = :id AND version = :read, setting version + 1;
- removal (no values): DELETE ... WHERE agent_id = :id AND version = :read.

A write that lands sets the version to read + 1 and stamps `updated_at` with the writer's instant.
At most one write per agent per call: a swap of an agent already written in the call loses.

The rows are locked before anything is decided (`base.lock_rows`: on PostgreSQL SELECT ... FOR
UPDATE in agent id order, so two writers on overlapping rows queue instead of deadlocking; on
SQLite the database's write lock), and the versions read under the lock decide which swaps land.
New rows cannot be locked before they exist: they go as INSERT ... ON CONFLICT DO NOTHING
RETURNING, and a row another writer inserted first is not returned. Each kind of write is one bulk
statement (a statement per row cost 11 s of a 10,000-agent cycle on SQLite: one round trip to the
driver's thread each; bench/README.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .base import chunks, column_value, insert_ignore_many, lock_rows

__all__ = ["Swap", "compare_and_swap"]


@dataclass(frozen=True, slots=True)
class Swap:
    """One versioned write: the row of `agent_id` as read at `version` (0: none), and its new
    column values (without agent_id, version and updated_at), or None to delete the row."""

    agent_id: str
    version: int
    values: Mapping[str, Any] | None


def compare_and_swap(conn: Connection, table: sa.Table, swaps: Sequence[Swap], now: datetime) -> list[bool]:
    """Apply `swaps` to `table` in the caller's transaction: whether each landed, in their order.

    Every swap with values sets the same columns (they go in one executemany statement)."""
    stamp = column_value(now)
    held = {
        r.agent_id: r.version
        for r in lock_rows(
            conn, table, table.c.agent_id, [s.agent_id for s in swaps], table.c.agent_id, table.c.version
        )
    }
    landed = [False] * len(swaps)
    written: set[str] = set()
    gone: list[str] = []
    new: dict[str, int] = {}
    changed: list[Swap] = []
    for i, swap in enumerate(swaps):
        if swap.agent_id in written:
            continue
        if swap.version == 0 and swap.agent_id not in held:
            if swap.values is not None:
                written.add(swap.agent_id)
                new[swap.agent_id] = i  # lands unless another writer inserts it first (below)
        elif swap.version != 0 and held.get(swap.agent_id) == swap.version:
            written.add(swap.agent_id)
            landed[i] = True
            if swap.values is None:
                gone.append(swap.agent_id)
            else:
                changed.append(swap)
    for chunk in chunks(sorted(gone)):
        conn.execute(table.delete().where(table.c.agent_id.in_(chunk)))
    if new:
        rows = [{"agent_id": a, **_row(swaps[new[a]], stamp)} for a in sorted(new)]
        inserted = conn.execute(insert_ignore_many(conn, table).returning(table.c.agent_id), rows)
        for (agent_id,) in inserted:
            landed[new[agent_id]] = True
    if changed:
        _update_many(conn, table, sorted(changed, key=lambda s: s.agent_id), stamp)
    return landed


def _update_many(conn: Connection, table: sa.Table, swaps: Sequence[Swap], stamp: Any) -> None:
    """UPDATE each swap's row WHERE agent_id and version are as read: one executemany."""
    columns = list(_row(swaps[0], stamp))
    if conn.dialect.name == "sqlite":
        # The statement written once and each value bound by the dialect's own processor, handed
        # to the driver's executemany: SQLAlchemy's per-row parameter work took 0.35 s of a 0.4 s
        # commit of 10,000 agents; the driver alone takes 0.05 s (bench/store_backends.py).
        quote = conn.dialect.identifier_preparer.quote
        processors = [table.c[c].type.dialect_impl(conn.dialect).bind_processor(conn.dialect) for c in columns]
        sets = ", ".join(f"{quote(c)} = ?" for c in columns)
        sql = f"UPDATE {quote(table.name)} SET {sets} WHERE agent_id = ? AND version = ?"
        rows = []
        for swap in swaps:
            row = _row(swap, stamp)
            values = [row[c] if p is None else p(row[c]) for c, p in zip(columns, processors, strict=True)]
            rows.append((*values, swap.agent_id, swap.version))
        conn.exec_driver_sql(sql, rows)
        return
    update = (
        table.update()
        .where(table.c.agent_id == sa.bindparam("b_id"), table.c.version == sa.bindparam("b_v"))
        .values({column: sa.bindparam(f"n_{column}") for column in columns})
    )
    conn.execute(
        update,
        [{"b_id": s.agent_id, "b_v": s.version, **{f"n_{k}": v for k, v in _row(s, stamp).items()}} for s in swaps],
    )


def _row(swap: Swap, stamp: Any) -> dict[str, Any]:
    """The columns a landed write sets (of a swap with values): its values, the next version, its stamp."""
    return {**(swap.values or {}), "version": swap.version + 1, "updated_at": stamp}
