"""The state store: each agent's current record and the transition log, in SQL, plus the small
tables of the heartbeat server, reconcile and the alert step.

SQLite (aiosqlite) by default, PostgreSQL (asyncpg) by URL for several workers. Every write that
decides something (a transition, a restart, an alert) is compare-and-swap on a per-row version, so
two overlapping runs never do it twice. The schema is created on first use.
"""

from __future__ import annotations

from .agents import AgentsTable, CommitResult
from .base import async_url
from .beats import BeatsTable
from .budgets import BudgetsTable
from .incidents import IncidentsTable

__all__ = ["CommitResult", "StateStore", "async_url"]


class StateStore(AgentsTable, BeatsTable, BudgetsTable, IncidentsTable):
    """Async access to everything agentwatch keeps between runs. Use as `async with StateStore(url)`."""
