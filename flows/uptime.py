"""The daily uptime report: every agent's availability over 24 h, 7 d and 30 d, from the state
store's transition log, as the `agentwatch-uptime` table artifact (one version per run; its
description has the fleet's figures). Deployment `uptime-report` (deployments/definitions.py),
daily; also from the UI (Run).

The agents are the registry's plus the label-registered Docker agents the monitor last saw.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import acreate_table_artifact

from agentwatch.docker.labels import remembered_agents
from agentwatch.settings import get_settings
from agentwatch.status import read_uptime
from agentwatch.store import StateStore
from agentwatch.uptime import report_table
from flows.registry_block import load_fleet

__all__ = ["UPTIME_ARTIFACT", "uptime_report"]

UPTIME_ARTIFACT = "agentwatch-uptime"


@flow(name="uptime-report", log_prints=False)
async def uptime_report(registry_path: str = "fleet.yaml") -> list[dict[str, Any]]:
    """Every agent's uptime over 24 h, 7 d and 30 d (time healthy / time monitored; paused and
    unmanaged time left out), written as the `agentwatch-uptime` table artifact, worst first.

    Args:
        registry_path: The registry YAML file.

    Returns one row per agent: id, name, state, percents and the seconds behind them.
    """
    logger = get_run_logger()
    settings = get_settings()
    registry = await load_fleet(registry_path)
    now = datetime.now(UTC)
    async with StateStore(settings.resolved_database_url()) as store:
        fleet, problems = remembered_agents(registry, await store.remembered_label_agents())
        for problem in problems:
            logger.warning("%s", problem)
        rows = await read_uptime(store, fleet, now)
    table, description = report_table(rows, now, settings.fleet_table_rows)
    await acreate_table_artifact(table=table, key=UPTIME_ARTIFACT, description=description)
    logger.info("%s", description)
    return rows
