"""Heartbeats: written only by the heartbeat server (merged per flush window), read by the monitor.
Kept apart from agent_state so the monitor's compare-and-swap writes never clobber a beat."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..beats import Beat
from ..errors import StoreError
from .base import StoreBase, column_value, drop_except, rows_for, utc
from .schema import heartbeats

__all__ = ["BeatsTable"]


class BeatsTable(StoreBase):
    async def record_beats(self, beats: Iterable[Beat]) -> int:
        """Merge heartbeat deltas (a flush window's pings, per agent) into their rows, in one
        transaction. Returns the number of agents written."""
        merged: dict[str, Beat] = {}
        for beat in beats:
            merged[beat.agent_id] = merged[beat.agent_id].merged(beat) if beat.agent_id in merged else beat
        rows = [_beat_values(merged[agent_id]) for agent_id in sorted(merged)]  # rows lock in this order
        if not rows:
            return 0

        def write(conn: Connection) -> int:
            conn.execute(_beat_upsert(conn), rows)
            return len(rows)

        return await self._run(write, begin=True)

    async def load_beats(self, agent_ids: Iterable[str] | None = None) -> dict[str, Beat]:
        """Heartbeat records by agent id (all, or those asked for); agents never heard from are absent."""
        ids = list(agent_ids) if agent_ids is not None else None
        return await self._run(lambda conn: {r.agent_id: _beat(r) for r in rows_for(conn, heartbeats, ids)})

    async def drop_missing_beats(self, keep: Iterable[str], among: Callable[[str], bool] | None = None) -> list[str]:
        """Forget the heartbeat records of agents no longer in the fleet (`among`: see drop_missing)."""
        return await self._run(lambda conn: drop_except(conn, heartbeats, keep, among), begin=True)


def _beat_values(beat: Beat) -> dict[str, Any]:
    return {
        "agent_id": beat.agent_id,
        "last_beat_at": column_value(beat.last_beat_at),
        "last_start_at": column_value(beat.last_start_at),
        "last_fail_at": column_value(beat.last_fail_at),
        "last_exit_code": beat.last_exit_code,
        "beats": beat.beats,
        "updated_at": column_value(beat.updated_at or datetime.now(UTC)),
    }


def _beat_upsert(conn: Connection) -> Any:
    """INSERT ... ON CONFLICT DO UPDATE with the merge rules of `Beat.merged`."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    else:
        raise StoreError(f"heartbeats need SQLite or PostgreSQL, not {conn.dialect.name}")
    stmt = insert(heartbeats)
    new, old = stmt.excluded, heartbeats.c
    sets_exit_code = sa.or_(new.last_fail_at.is_not(None), new.last_exit_code.is_not(None))
    return stmt.on_conflict_do_update(
        index_elements=["agent_id"],
        set_={
            "last_beat_at": sa.func.coalesce(new.last_beat_at, old.last_beat_at),
            "last_start_at": sa.func.coalesce(new.last_start_at, old.last_start_at),
            "last_fail_at": sa.func.coalesce(new.last_fail_at, old.last_fail_at),
            "last_exit_code": sa.case((sets_exit_code, new.last_exit_code), else_=old.last_exit_code),
            "beats": old.beats + new.beats,
            "updated_at": new.updated_at,
        },
    )


def _beat(row: Any) -> Beat:
    return Beat(
        agent_id=row.agent_id,
        last_beat_at=utc(row.last_beat_at),
        last_start_at=utc(row.last_start_at),
        last_fail_at=utc(row.last_fail_at),
        last_exit_code=row.last_exit_code,
        beats=row.beats,
        updated_at=utc(row.updated_at),
    )
