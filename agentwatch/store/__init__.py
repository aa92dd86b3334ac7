"""The state store: each agent's current record and the transition log, in SQL, plus the small
tables of the heartbeat server, reconcile and the alert step.

SQLite (aiosqlite) by default, PostgreSQL (asyncpg) by URL for several workers. Every write that
decides something (a transition, a restart, an alert) is compare-and-swap on a per-row version, so
two overlapping runs never do it twice (one helper for all of them: agentwatch.store.cas). The schema is created on first use.
Writes lock what they decide on first, in key order (base.lock_rows), so writers on PostgreSQL queue
rather than deadlock; both backends run the same tests (tests/conftest.py: `store_url`).
"""

from __future__ import annotations

from .agents import AgentsTable, CommitResult
from .base import async_url
from .beats import BeatsTable
from .budgets import BudgetsTable
from .history import HistoryTable
from .identity import IdentityTable
from .incidents import IncidentsTable
from .labels import LabelAgentsTable
from .outbox import OutboxCounts, OutboxTable

__all__ = ["CommitResult", "OutboxCounts", "StateStore", "async_url"]


class StateStore(
    AgentsTable, BeatsTable, BudgetsTable, HistoryTable, IdentityTable, IncidentsTable, LabelAgentsTable, OutboxTable
):
    """Async access to everything agentwatch keeps between runs. Use as `async with StateStore(url)`."""
