"""Operator flows, for agents of every kind: pause, resume and the fleet's status. Run them from the
Prefect UI (deployments `pause-agent`, `resume-agent`, `fleet-status`: deployments/definitions.py)
or the `agentwatch` CLI.

Pause and resume write the record with compare-and-swap and publish the transition through the
outbox like the monitor does (an `agentwatch.agent.paused` event and an `agent-<id>` artifact
version); if the API fails them, the next monitor run publishes it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from agentwatch.maintenance import require_agent, set_paused, set_resumed
from agentwatch.registry import Registry
from agentwatch.settings import get_settings
from agentwatch.status import read_status
from agentwatch.store import CommitResult, StateStore
from flows.registry_block import load_fleet
from tasks.publishing import publish_pending
from tasks.recording import write_fleet_table


@flow(name="pause-agent", log_prints=False)
async def pause_agent(
    agent_id: str,
    until: datetime | None = None,
    sticky: bool = False,
    reason: str = "",
    registry_path: str = "fleet.yaml",
) -> dict[str, Any]:
    """Pause an agent: not probed, not alerted on, until resumed or `until` (UTC when naive).

    A heartbeat agent's beat ends a plain pause; a `sticky` pause ignores beats until resumed.

    Args:
        agent_id: The id of the agent to pause, as in the registry.
        until: When the pause ends by itself (UTC unless a time zone is given). Leave it unset (null) to pause until resumed.
        sticky: Also ignore the agent's heartbeats: only a resume (or until) ends the pause.
        reason: Why the agent is paused, shown in the status table and the transition (optional).
        registry_path: The registry YAML file the agent is in.

    Returns the agent's status row.
    """
    if until is not None and until.tzinfo is None:
        until = until.replace(tzinfo=UTC)
    registry = await load_fleet(registry_path)
    require_agent(registry, agent_id, registry_path)
    return await _operate(
        registry,
        agent_id,
        lambda store, now: set_paused(store, agent_id, now, until=until, sticky=sticky, reason=reason),
    )


@flow(name="resume-agent", log_prints=False)
async def resume_agent(agent_id: str, registry_path: str = "fleet.yaml") -> dict[str, Any]:
    """End an agent's pause; its counters and timers restart.

    Args:
        agent_id: The id of the paused agent, as in the registry.
        registry_path: The registry YAML file the agent is in.

    Returns the agent's status row.
    """
    registry = await load_fleet(registry_path)
    require_agent(registry, agent_id, registry_path)
    return await _operate(registry, agent_id, lambda store, now: set_resumed(store, agent_id, now))


@flow(name="fleet-status", log_prints=False)
async def fleet_status(registry_path: str = "fleet.yaml") -> list[dict[str, Any]]:
    """Every agent's state, since, last beat and seconds since, missed beats, pause and reason,
    also written as the `agentwatch-status` table artifact.

    Args:
        registry_path: The registry YAML file whose agents are listed.
    """
    registry = await load_fleet(registry_path)
    async with StateStore(get_settings().resolved_database_url()) as store:
        rows = await read_status(store, registry, datetime.now(UTC))
    await write_fleet_table(rows, key="agentwatch-status")
    return rows


Operation = Callable[[StateStore, datetime], Awaitable[CommitResult]]


async def _operate(registry: Registry, agent_id: str, operation: Operation) -> dict[str, Any]:
    logger = get_run_logger()
    async with StateStore(get_settings().resolved_database_url()) as store:
        result = await operation(store, datetime.now(UTC))
        row = (await read_status(store, registry, datetime.now(UTC), [agent_id]))[0]
        for t in result.transitions:
            logger.info("%s: %s -> %s (%s)", t.agent_id, t.from_state.value, t.to_state.value, t.reason)
        if not result.saved:
            logger.info("%s: nothing to change", agent_id)
        report = await publish_pending(store, registry, run_url=flow_run.ui_url)
    if report.error:
        logger.warning("The change is stored; the next monitor run publishes it (%s)", report.error)
    return row
