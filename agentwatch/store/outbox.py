"""The transition log as an outbox. A row is written with the state change that caused it (see
agents.py) and carries its delivery state: `published_at` (its event and artifact version are on
the Prefect server) and `alerted_at` (the alert step has decided on it).

A publisher claims rows with compare-and-swap (`claimed_by` / `claimed_until`, a lease), publishes
them in order and marks them. A publisher that dies holding a claim leaves it to expire, and the
next run takes the rows again; `attempts` > 1 tells it a previous try may have got halfway.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..models import AgentState
from ..outbox import OutboxRow, costs_a_publish
from .agents import transition_of
from .base import StoreBase, chunks, column_value, lock_in_order, utc, write_lock
from .schema import transitions

__all__ = ["OutboxCounts", "OutboxTable"]

_PAGE = 1000  # candidate rows read at a time


@dataclass(frozen=True, slots=True)
class OutboxCounts:
    unpublished: int
    unalerted: int


class OutboxTable(StoreBase):
    async def claim_unpublished(
        self, claimer: str, *, now: datetime, lease: timedelta, max_costly: int, max_rows: int = 50_000
    ) -> list[OutboxRow]:
        """Claim the oldest unpublished rows nobody holds, in log order, until `max_costly` rows
        that need an event and an artifact of their own (first sights of healthy agents are cheap:
        they are folded into one fleet event) or `max_rows` in all. `claimer` must be unique to the
        caller: the rows it won are those that carry it afterwards."""
        if not 0 < len(claimer) <= transitions.c.claimed_by.type.length:  # type: ignore[attr-defined]
            # PostgreSQL would refuse a longer one at the UPDATE; SQLite would keep it: refuse on both.
            raise ValueError(f"a claimer is 1 to 64 characters, not {claimer!r}")
        now = column_value(now)
        until = now + lease
        free = sa.and_(
            transitions.c.published_at.is_(None),
            sa.or_(transitions.c.claimed_until.is_(None), transitions.c.claimed_until < now),
        )

        def claim(conn: Connection) -> list[OutboxRow]:
            # The candidates are chosen a page at a time, then locked: on SQLite all of them, under
            # the write lock taken first (a claimer beside this one sees its claims); on PostgreSQL
            # those no other claimer is taking at this moment (FOR UPDATE SKIP LOCKED: no waiting,
            # no deadlock), and the budget those others took goes to the next rows. Either way no
            # two claimers take a row, and neither comes away empty-handed while free rows remain.
            write_lock(conn, transitions)
            wanted: list[int] = []
            costly, after = 0, 0
            while len(wanted) < max_rows:
                limit = min(_PAGE, max_rows - len(wanted))
                page = conn.execute(
                    sa.select(transitions.c.id, transitions.c.from_state, transitions.c.to_state)
                    .where(free, transitions.c.id > after)
                    .order_by(transitions.c.id)
                    .limit(limit)
                ).all()
                cost_of: dict[int, int] = {}
                budget = costly
                for row in page:
                    cost = costs_a_publish(AgentState(row.from_state), AgentState(row.to_state))
                    if budget + cost > max_costly:
                        break
                    budget += cost
                    cost_of[row.id] = cost
                if not cost_of:
                    break
                # By id range, not an IN list: the primary key's index serves it whatever the
                # planner's statistics (a fresh log's are empty until autovacuum analyzes it).
                got = conn.execute(
                    sa.select(transitions.c.id)
                    .where(transitions.c.id.between(min(cost_of), max(cost_of)), free)
                    .order_by(transitions.c.id)
                    .with_for_update(skip_locked=True)
                ).scalars()
                for row_id in got:
                    if row_id in cost_of:  # (a row freed since the page was read waits for the next claim)
                        wanted.append(row_id)
                        costly += cost_of[row_id]
                if len(cost_of) == len(page) < limit:
                    break  # the log has no more free rows
                after = max(cost_of)
            for chunk in chunks(wanted):
                conn.execute(
                    transitions.update()
                    .where(_ids(chunk), free)
                    .values(claimed_by=claimer, claimed_until=until, attempts=transitions.c.attempts + 1)
                )
            won: list[OutboxRow] = []
            for chunk in chunks(wanted):
                query = sa.select(transitions).where(_ids(chunk), transitions.c.claimed_by == claimer)
                won.extend(_row(r) for r in conn.execute(query))
            return sorted(won, key=lambda r: r.id)

        return await self._run(claim, begin=True)

    async def mark_published(self, claimer: str, ids: Iterable[int], now: datetime) -> int:
        """Mark rows this claimer holds as published. Returns how many were marked."""
        return await self._update_held(claimer, ids, published_at=column_value(now), claimed_until=None)

    async def release_claims(self, claimer: str, ids: Iterable[int]) -> int:
        """Give back rows this claimer could not publish, so the next run takes them at once."""
        return await self._update_held(claimer, ids, claimed_until=None)

    async def _update_held(self, claimer: str, ids: Iterable[int], **values: Any) -> int:
        wanted = list(ids)

        def write(conn: Connection) -> int:
            # No lock order needed: these rows are unpublished and this claimer's. A claimer that
            # takes them after the lease passes over locked rows (SKIP LOCKED), and the alert step
            # writes only published rows, so no one waits on this write while it waits on them.
            count = 0
            for chunk in chunks(sorted(wanted)):
                stmt = (
                    transitions.update()
                    .where(
                        _ids(chunk),
                        transitions.c.claimed_by == claimer,
                        transitions.c.published_at.is_(None),
                    )
                    .values(**values)
                )
                count += conn.execute(stmt).rowcount
            return count

        return await self._run(write, begin=True) if wanted else 0

    async def unalerted(self, limit: int = 10_000) -> list[OutboxRow]:
        """Published rows the alert step has not decided on yet, oldest first."""

        def read(conn: Connection) -> list[OutboxRow]:
            query = (
                sa.select(transitions)
                .where(transitions.c.published_at.is_not(None), transitions.c.alerted_at.is_(None))
                .order_by(transitions.c.id)
                .limit(limit)
            )
            return [_row(r) for r in conn.execute(query)]

        return await self._run(read)

    async def mark_alerted(self, ids: Sequence[int], now: datetime) -> int:
        """Mark rows decided on by the alert step (when no incident write goes with them)."""
        return await self._run(lambda conn: mark_alerted_in(conn, ids, now), begin=True) if ids else 0

    async def outbox_counts(self) -> OutboxCounts:
        """How many rows wait to be published, and to be alerted on."""

        def read(conn: Connection) -> OutboxCounts:
            unpublished = conn.execute(
                sa.select(sa.func.count()).select_from(transitions).where(transitions.c.published_at.is_(None))
            ).scalar_one()
            unalerted = conn.execute(
                sa.select(sa.func.count()).select_from(transitions).where(transitions.c.alerted_at.is_(None))
            ).scalar_one()
            return OutboxCounts(int(unpublished), int(unalerted))

        return await self._run(read)


def mark_alerted_in(conn: Connection, ids: Sequence[int], now: datetime) -> int:
    """Inside a transaction of the caller's (the incident writes that go with the decision)."""
    count = 0
    for chunk in chunks(lock_in_order(conn, transitions, transitions.c.id, ids)):
        stmt = (
            transitions.update()
            .where(_ids(chunk), transitions.c.alerted_at.is_(None))
            .values(alerted_at=column_value(now))
        )
        count += conn.execute(stmt).rowcount
    return count


def _ids(chunk: list[int]) -> Any:
    """`id IN chunk` (ascending ids), with the range around it so that PostgreSQL reads it through
    the primary key even while a fresh log has no statistics (it would scan an index of
    `published_at` and filter every unpublished row by the list)."""
    return sa.and_(transitions.c.id.between(chunk[0], chunk[-1]), transitions.c.id.in_(chunk))


def _row(r: Any) -> OutboxRow:
    return OutboxRow(
        id=r.id,
        uid=r.uid or f"legacy-{r.id}",
        seq=r.seq,
        transition=transition_of(r),
        run_id=r.run_id,
        attempts=r.attempts or 0,
        published_at=utc(r.published_at),
        alerted_at=utc(r.alerted_at),
    )
