"""Alert incidents: written only by the monitor's alert step, one row per agent that is down and
not yet healthy again. Compare-and-swap on `version` makes two overlapping runs alert once."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..alerts.incidents import Incident, IncidentChange
from ..models import AgentState
from .base import StoreBase, column_value, drop_except, utc
from .cas import Swap, compare_and_swap
from .outbox import mark_alerted_in
from .schema import alert_incidents

__all__ = ["IncidentsTable"]


class IncidentsTable(StoreBase):
    async def load_incidents(self) -> dict[str, Incident]:
        """Open alert incidents by agent id (see agentwatch.alerts.incidents)."""
        return await self._run(
            lambda conn: {r.agent_id: _incident(r) for r in conn.execute(sa.select(alert_incidents))}
        )

    async def save_incidents(
        self, changes: Sequence[IncidentChange], alerted: Sequence[int] = (), now: datetime | None = None
    ) -> list[str]:
        """Apply incident changes with compare-and-swap on the version each was read at (0 = new),
        in one transaction, and mark the transition rows `alerted` (the decision they led to is
        this write). Returns the agent ids written; the others lost to another writer."""
        marked_at = now or datetime.now(UTC)
        now = datetime.now(UTC)
        swaps = [Swap(change.agent_id, change.version, _incident_values(change.after)) for change in changes]

        def write(conn: Connection) -> list[str]:
            landed = compare_and_swap(conn, alert_incidents, swaps, now)
            mark_alerted_in(conn, alerted, marked_at)
            return [change.agent_id for change, won in zip(changes, landed, strict=True) if won]

        return await self._run(write, begin=True)

    async def drop_missing_incidents(self, keep: Iterable[str]) -> list[str]:
        """Forget the incidents of agents whose record is gone (they left the fleet)."""
        return await self._run(lambda conn: drop_except(conn, alert_incidents, keep), begin=True)


def _incident_values(inc: Incident | None) -> dict[str, Any] | None:
    if inc is None:
        return None  # the incident is closed: delete its row
    return {
        "opened_at": column_value(inc.opened_at),
        "state": inc.state.value,
        "reason": inc.reason,
        "notified_at": column_value(inc.notified_at),
        "reminders": inc.reminders,
    }


def _incident(row: Any) -> Incident:
    return Incident(
        agent_id=row.agent_id,
        opened_at=utc(row.opened_at) or row.opened_at,
        state=AgentState(row.state),
        reason=row.reason or "",
        notified_at=utc(row.notified_at),
        reminders=row.reminders,
        version=row.version,
    )
