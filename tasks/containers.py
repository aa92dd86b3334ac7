"""Prefect tasks around the Docker backend: find containers, and say what was done to them.

The monitor lists the engine once per run (`discover_docker_agents`: managed and agent-labelled
containers, the fleet's label agents) and hands that Observation to reconcile; the standalone
reconcile and shutdown flows list through `observe_containers`. Neither raises for an engine that
cannot be reached: the Observation carries the error, and the caller says it once.

What to do to containers is decided and done by agentwatch.docker (reconcile_apply, shutdown);
the watchers here are how it shows. Every start, stop, restart and removal is logged and emitted
as `agentwatch.container.<action>` on the agent's resource (`agentwatch.agent.<id>`), or on
`agentwatch.container.<container-id>` for a container no agent owns, so automations match them like
the agents' own state events; a progress artifact follows the run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import acreate_markdown_artifact, acreate_progress_artifact, aupdate_progress_artifact
from prefect.cache_policies import NONE
from prefect.events import emit_event
from prefect.states import Failed, State

from agentwatch.docker import AGENT_LABEL, MANAGED_LABEL, ContainerInfo, DockerEngine
from agentwatch.docker.labels import bind_containers, is_docker_agent, with_label_agents
from agentwatch.docker.reconcile import Action, Kind
from agentwatch.docker.reconcile_apply import Outcome
from agentwatch.docker.report import not_run_markdown
from agentwatch.docker.shutdown import ShutdownOptions, ShutdownResult, StopOutcome, StopTarget, apply_shutdown
from agentwatch.docker.targets import HostAllowList
from agentwatch.errors import EngineUnavailable, Problem
from agentwatch.events import container_event_name, container_resource
from agentwatch.registry import Registry
from agentwatch.settings import Settings, get_settings

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


def emit_container_event(
    action: str, info: ContainerInfo, agent_id: str | None, fleet: Registry, **payload: Any
) -> None:
    agent = fleet.get(agent_id) if agent_id is not None else None
    emit_event(
        event=container_event_name(action),
        resource=container_resource(info.id, info.name, agent_id, agent),
        payload={"container": info.name, "container_id": info.short_id, "agent": agent_id, **payload},
    )


def _allowed(settings: Settings) -> tuple[HostAllowList, list[Problem]]:
    try:
        return HostAllowList.parse(settings.docker_label_probe_hosts), []
    except ValueError as exc:
        why = f"AGENTWATCH_DOCKER_LABEL_PROBE_HOSTS ignored ({exc}): label probes target their own container only"
        return HostAllowList(), [Problem(None, "docker_label_probe_hosts", why)]


async def list_fleet_containers(engine: DockerEngine, registry: Registry, settings: Settings) -> Observation:
    """One listing of what the fleet needs from the engine: managed and agent-labelled containers
    (in AGENTWATCH_DOCKER_SCOPE), the agents their labels register (when AGENTWATCH_DOCKER_LABELS is
    on), and a Problem for each label that claims a registry agent. Raises EngineUnavailable."""
    managed, labelled = await asyncio.gather(
        engine.list_containers({MANAGED_LABEL: None}), engine.list_containers({AGENT_LABEL: None})
    )
    listed = list({info.id: info for info in [*managed, *labelled]}.values())
    allowed, problems = _allowed(settings)
    fleet, found = with_label_agents(registry, listed, register=settings.docker_labels, allowed=allowed)
    return Observation(fleet, listed, problems=problems + found)


@task(name="discover-docker-agents", cache_policy=NONE)
async def discover_docker_agents(registry: Registry, engine: DockerEngine | None = None) -> Observation:
    """The monitor's one look at the engine: label registration (when on) and every managed or
    agent-labelled container, for the probes, the rules of agentwatch.docker.rules and reconcile.

    `engine` is the run's one connection (None: one of its own, for callers outside a monitor run).
    A fleet with no Docker agent and label registration off never touches the engine. An
    unreachable engine is logged once and leaves the registry as it is; it fails nothing."""
    logger = get_run_logger()
    settings = get_settings()
    uses_docker = any(is_docker_agent(a) for a in registry.agents)
    if not settings.docker_labels and not uses_docker:
        return Observation(registry)
    own = engine is None
    engine = engine if engine is not None else DockerEngine.from_settings(settings)
    try:
        seen = await list_fleet_containers(engine, registry, settings)
    except EngineUnavailable as exc:
        (logger.warning if uses_docker else logger.info)("Docker engine not listed: %s", exc)
        return Observation(registry, error=str(exc))
    finally:
        if own:
            await engine.close()
    for problem in seen.problems:
        logger.warning("Docker labels: %s", problem)
    added = len(seen.fleet.agents) - len(registry.agents)
    if added:
        logger.info("%d agent(s) registered by container labels", added)
    return seen


@task(name="observe-containers", cache_policy=NONE)
async def observe_containers(
    engine: DockerEngine, registry: Registry, agent_ids: Collection[str] | None
) -> Observation:
    """What the standalone reconcile and shutdown flows act on: the fleet's listing (as
    `discover_docker_agents`) and an inspect of each docker probe target (of `agent_ids`) the
    listing did not cover. An unreachable engine is returned in `error`, never raised."""
    logger = get_run_logger()
    try:
        seen = await list_fleet_containers(engine, registry, get_settings())
        refs = [
            a.probe.docker.container
            for a in seen.fleet.agents
            if a.probe and a.probe.docker and (agent_ids is None or a.id in agent_ids)
        ]
        missing = [ref for ref in refs if not any(i.id == ref or i.matches(ref) for i in seen.listed)]
        found = await asyncio.gather(*(engine.inspect(ref) for ref in missing))
    except EngineUnavailable as exc:
        return Observation(registry, error=str(exc))
    for problem in seen.problems:
        logger.warning("Docker labels: %s", problem)
    seen.inspected = dict(zip(missing, found, strict=True))
    return seen


async def refresh_for(engine: DockerEngine, seen: Observation, agent_ids: Collection[str]) -> Observation:
    """`seen` with a fresh look at each container reconcile may act on for `agent_ids`: the
    listing is as old as the monitor run (the engine's restart policy may have acted since).
    A docker probe's target is inspected by its reference, as the probe does; a label agent's
    container by its id. Raises EngineUnavailable."""
    bound = seen.bound
    refs: list[str] = []
    ids: list[str] = []
    for agent_id in agent_ids:
        agent = seen.fleet.get(agent_id)
        if agent is not None and agent.probe is not None and agent.probe.docker is not None:
            refs.append(agent.probe.docker.container)
        elif (info := bound.get(agent_id)) is not None:
            ids.append(info.id)
    by_ref = dict(zip(refs, await asyncio.gather(*(engine.inspect(ref) for ref in refs)), strict=True))
    by_id = dict(zip(ids, await asyncio.gather(*(engine.inspect(i) for i in ids)), strict=True))
    listed = []
    for info in seen.listed:
        if any(info.id == ref or info.matches(ref) for ref in by_ref):
            continue  # now looked up through `inspected`, by its reference
        if info.id in by_id:
            fresh = by_id[info.id]
            if fresh is not None:
                listed.append(fresh)
            continue
        listed.append(info)
    return Observation(seen.fleet, listed, {**seen.inspected, **by_ref}, seen.problems, seen.error)


async def quietly(write: Awaitable[Any], what: str) -> None:
    """Await an artifact write; a Prefect API that fails it is logged, never fatal: the containers
    were acted on and the states committed whatever the API says."""
    try:
        await write
    except Exception as exc:  # the API's failure, whatever its type
        get_run_logger().warning("Could not write %s: %s: %s", what, type(exc).__name__, exc)


async def not_run(flow: str, error: str, key: str, shown: Mapping[str, Any] | None = None) -> State[Any]:
    """End a reconcile or shutdown run the engine would not answer: one clear line in the log, an
    artifact saying why, and a Failed state with that message (its data is the EngineUnavailable,
    so a direct caller gets that exception, and the run shows no traceback)."""
    message = f"{flow} cannot run: {error}"
    get_run_logger().error(message)
    await quietly(
        acreate_markdown_artifact(
            key=key, markdown=not_run_markdown(flow, error, shown), description=f"{flow} did not run: {error}"[:500]
        ),
        f"the {key} artifact",
    )
    return Failed(message=message, data=EngineUnavailable(error))


class _Progress:
    """A progress artifact advanced one step per container action (updated every ~5%). A Prefect
    API that fails it only loses the progress bar."""

    def __init__(self, description: str) -> None:
        self.description = description
        self.artifact_id: Any = None
        self.total = 0
        self.count = 0
        self.shown = 0.0

    async def begin(self, total: int) -> None:
        self.total = total
        try:
            self.artifact_id = await acreate_progress_artifact(
                progress=0.0, description=self.description.format(total=total)
            )
        except Exception as exc:
            get_run_logger().warning("No progress artifact: %s: %s", type(exc).__name__, exc)

    async def step(self) -> None:
        self.count += 1
        progress = 100.0 * self.count / max(self.total, 1)
        if self.artifact_id is not None and (progress - self.shown >= 5 or self.count == self.total):
            self.shown = progress
            await quietly(aupdate_progress_artifact(artifact_id=self.artifact_id, progress=progress), "progress")


class ReconcileWatcher(_Progress):
    """Reconcile's container actions as a person sees them: a progress artifact, a log line and an
    `agentwatch.container.<action>` event per action (agentwatch.docker.reconcile_apply.ActionWatcher)."""

    def __init__(self, fleet: Registry) -> None:
        super().__init__("Reconcile: {total} container action(s)")
        self.fleet = fleet
        self.logger = get_run_logger()

    async def done(self, outcome: Outcome) -> None:
        action, info = outcome.action, outcome.action.container
        assert info is not None
        owner = action.agent_id or "orphan"
        if outcome.stopped:
            emit_container_event("stopped", info, action.agent_id, self.fleet, reason="orphan removal")
        if not outcome.ok:
            self.logger.warning("%s %s (%s) failed: %s", action.kind.value, info.name, owner, outcome.detail)
        await self.step()
        if outcome.ok:
            self.logger.info("%s %s (%s): %s", _PAST[action.kind], info.name, owner, action.reason)
            emit_container_event(_PAST[action.kind], info, action.agent_id, self.fleet, reason=action.reason)

    def exhausted(self, actions: Sequence[Action]) -> None:
        """Budgets found spent for the first time: one warning and one event each."""
        for action in actions:
            assert action.container is not None
            self.logger.warning("%s: %s", action.agent_id, action.reason)
            emit_container_event(
                _PAST[Kind.EXHAUSTED], action.container, action.agent_id, self.fleet, reason=action.reason
            )


class ShutdownWatcher(_Progress):
    """Shutdown's stops as a person sees them: progress, a log line and an `agentwatch.container.stopped`
    event per container (agentwatch.docker.shutdown.StopWatcher)."""

    def __init__(self, fleet: Registry) -> None:
        super().__init__("Shutdown: stopping {total} container(s)")
        self.fleet = fleet
        self.logger = get_run_logger()

    async def done(self, outcome: StopOutcome) -> None:
        target, info = outcome.target, outcome.target.container
        owner = target.agent_id or "orphan"
        if not outcome.ok:
            self.logger.warning("stop %s (%s) failed: %s", info.name, owner, outcome.error)
        await self.step()
        if outcome.ok:
            self.logger.info("stopped %s (%s)", info.name, owner)
            emit_container_event("stopped", info, target.agent_id, self.fleet, reason="shutdown")


@task(name="stop-containers", cache_policy=NONE)
async def stop_containers(
    engine: DockerEngine, targets: Sequence[StopTarget], fleet: Registry, options: ShutdownOptions
) -> ShutdownResult:
    """Stop every running target at once (SIGTERM, SIGKILL after the stop timeout), unless the
    options leave them running; log and emit each stop."""
    return await apply_shutdown(targets, options, engine, ShutdownWatcher(fleet))
