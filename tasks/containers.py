"""Prefect tasks around the Docker backend: find containers, act on them, and say so.

Every start, stop, restart and removal is logged and emitted as `agentwatch.container.<action>` on
the agent's resource (`agentwatch.agent.<id>`), or on `agentwatch.container.<container-id>` for a
container no agent owns, so automations match them like the agents' own state events.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import acreate_progress_artifact, aupdate_progress_artifact
from prefect.cache_policies import NONE
from prefect.events import emit_event

from agentwatch.docker import AGENT_LABEL, MANAGED_LABEL, ContainerInfo, ContainerOpFailed, DockerEngine
from agentwatch.docker.fleet import bind_containers
from agentwatch.docker.labels import is_docker_agent, with_label_agents
from agentwatch.docker.reconcile import Action, Kind
from agentwatch.docker.shutdown import StopTarget
from agentwatch.errors import EngineUnavailable, Problem
from agentwatch.registry import Registry
from agentwatch.settings import get_settings
from tasks.recording import agent_resource

EVENT = "agentwatch.container.{}"
_PAST = {
    Kind.START: "started",
    Kind.RESTART: "restarted",
    Kind.REMOVE: "removed",
    Kind.EXHAUSTED: "restart-budget-exhausted",
}


@dataclass
class Observation:
    """The fleet with its label-registered agents, and the containers seen on the engine."""

    fleet: Registry
    listed: list[ContainerInfo] = field(default_factory=list)
    inspected: dict[str, ContainerInfo | None] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    error: str | None = None  # the engine could not be reached

    @property
    def bound(self) -> dict[str, ContainerInfo | None]:
        return bind_containers(self.fleet, self.listed, self.inspected)


def container_resource(info: ContainerInfo, agent_id: str | None, fleet: Registry) -> dict[str, str]:
    """The event resource: the agent's when the container serves one, else the container's own."""
    if agent_id is not None:
        resource = agent_resource(agent_id, fleet.get(agent_id))
    else:
        resource = {"prefect.resource.id": f"agentwatch.container.{info.id}"}
    resource.update({"agentwatch.container.id": info.id, "agentwatch.container.name": info.name})
    return resource


def emit_container_event(
    action: str, info: ContainerInfo, agent_id: str | None, fleet: Registry, **payload: Any
) -> None:
    emit_event(
        event=EVENT.format(action),
        resource=container_resource(info, agent_id, fleet),
        payload={"container": info.name, "container_id": info.short_id, "agent": agent_id, **payload},
    )


@task(name="discover-docker-agents", cache_policy=NONE)
async def discover_docker_agents(registry: Registry) -> Observation:
    """Label registration: the registry plus containers labelled `agentwatch.agent=<id>`.

    An unreachable engine is logged once and leaves the registry as it is; it fails nothing."""
    logger = get_run_logger()
    settings = get_settings()
    if not settings.docker_labels:
        return Observation(registry)
    async with DockerEngine.from_settings(settings) as engine:
        try:
            listed = await engine.list_containers({AGENT_LABEL: None})
        except EngineUnavailable as exc:
            uses_docker = any(is_docker_agent(a) for a in registry.agents)
            (logger.warning if uses_docker else logger.info)("Label registration skipped: %s", exc)
            return Observation(registry, error=str(exc))
    fleet, problems = with_label_agents(registry, listed)
    for problem in problems:
        logger.warning("Container labels ignored: %s", problem)
    added = len(fleet.agents) - len(registry.agents)
    if added:
        logger.info("%d agent(s) registered by container labels", added)
    return Observation(fleet, listed, problems=problems)


@task(name="observe-containers", cache_policy=NONE)
async def observe_containers(
    engine: DockerEngine, registry: Registry, agent_ids: Collection[str] | None
) -> Observation:
    """Managed and agent-labelled containers (filtered by label on the engine), label registration,
    and an inspect of each docker probe target the listing did not cover. Raises EngineUnavailable."""
    managed, labelled = await asyncio.gather(
        engine.list_containers({MANAGED_LABEL: None}), engine.list_containers({AGENT_LABEL: None})
    )
    listed = list({info.id: info for info in [*managed, *labelled]}.values())
    fleet, problems = with_label_agents(registry, listed)
    refs = [
        a.probe.docker.container
        for a in fleet.agents
        if a.probe and a.probe.docker and (agent_ids is None or a.id in agent_ids)
    ]
    missing = [ref for ref in refs if not any(i.id == ref or i.matches(ref) for i in listed)]
    found = await asyncio.gather(*(engine.inspect(ref) for ref in missing))
    return Observation(fleet, listed, dict(zip(missing, found, strict=True)), problems)


@dataclass(frozen=True)
class Outcome:
    """What came of one action: done, or the engine's refusal."""

    action: Action
    ok: bool
    detail: str = ""

    def row(self) -> dict[str, Any]:
        return {**self.action.row(), "outcome": "done" if self.ok else f"failed: {self.detail}"}


async def _progress(total: int, description: str) -> Callable[[], Awaitable[None]]:
    """A progress artifact, and a callback to advance it by one step (updated every ~5%)."""
    artifact_id = await acreate_progress_artifact(progress=0.0, description=description)
    done = 0
    shown = 0.0

    async def step() -> None:
        nonlocal done, shown
        done += 1
        progress = 100.0 * done / max(total, 1)
        if progress - shown >= 5 or done == total:
            shown = progress
            await aupdate_progress_artifact(artifact_id=artifact_id, progress=progress)

    return step


@task(name="act-on-containers", cache_policy=NONE)
async def act_on_containers(
    engine: DockerEngine, actions: Sequence[Action], fleet: Registry, stop_timeout: float
) -> list[Outcome]:
    """Carry out starts, restarts and removals concurrently; log and emit an event for each."""
    logger = get_run_logger()
    mutating = [a for a in actions if a.mutating]
    step = await _progress(len(mutating), f"Reconcile: {len(mutating)} container action(s)")

    async def one(action: Action) -> Outcome:
        info = action.container
        assert info is not None
        try:
            if action.kind is Kind.START:
                await engine.start(info.id)
            elif action.kind is Kind.RESTART:
                await engine.restart(info.id, stop_timeout)
            else:
                if info.running:
                    await engine.stop(info.id, stop_timeout)
                    emit_container_event("stopped", info, action.agent_id, fleet, reason="orphan removal")
                await engine.remove(info.id)
        except ContainerOpFailed as exc:
            logger.warning("%s %s (%s) failed: %s", action.kind.value, info.name, action.agent_id or "orphan", exc)
            return Outcome(action, False, str(exc))
        finally:
            await step()
        logger.info("%s %s (%s): %s", _PAST[action.kind], info.name, action.agent_id or "orphan", action.reason)
        emit_container_event(_PAST[action.kind], info, action.agent_id, fleet, reason=action.reason)
        return Outcome(action, True)

    outcomes = list(await asyncio.gather(*(one(a) for a in mutating)))
    for action in actions:
        if action.kind is Kind.EXHAUSTED and action.notify and action.container is not None:
            logger.warning("%s: %s", action.agent_id, action.reason)
            emit_container_event(_PAST[Kind.EXHAUSTED], action.container, action.agent_id, fleet, reason=action.reason)
    return outcomes


@task(name="stop-containers", cache_policy=NONE)
async def stop_containers(
    engine: DockerEngine, targets: Sequence[StopTarget], fleet: Registry, stop_timeout: float
) -> list[tuple[StopTarget, str]]:
    """Stop every running target at once (SIGTERM, SIGKILL after `stop_timeout`); log and emit each.

    Returns (target, error) pairs; an empty error means stopped."""
    logger = get_run_logger()
    running = [t for t in targets if t.needs_stop]
    step = await _progress(len(running), f"Shutdown: stopping {len(running)} container(s)")

    async def one(target: StopTarget) -> tuple[StopTarget, str]:
        info = target.container
        try:
            await engine.stop(info.id, stop_timeout)
        except ContainerOpFailed as exc:
            logger.warning("stop %s (%s) failed: %s", info.name, target.agent_id or "orphan", exc)
            return target, str(exc)
        finally:
            await step()
        logger.info("stopped %s (%s)", info.name, target.agent_id or "orphan")
        emit_container_event("stopped", info, target.agent_id, fleet, reason="shutdown")
        return target, ""

    return list(await asyncio.gather(*(one(t) for t in running)))
