"""Shutdown: which managed containers to stop and which agent each one serves (the plan), stopping
them (the apply), and what to record of it (the result).

Only containers labelled `agentwatch.managed=true` are stopped. With agent ids given, only those
agents' containers are; without, every managed container is (orphans included: shutdown means
the whole fleet goes down). A container serves an agent when the agent's docker probe names it or
its labels registered the agent; a label naming a registry agent never makes it that agent's.

Every running target is stopped at once (SIGTERM, SIGKILL after the stop timeout), and each agent
whose container stopped is recorded `stopped` with the reason `stop_reason` gives. With
`leave_running` nothing is stopped and nothing recorded: the monitor's host goes down while the
agents carry on. Engine and store are passed in; progress and events go through a `StopWatcher`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from ..durations import format_duration
from ..errors import ContainerOpFailed, EngineUnavailable
from ..models import AgentState
from ..registry import Registry
from .labels import bind_containers
from .recording import Assertion, CommitOutcome, RecordStore, commit_assertions
from .state import ContainerInfo

__all__ = [
    "ShutdownOptions",
    "ShutdownResult",
    "StopOutcome",
    "StopTarget",
    "StopWatcher",
    "Stopper",
    "apply_shutdown",
    "plan_shutdown",
    "record_stops",
    "stop_targets",
]


@dataclass(frozen=True, slots=True)
class StopTarget:
    """One managed container and the agent it serves (None for an orphan)."""

    container: ContainerInfo
    agent_id: str | None

    @property
    def needs_stop(self) -> bool:
        return self.container.running

    def row(self, outcome: str, reason: str = "") -> dict[str, Any]:
        return {
            "agent": self.agent_id or "-",
            "container": self.container.name or self.container.short_id,
            "status": self.container.status,
            "outcome": outcome,
            "reason": reason,
        }


@dataclass(frozen=True, slots=True)
class ShutdownOptions:
    """The flow's parameters, parsed; `leave_by_setting` is AGENTWATCH_SHUTDOWN_LEAVE_RUNNING."""

    leave_running: bool = False
    leave_by_setting: bool = False
    stop_timeout: timedelta = timedelta(seconds=10)
    agent_ids: frozenset[str] | None = None

    @property
    def leave(self) -> bool:
        return self.leave_running or self.leave_by_setting

    @property
    def leave_reason(self) -> str:
        return "leave_running" + ("" if self.leave_running else " (AGENTWATCH_SHUTDOWN_LEAVE_RUNNING)")

    @property
    def stop_reason(self) -> str:
        """The reason an agent whose container shutdown stopped is recorded `stopped` with."""
        return f"stopped by shutdown (SIGTERM, SIGKILL after {format_duration(self.stop_timeout)})"


def plan_shutdown(
    fleet: Registry,
    listed: list[ContainerInfo],
    inspected: Mapping[str, ContainerInfo | None] | None = None,
    agent_ids: Collection[str] | None = None,
) -> list[StopTarget]:
    """Every managed container in `listed`, with its agent, limited to `agent_ids` when given."""
    owner: dict[str, str] = {}
    for agent_id, info in bind_containers(fleet, listed, inspected).items():
        if info is not None:
            owner[info.id] = agent_id
    targets = []
    for info in sorted(listed, key=lambda i: i.name):
        if not info.managed:
            continue
        labelled = fleet.get(info.agent_label or "")
        # A label speaks for an agent only when labels registered that agent; a container that
        # claims a registry agent is stopped as what it is, a managed container of no agent.
        serves = owner.get(info.id) or (labelled.id if labelled is not None and labelled.source == "docker" else None)
        if agent_ids is not None and serves not in agent_ids:
            continue
        targets.append(StopTarget(info, serves))
    return targets


@dataclass(frozen=True, slots=True)
class StopOutcome:
    """What came of stopping one target: stopped, or the engine's refusal."""

    target: StopTarget
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


@dataclass(frozen=True)
class ShutdownResult:
    """The targets, what came of stopping the running ones, and the options they ran with."""

    targets: list[StopTarget]
    options: ShutdownOptions
    outcomes: list[StopOutcome] = field(default_factory=list)

    @property
    def stopped(self) -> list[StopTarget]:
        return [o.target for o in self.outcomes if o.ok]

    def assertions(self) -> list[Assertion]:
        """The agents to record stopped: those whose container shutdown stopped."""
        reason = self.options.stop_reason
        return [Assertion(t.agent_id, AgentState.STOPPED, reason) for t in self.stopped if t.agent_id is not None]

    def rows(self) -> list[dict[str, Any]]:
        """One row per target: stopped, failed, not running, or left running."""
        if self.options.leave:
            why = self.options.leave_reason
            return [t.row("left running" if t.needs_stop else "not running", why) for t in self.targets]
        errors = {o.target.container.id: o.error for o in self.outcomes}
        rows = []
        for target in self.targets:
            if not target.needs_stop:
                rows.append(target.row("not running", f"already {target.container.status}"))
            else:
                error = errors.get(target.container.id, "")
                rows.append(target.row("failed" if error else "stopped", error))
        return rows


class Stopper(Protocol):
    """What shutdown asks of an engine; raises ContainerOpFailed or EngineUnavailable."""

    async def stop(self, container_id: str, timeout: float) -> None: ...


class StopWatcher(Protocol):
    """Told before the stops start and as each one ends (progress, events, logs)."""

    async def begin(self, total: int) -> None: ...
    async def done(self, outcome: StopOutcome) -> None: ...


async def stop_targets(
    engine: Stopper, targets: Sequence[StopTarget], stop_timeout: float, watcher: StopWatcher | None = None
) -> list[StopOutcome]:
    """Stop every running target at once (SIGTERM, SIGKILL after `stop_timeout` seconds)."""
    running = [t for t in targets if t.needs_stop]
    if watcher is not None:
        await watcher.begin(len(running))

    async def one(target: StopTarget) -> StopOutcome:
        try:
            await engine.stop(target.container.id, stop_timeout)
            outcome = StopOutcome(target)
        except (ContainerOpFailed, EngineUnavailable) as exc:
            outcome = StopOutcome(target, str(exc))
        if watcher is not None:
            await watcher.done(outcome)
        return outcome

    return list(await asyncio.gather(*(one(t) for t in running)))


async def apply_shutdown(
    targets: Sequence[StopTarget], options: ShutdownOptions, engine: Stopper, watcher: StopWatcher | None = None
) -> ShutdownResult:
    """Stop the running targets, unless the options leave them running."""
    if options.leave:
        return ShutdownResult(list(targets), options)
    outcomes = await stop_targets(engine, targets, options.stop_timeout.total_seconds(), watcher)
    return ShutdownResult(list(targets), options, outcomes)


async def record_stops(
    store: RecordStore, fleet: Registry, result: ShutdownResult, now: datetime, run_id: str | None = None
) -> CommitOutcome:
    """Record each agent whose container shutdown stopped as `stopped` (through the policy)."""
    wanted = result.assertions()
    records = await store.load([w.agent_id for w in wanted])
    return await commit_assertions(store, fleet, records, wanted, now, run_id)
