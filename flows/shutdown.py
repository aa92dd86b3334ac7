"""The shutdown flow: stop every managed container gracefully and record its agent as stopped.

Its own deployment `shutdown` (deployments/definitions.py; started by hand from the Prefect UI)
and `agentwatch shutdown`. With `leave_running` (or AGENTWATCH_SHUTDOWN_LEAVE_RUNNING=true) it
stops nothing and records that, for a monitor host that goes down while the agents it watches
carry on.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from prefect import flow, get_run_logger
from prefect.artifacts import acreate_markdown_artifact
from prefect.events import emit_event
from prefect.runtime import flow_run

from agentwatch.docker import DockerEngine
from agentwatch.docker.report import shutdown_markdown
from agentwatch.docker.shutdown import ShutdownOptions, plan_shutdown, record_stops
from agentwatch.durations import format_duration, parse_duration
from agentwatch.events import FLEET_SHUTDOWN, fleet_resource
from agentwatch.settings import get_settings
from agentwatch.store import StateStore
from flows.registry_block import load_fleet
from tasks.containers import not_run, observe_containers, quietly, stop_containers
from tasks.params import unvisited
from tasks.publishing import publish_pending

ARTIFACT_KEY = "agentwatch-shutdown"


@flow(name="shutdown-fleet", log_prints=False)
async def shutdown_fleet(
    registry_path: str = "fleet.yaml",
    leave_running: bool = False,
    stop_timeout: str = "10s",
    agent_ids: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Stop every container labelled agentwatch.managed=true, all at once, and record its agent stopped.

    Args:
        registry_path: The registry YAML file. With AGENTWATCH_DOCKER_LABELS on, containers labelled agentwatch.agent=AGENT_ID join the fleet too.
        leave_running: Stop nothing, only record that the fleet was left running.
        stop_timeout: Time between SIGTERM and SIGKILL for each container (e.g. 10s, 1m).
        agent_ids: Only the containers of these agents (a list of agent ids). Leave it unset (null) to stop every managed container. An empty list is refused: it would stop nothing.
    """
    if agent_ids == []:  # in a form, an emptied list reads as "all"; a run that stops nothing would pass for one
        raise ValueError(
            "agent_ids is an empty list: leave it unset (null) for every managed container, or list agent ids"
        )
    logger = get_run_logger()
    settings = get_settings()
    options = ShutdownOptions(
        leave_running=leave_running,
        leave_by_setting=settings.shutdown_leave_running,
        stop_timeout=parse_duration(stop_timeout),
        agent_ids=frozenset(agent_ids) if agent_ids is not None else None,
    )
    registry = await load_fleet(registry_path)
    async with DockerEngine.from_settings(settings) as engine:
        seen = await observe_containers(unvisited(engine), unvisited(registry), agent_ids)
        if seen.error is not None:
            shown = {
                "leave_running": options.leave,
                "stop_timeout": format_duration(options.stop_timeout),
                "agent_ids": agent_ids or "all",
            }
            # A returned state is the run's final state (a direct caller gets its EngineUnavailable).
            return cast(list[dict[str, Any]], await not_run("Shutdown", seen.error, ARTIFACT_KEY, shown))
        fleet = seen.fleet
        targets = plan_shutdown(fleet, seen.listed, seen.inspected, options.agent_ids)
        if options.leave:
            logger.info(
                "Shutdown: %s is set; %d managed container(s) left as they are", options.leave_reason, len(targets)
            )
        else:
            running = sum(t.needs_stop for t in targets)
            logger.info("Shutdown: stopping %d of %d managed container(s)", running, len(targets))
        result = await stop_containers(unvisited(engine), unvisited(targets), unvisited(fleet), options)

    if result.stopped:
        async with StateStore(settings.resolved_database_url()) as store:
            await record_stops(store, fleet, result, datetime.now(UTC), run_id=str(flow_run.id or ""))
            published = await publish_pending(store, fleet, run_url=flow_run.ui_url)
        if published.error:
            logger.warning("The stops are stored; the next monitor run publishes them (%s)", published.error)
    stopped = len(result.stopped)
    emit_event(
        event=FLEET_SHUTDOWN,
        resource=fleet_resource(),
        payload={"leave_running": options.leave, "managed": len(targets), "stopped": stopped, "agent_ids": agent_ids},
    )
    rows = result.rows()
    await quietly(
        acreate_markdown_artifact(
            key=ARTIFACT_KEY,
            markdown=shutdown_markdown(
                rows, leave_running=options.leave, stop_timeout=format_duration(options.stop_timeout)
            ),
            description=f"Shutdown: {stopped} stopped" + (" (leave_running)" if options.leave else ""),
        ),
        "the shutdown artifact",
    )
    return rows
