"""The fleet table artifact: one table per run (`agentwatch-fleet`, or `agentwatch-status`).

Transitions reach events and `agent-<id>` artifacts through the outbox (tasks/publishing.py)."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import acreate_table_artifact
from prefect.cache_policies import NONE

from agentwatch.cycle import FleetRow
from agentwatch.render import fleet_table
from agentwatch.settings import get_settings


@task(name="write-fleet-table", cache_policy=NONE)
async def write_fleet_table(rows: list[FleetRow], key: str = "agentwatch-fleet", cap: int | None = None) -> None:
    """The fleet as one table artifact per run: every agent, or past `cap` the worst first."""
    shown, description = fleet_table(rows, cap if cap is not None else get_settings().fleet_table_rows)
    await acreate_table_artifact(table=shown, key=key, description=description)
