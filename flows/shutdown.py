"""The shutdown flow: stop every managed container gracefully and record its agent as stopped.

Its own deployment (started by hand from the Prefect UI) and `agentwatch shutdown`. With
`leave_running` (or AGENTWATCH_SHUTDOWN_LEAVE_RUNNING=true) it stops nothing and records that,
for a monitor host that goes down while the agents it watches carry on.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from prefect import flow, get_run_logger
from prefect.artifacts import acreate_markdown_artifact
from prefect.events import emit_event
from prefect.runtime import flow_run

from agentwatch.docker import DockerEngine
from agentwatch.docker.fleet import asserted_changes
from agentwatch.docker.report import shutdown_markdown
from agentwatch.docker.shutdown import StopTarget, plan_shutdown
from agentwatch.durations import format_duration, parse_duration
from agentwatch.events import FLEET_SHUTDOWN, fleet_resource
from agentwatch.models import AgentState
from agentwatch.registry import load_registry
from agentwatch.settings import get_settings
from agentwatch.store import StateStore
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
        registry_path: The registry file; with AGENTWATCH_DOCKER_LABELS, containers labelled agentwatch.agent=<id> join it.
        leave_running: Stop nothing, only record that the fleet was left running.
        stop_timeout: Time between SIGTERM and SIGKILL for each container (e.g. 10s, 1m).
        agent_ids: Only these agents' containers; leave unset for every managed container.
    """
    logger = get_run_logger()
    settings = get_settings()
    leave = leave_running or settings.shutdown_leave_running
    timeout = parse_duration(stop_timeout)
    registry = load_registry(registry_path)
    async with DockerEngine.from_settings(settings) as engine:
        seen = await observe_containers(unvisited(engine), unvisited(registry), agent_ids)
        if seen.error is not None:
            shown = {"leave_running": leave, "stop_timeout": format_duration(timeout), "agent_ids": agent_ids or "all"}
            # A returned state is the run's final state (a direct caller gets its EngineUnavailable).
            return cast(list[dict[str, Any]], await not_run("Shutdown", seen.error, ARTIFACT_KEY, shown))
        fleet = seen.fleet
        targets = plan_shutdown(fleet, seen.listed, seen.inspected, agent_ids)
        if leave:
            why = "leave_running" + (" (AGENTWATCH_SHUTDOWN_LEAVE_RUNNING)" if not leave_running else "")
            logger.info("Shutdown: %s is set; %d managed container(s) left as they are", why, len(targets))
            rows = [t.row("left running" if t.needs_stop else "not running", why) for t in targets]
            stopped = []
        else:
            logger.info(
                "Shutdown: stopping %d of %d managed container(s)", sum(t.needs_stop for t in targets), len(targets)
            )
            results = await stop_containers(
                unvisited(engine), unvisited(targets), unvisited(fleet), timeout.total_seconds()
            )
            errors = {t.container.id: error for t, error in results}
            stopped = [t for t, error in results if not error]
            rows = [_row(t, errors) for t in targets]

    if stopped:
        reason = f"stopped by shutdown (SIGTERM, SIGKILL after {format_duration(timeout)})"
        wanted = [(t.agent_id, AgentState.STOPPED, reason) for t in stopped if t.agent_id is not None]
        async with StateStore(settings.resolved_database_url()) as store:
            records = await store.load([agent for agent, _, _ in wanted])
            await store.commit(
                asserted_changes(fleet, records, wanted, datetime.now(UTC)), run_id=str(flow_run.id or "")
            )
            published = await publish_pending(store, fleet, run_url=flow_run.ui_url)
        if published.error:
            logger.warning("The stops are stored; the next monitor run publishes them (%s)", published.error)
    emit_event(
        event=FLEET_SHUTDOWN,
        resource=fleet_resource(),
        payload={"leave_running": leave, "managed": len(targets), "stopped": len(stopped), "agent_ids": agent_ids},
    )
    await quietly(
        acreate_markdown_artifact(
            key=ARTIFACT_KEY,
            markdown=shutdown_markdown(rows, leave_running=leave, stop_timeout=format_duration(timeout)),
            description=f"Shutdown: {len(stopped)} stopped" + (" (leave_running)" if leave else ""),
        ),
        "the shutdown artifact",
    )
    return rows


def _row(target: StopTarget, errors: dict[str, str]) -> dict[str, Any]:
    if not target.needs_stop:
        return target.row("not running", f"already {target.container.status}")
    error = errors.get(target.container.id, "")
    return target.row("failed" if error else "stopped", error)


def shutdown_deployment(registry: str) -> Any:
    """The shutdown deployment for `deployments.serve`: no schedule, started from the UI."""
    return shutdown_fleet.to_deployment(
        name="shutdown",
        parameters={"registry_path": registry},
        tags=["agentwatch", "docker"],
        description="Stop every managed agent container gracefully (or leave them running) and record it.",
    )
