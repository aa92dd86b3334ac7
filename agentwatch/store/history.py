"""Reads of the transition log for uptime and flapping, and the flap memory.

Bounded reads: the fleet's transitions over a window come back in one statement whatever the number
of agents, and each agent's last transition before the window (the state it was in when the window
began) from a second statement in the same round trip. Two indexes defined here serve them, so
neither reads the log's older history: (at) for the window, (agent_id, at) for one seek per agent.
They are created with the table in a new store, and once, on first read, in an older one.

`flap_state` holds one row per agent in a flapping episode (agentwatch.flapping), written only by the
monitor's alert step with compare-and-swap on `version`, like `alert_incidents`. A table of its own
rather than columns on the incident row: a flapping agent need not be down (an incident exists only
while it is), the incident row is deleted when the agent turns healthy while the episode goes on,
and a new table needs no migration of an existing store and no change to the incident code.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Collection, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..errors import StoreError
from ..flapping import Change, FlapChange, FlapMemory
from ..models import AgentState
from ..uptime import Mark
from .base import StoreBase, column_value, drop_except, insert_ignore, utc
from .schema import TZ, agent_state, metadata, transitions

__all__ = ["HistoryTable", "flap_state"]

_STATES = {s.value: s for s in AgentState}
_CHUNK = 500  # IN lists have limits (SQLite: 32,766 variables; asyncpg: 32,767)
_INDEXES = (
    sa.Index("ix_transitions_at", transitions.c.at),  # the fleet's rows of a window
    sa.Index("ix_transitions_agent_id_at", transitions.c.agent_id, transitions.c.at),  # one agent's, or its last before
)

flap_state = sa.Table(
    "flap_state",
    metadata,
    sa.Column("agent_id", sa.String(63), primary_key=True),
    sa.Column("since", TZ, nullable=False),
    sa.Column("changes", sa.Integer, nullable=False),
    sa.Column("notified_at", TZ),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("updated_at", TZ, nullable=False),
)


class HistoryTable(StoreBase):
    _history_indexes = False

    async def state_marks(self, since: datetime, agent_ids: Collection[str] | None = None) -> dict[str, list[Mark]]:
        """Each agent's transitions (at, state entered) from `since` on, after its last transition
        before `since` when it has one (the state it was in then); oldest first (agentwatch.uptime).

        Every agent the store has a record of, or those asked for (past a few hundred ids the whole
        fleet is read and filtered here). Two statements in one round trip whatever the fleet's
        size, each served by an index: the window's rows by time, and per agent one seek for the
        row before it. Neither reads the log's older history."""
        await self._ensure_history_indexes()
        start = column_value(since)
        wanted = set(agent_ids) if agent_ids is not None else None
        chunks: list[list[str] | None] = [None]
        if wanted is not None and len(wanted) <= _CHUNK:
            chunks = [sorted(wanted)]
        t, a = transitions, agent_state

        def read(conn: Connection) -> dict[str, list[Mark]]:
            marks: dict[str, list[Mark]] = {}
            for chunk in chunks:
                last_before = (
                    sa.select(t.c.id)
                    .where(t.c.agent_id == a.c.agent_id, t.c.at < start)
                    .order_by(t.c.at.desc(), t.c.id.desc())
                    .limit(1)
                    .correlate(a)
                    .scalar_subquery()
                )
                heads = sa.select(last_before).select_from(a)
                window = sa.select(t.c.agent_id, t.c.at, t.c.to_state).where(t.c.at >= start)
                if chunk is not None:
                    heads = heads.where(a.c.agent_id.in_(chunk))
                    window = window.where(t.c.agent_id.in_(chunk))
                before = sa.select(t.c.agent_id, t.c.at, t.c.to_state).where(t.c.id.in_(heads))
                # The row before the window first, then the window's in log order (time, then id).
                for query in (before, window.order_by(t.c.at, t.c.id)):
                    for agent_id, at, state in conn.execute(query):
                        if wanted is None or agent_id in wanted:
                            mark = (at if at.tzinfo else at.replace(tzinfo=UTC), _STATES[state])
                            marks.setdefault(agent_id, []).append(mark)
            return marks

        return await self._run(read)

    async def recent_changes(self, agent_ids: Iterable[str], since: datetime) -> dict[str, list[Change]]:
        """The transitions (at, from, to) of these agents from `since` on, oldest first
        (agentwatch.flapping): a handful of rows per agent, read through the (agent_id, at) index."""
        await self._ensure_history_indexes()
        wanted = sorted(set(agent_ids))
        start = column_value(since)
        t = transitions

        def read(conn: Connection) -> dict[str, list[Change]]:
            out: dict[str, list[Change]] = {}
            for first in range(0, len(wanted), _CHUNK):
                query = (
                    sa.select(t.c.agent_id, t.c.at, t.c.from_state, t.c.to_state)
                    .where(t.c.agent_id.in_(wanted[first : first + _CHUNK]), t.c.at >= start)
                    .order_by(t.c.at, t.c.id)
                )
                for r in conn.execute(query):
                    change = (utc(r.at) or r.at, AgentState(r.from_state), AgentState(r.to_state))
                    out.setdefault(r.agent_id, []).append(change)
            return out

        return await self._run(read) if wanted else {}

    async def load_flaps(self) -> dict[str, FlapMemory]:
        """The flapping episodes under way, by agent id."""
        return await self._run(lambda conn: {r.agent_id: _memory(r) for r in conn.execute(sa.select(flap_state))})

    async def save_flaps(self, changes: Sequence[FlapChange]) -> list[str]:
        """Apply flap changes with compare-and-swap on the version each was read at (0 = new), in
        one transaction. Returns the agent ids written; the others lost to another writer."""
        now = datetime.now(UTC)

        def write(conn: Connection) -> list[str]:
            won = []
            for change in changes:
                where = (flap_state.c.agent_id == change.agent_id, flap_state.c.version == change.version)
                stmt: Any
                if change.after is None:
                    stmt = flap_state.delete().where(*where)
                else:
                    values = {
                        "since": column_value(change.after.since),
                        "changes": change.after.changes,
                        "notified_at": column_value(change.after.notified_at),
                        "version": change.version + 1,
                        "updated_at": now,
                    }
                    if change.version == 0:
                        stmt = insert_ignore(conn, flap_state, {"agent_id": change.agent_id, **values})
                    else:
                        stmt = flap_state.update().where(*where).values(**values)
                if conn.execute(stmt).rowcount == 1:
                    won.append(change.agent_id)
            return won

        return await self._run(write, begin=True) if changes else []

    async def drop_missing_flaps(self, keep: Iterable[str]) -> list[str]:
        """Forget the episodes of agents whose record is gone (they left the fleet)."""
        return await self._run(lambda conn: drop_except(conn, flap_state, keep), begin=True)

    async def _ensure_history_indexes(self) -> None:
        # A store created before these indexes existed gets them once; create_all makes them with
        # the table in a new one.
        if self._history_indexes:
            return
        for index in _INDEXES:
            # Another process may be creating it, or this one may have no right to: the reads work
            # without it, slower.
            with contextlib.suppress(StoreError):
                await self._run(functools.partial(index.create, checkfirst=True), begin=True)
        self._history_indexes = True


def _memory(row: Any) -> FlapMemory:
    return FlapMemory(
        agent_id=row.agent_id,
        since=utc(row.since) or row.since,
        changes=row.changes,
        notified_at=utc(row.notified_at),
        version=row.version,
    )
