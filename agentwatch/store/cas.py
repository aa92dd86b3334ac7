"""Compare-and-swap on a per-row version: the one way a versioned row is written.

The tables whose writes decide something (agent records, restart budgets, flap episodes, alert
incidents) keep a `version` on each agent's row. A writer hands back what it read at the version
it read it (0: there was no row), and its write lands only where the row is still at that version:

- new (version 0): an INSERT that does nothing when the row exists (another writer was first);
- change: UPDATE ... WHERE agent_id = :id AND version = :read, setting version + 1;
- removal (no values): DELETE ... WHERE agent_id = :id AND version = :read.

A write that lands sets the version to read + 1 and stamps `updated_at` with the writer's instant.
Inserts and updates go as one executemany statement each (a statement per row cost 11 s of a
10,000-agent cycle on SQLite: one round trip to the driver's thread each; bench/README.md), whose
rowcount is a sum, not per row; so the rows are read back, in the same transaction: a row at
read + 1 carrying this write's stamp is one this write made, any other row lost to another writer.
A deleted row leaves nothing to read back: deletes go one statement each, judged by rowcount.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .base import column_value, insert_ignore_many, rows_for, utc

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
    deleted: dict[int, bool] = {}
    for i, swap in enumerate(swaps):
        if swap.values is None:
            delete = table.delete().where(table.c.agent_id == swap.agent_id, table.c.version == swap.version)
            deleted[i] = conn.execute(delete).rowcount == 1
    writes = [swap for swap in swaps if swap.values is not None]
    new = [{"agent_id": s.agent_id, **_row(s, stamp)} for s in writes if s.version == 0]
    if new:
        conn.execute(insert_ignore_many(conn, table), new)
    changed = [s for s in writes if s.version != 0]
    if changed:
        update = (
            table.update()
            .where(table.c.agent_id == sa.bindparam("b_id"), table.c.version == sa.bindparam("b_v"))
            .values({column: sa.bindparam(f"n_{column}") for column in _row(changed[0], stamp)})
        )
        conn.execute(
            update,
            [
                {"b_id": s.agent_id, "b_v": s.version, **{f"n_{k}": v for k, v in _row(s, stamp).items()}}
                for s in changed
            ],
        )
    # The rows this write landed carry its version and its stamp; a row another writer changed
    # first kept theirs (the WHERE did not match, or the insert was ignored).
    landed = {
        (row.agent_id, row.version)
        for row in rows_for(conn, table, [s.agent_id for s in writes])
        if utc(row.updated_at) == stamp
    }
    return [deleted[i] if i in deleted else (s.agent_id, s.version + 1) in landed for i, s in enumerate(swaps)]


def _row(swap: Swap, stamp: Any) -> dict[str, Any]:
    """The columns a landed write sets (of a swap with values): its values, the next version, its stamp."""
    return {**(swap.values or {}), "version": swap.version + 1, "updated_at": stamp}
