"""Reads of the transition log for uptime and flapping, and the flap memory.

Bounded reads: the fleet's transitions over a window come back in one statement whatever the number
of agents, and each agent's last transition before the window (the state it was in when the window
began) from a second statement in the same round trip. Two indexes of the log (schema.py) serve
them, so neither reads the log's older history: (at) for the window, (agent_id, at) for one seek per
agent.

`flap_state` (schema.py) holds one row per agent in a flapping episode (agentwatch.flapping).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..flapping import FlapChange, FlapMemory, Flip
from ..models import AgentState
from ..uptime import Mark
from .base import CHUNK, StoreBase, chunks, column_value, drop_except, utc
from .cas import Swap, compare_and_swap
from .schema import agent_state, flap_state, transitions

__all__ = ["HistoryTable"]

_STATES = {s.value: s for s in AgentState}


class HistoryTable(StoreBase):
    async def state_marks(self, since: datetime, agent_ids: Collection[str] | None = None) -> dict[str, list[Mark]]:
        """Each agent's transitions (at, state entered) from `since` on, after its last transition
        before `since` when it has one (the state it was in then); oldest first (agentwatch.uptime).

        Every agent the store has a record of, or those asked for (past a few hundred ids the whole
        fleet is read and filtered here). Two statements in one round trip whatever the fleet's
        size, each served by an index: the window's rows by time, and per agent one seek for the
        row before it. Neither reads the log's older history."""
        start = column_value(since)
        wanted = set(agent_ids) if agent_ids is not None else None
        chunks: list[list[str] | None] = [None]
        if wanted is not None and len(wanted) <= CHUNK:
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

    async def recent_changes(self, agent_ids: Iterable[str], since: datetime) -> dict[str, list[Flip]]:
        """The transitions (at, from, to) of these agents from `since` on, oldest first
        (agentwatch.flapping): a handful of rows per agent, read through the (agent_id, at) index."""
        wanted = sorted(set(agent_ids))
        start = column_value(since)
        t = transitions

        def read(conn: Connection) -> dict[str, list[Flip]]:
            out: dict[str, list[Flip]] = {}
            for chunk in chunks(wanted):
                query = (
                    sa.select(t.c.agent_id, t.c.at, t.c.from_state, t.c.to_state)
                    .where(t.c.agent_id.in_(chunk), t.c.at >= start)
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
        swaps = [Swap(change.agent_id, change.version, _flap_values(change.after)) for change in changes]

        def write(conn: Connection) -> list[str]:
            landed = compare_and_swap(conn, flap_state, swaps, now)
            return [change.agent_id for change, won in zip(changes, landed, strict=True) if won]

        return await self._run(write, begin=True) if changes else []

    async def drop_missing_flaps(self, keep: Iterable[str]) -> list[str]:
        """Forget the episodes of agents whose record is gone (they left the fleet)."""
        return await self._run(lambda conn: drop_except(conn, flap_state, keep), begin=True)


def _flap_values(after: FlapMemory | None) -> dict[str, Any] | None:
    if after is None:
        return None  # the episode is over: delete its row
    return {
        "since": column_value(after.since),
        "changes": after.changes,
        "notified_at": column_value(after.notified_at),
    }


def _memory(row: Any) -> FlapMemory:
    return FlapMemory(
        agent_id=row.agent_id,
        since=utc(row.since) or row.since,
        changes=row.changes,
        notified_at=utc(row.notified_at),
        version=row.version,
    )
