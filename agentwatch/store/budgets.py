"""Restart budgets: written only by reconcile, one row per agent whose container it restarted (or
refused to). Compare-and-swap on `version` makes two overlapping reconcile runs restart once."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Connection

from ..docker.budget import RestartBudget
from .base import StoreBase, column_value, drop_except, rows_for, utc
from .cas import Swap, compare_and_swap
from .schema import restart_budget

__all__ = ["BudgetsTable"]


class BudgetsTable(StoreBase):
    async def load_restart_budgets(self, agent_ids: Iterable[str] | None = None) -> dict[str, RestartBudget]:
        """Restart budgets by agent id (all, or those asked for); agents never restarted are absent."""
        ids = list(agent_ids) if agent_ids is not None else None
        return await self._run(lambda conn: {r.agent_id: _budget(r) for r in rows_for(conn, restart_budget, ids)})

    async def save_restart_budget(self, budget: RestartBudget) -> RestartBudget | None:
        """Write a budget with compare-and-swap on the version it was read at (0 = new).

        Returns the saved budget (new version), or None when another writer changed it first.
        """
        values = {
            "restarts": json.dumps([t.isoformat() for t in budget.restarts]),
            "exhausted_at": column_value(budget.exhausted_at),
            "retry_at": column_value(budget.retry_at),
        }
        swap = Swap(budget.agent_id, budget.version, values)
        now = datetime.now(UTC)

        def write(conn: Connection) -> bool:
            return compare_and_swap(conn, restart_budget, [swap], now)[0]

        saved = await self._run(write, begin=True)
        return dataclasses.replace(budget, version=budget.version + 1) if saved else None

    async def drop_missing_restart_budgets(self, keep: Iterable[str]) -> list[str]:
        """Forget the restart budgets of agents no longer in the fleet."""
        return await self._run(lambda conn: drop_except(conn, restart_budget, keep), begin=True)


def _budget(row: Any) -> RestartBudget:
    restarts = tuple(datetime.fromisoformat(t).astimezone(UTC) for t in json.loads(row.restarts or "[]"))
    return RestartBudget(
        agent_id=row.agent_id,
        restarts=restarts,
        exhausted_at=utc(row.exhausted_at),
        retry_at=utc(row.retry_at),
        version=row.version,
    )
