"""Reconcile planning: given the fleet, its containers, the agents' records and restart budgets,
decide what to do. Pure: the flow observes and calls `plan_reconcile`; `reconcile_apply` carries
the plan out and says what came of it (a ReconcileResult).

Rules (README "Docker agents"):
- Exit information is recorded: exited 0 -> stopped, non-zero -> failed, OOM named as the reason.
- Only containers labelled `agentwatch.managed=true` are ever started, restarted or removed.
- An agent's container is what its docker probe names, or (for an agent registered by labels) the
  container whose labels registered it. A container labelled with a registry agent's id that the
  registry does not name is never that agent's: it is neither restarted for it nor removed.
- An orphan is a managed container that belongs to no agent of the fleet; it is removed once it
  is older than `orphan_min_age` (a young one may be a session whose agent is being registered).
- An agent's container is restarted when it exited non-zero, was OOM-killed, is unhealthy by its
  HEALTHCHECK, or its agent is unhealthy by agentwatch's own probe; within the restart budget.
  An exit 0 (a clean stop) or a stop agentwatch recorded is never restarted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from ..durations import format_duration
from ..models import AgentRecord, AgentState, Cause, ProbeResult
from ..registry import Registry
from .budget import BudgetRules, RestartBudget, Verdict, decide, is_clean_run, record_restart
from .labels import bind_containers, is_docker_agent
from .observe import container_result
from .rules import recorded_stop
from .state import ContainerInfo

__all__ = ["Action", "Kind", "ReconcileOptions", "plan_reconcile"]


class Kind(StrEnum):
    RECORD = "record"  # write the agent's state from its container's exit information
    START = "start"  # start an exited container (counts against the restart budget)
    RESTART = "restart"  # restart a running, unhealthy container (counts against the budget)
    REMOVE = "remove"  # remove an orphan, stopping it first when it runs
    DEFER = "defer"  # a restart is wanted; the backoff has not run out
    # A restart is wanted; the budget is spent (the budget's own Verdict.EXHAUSTED, as a step):
    # the agent is recorded failed with Cause.RESTART_BUDGET.
    EXHAUSTED = Verdict.EXHAUSTED.value
    RESET = "reset"  # a clean run: the restart budget starts again
    LEAVE = "leave"  # looked at and deliberately left alone


MUTATING = (Kind.START, Kind.RESTART, Kind.REMOVE)


@dataclass(frozen=True, slots=True)
class Action:
    """One step of a reconcile plan. `state` is what to record for the agent; `budget` what to store."""

    kind: Kind
    reason: str
    agent_id: str | None = None
    container: ContainerInfo | None = None
    state: AgentState | None = None
    budget: RestartBudget | None = None
    notify: bool = False  # emit an event for a non-mutating step (a newly exhausted budget)

    @property
    def mutating(self) -> bool:
        return self.kind in MUTATING

    @property
    def cause(self) -> Cause:
        """How reconcile knows the `state` it records."""
        return Cause.RESTART_BUDGET if self.kind is Kind.EXHAUSTED else Cause.CONTAINER

    def row(self) -> dict[str, Any]:
        c = self.container
        return {
            "action": self.kind.value,
            "agent": self.agent_id or "-",
            "container": (c.name or c.short_id) if c else "-",
            "state": self.state.value if self.state else None,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class ReconcileOptions:
    """The flow's parameters, parsed."""

    agent_ids: frozenset[str] | None = None
    remove_orphans: bool = True
    restart_unhealthy: bool = True
    orphan_min_age: timedelta = timedelta(seconds=60)
    rules: BudgetRules = field(default_factory=BudgetRules)


def plan_reconcile(
    fleet: Registry,
    listed: list[ContainerInfo],
    inspected: Mapping[str, ContainerInfo | None],
    records: Mapping[str, AgentRecord],
    budgets: Mapping[str, RestartBudget],
    options: ReconcileOptions,
    now: datetime,
) -> list[Action]:
    """The actions for the agents in scope (all, or `options.agent_ids`), then for orphans."""
    bound = bind_containers(fleet, listed, inspected)
    actions: list[Action] = []
    wanted = options.agent_ids
    for agent_id in sorted(wanted - set(fleet.ids)) if wanted is not None else ():
        actions.append(Action(Kind.LEAVE, "not in the fleet", agent_id))
    for agent in fleet.agents:
        if (wanted is not None and agent.id not in wanted) or not is_docker_agent(agent):
            continue
        budget = budgets.get(agent.id) or RestartBudget(agent.id)
        ref = agent.probe.docker.container if agent.probe and agent.probe.docker else agent.id
        steps = _plan_agent(agent.id, ref, bound.get(agent.id), records.get(agent.id), budget, options, now)
        if budget.retry_at is not None and budget.retry_at <= now and not any(s.budget for s in steps):
            # Forget a due retry nobody wants any more, or the monitor would ask again every cycle.
            cleared = replace(budget, retry_at=None)
            steps.append(Action(Kind.LEAVE, "deferred restart no longer needed", agent.id, budget=cleared))
        actions.extend(steps)
    if options.remove_orphans:
        actions.extend(_plan_orphans(fleet, listed, bound, options, now))
    return actions


def _plan_agent(
    agent_id: str,
    ref: str,
    info: ContainerInfo | None,
    record: AgentRecord | None,
    budget: RestartBudget,
    options: ReconcileOptions,
    now: datetime,
) -> list[Action]:
    if record is not None and record.paused:
        return [Action(Kind.LEAVE, "paused (maintenance)", agent_id, info)]
    # Named as the monitor's probe names it, so both record the same reason.
    observed = container_result(agent_id, info.name if info else ref, info)
    spent = budget.exhausted_at is not None or budget.is_exhausted(options.rules, now)
    if info is None:
        return [
            *_record(agent_id, info, observed, record, spent),
            Action(Kind.LEAVE, f"{observed.reason}: agentwatch cannot recreate a container", agent_id),
        ]
    stopped = recorded_stop(observed, info, record)
    if not (options.restart_unhealthy and not stopped and _wants_restart(info, observed, record)):
        steps = [] if stopped else _record(agent_id, info, observed, record, spent)
        healthy = observed.ok and info.status == "running"
        if not budget.empty and is_clean_run(info.started_at, healthy, options.rules, now):
            steps.append(Action(Kind.RESET, "a clean run: restart budget reset", agent_id, info, budget=budget.reset()))
        return steps
    if not info.managed:
        return [
            *_record(agent_id, info, observed, record, spent),
            Action(Kind.LEAVE, "not restarted: no agentwatch.managed=true label", agent_id, info),
        ]
    decision = decide(budget, options.rules, now)
    if decision.verdict is Verdict.EXHAUSTED:
        reason = f"{decision.reason}; last: {observed.reason}"
        return [
            Action(Kind.EXHAUSTED, reason, agent_id, info, AgentState.FAILED, decision.budget, decision.newly_exhausted)
        ]
    steps = _record(agent_id, info, observed, record, spent)
    if decision.verdict is Verdict.BACKOFF:
        return [*steps, Action(Kind.DEFER, decision.reason, agent_id, info, budget=decision.budget)]
    kind = Kind.RESTART if info.running else Kind.START
    why = f"{observed.reason}; {decision.reason} in {format_duration(options.rules.window)}"
    budget_after = record_restart(decision.budget, options.rules, now)
    return [*steps, Action(kind, why, agent_id, info, AgentState.STARTING, budget_after)]


def _wants_restart(info: ContainerInfo, observed: ProbeResult, record: AgentRecord | None) -> bool:
    if observed.asserted in (AgentState.STOPPED, AgentState.STARTING) or info.status in ("restarting", "paused"):
        return False  # a clean exit, a start in progress, or the engine's own restart policy at work
    if observed.asserted is AgentState.FAILED or info.health == "unhealthy":
        return True
    # agentwatch's own probe (HTTP on a label-registered agent) found it unhealthy.
    return record is not None and record.state is AgentState.UNHEALTHY and info.status == "running"


def _record(
    agent_id: str, info: ContainerInfo | None, observed: ProbeResult, record: AgentRecord | None, spent: bool
) -> list[Action]:
    """Record exit information when it says more than the agent's record does."""
    state = observed.asserted
    if state not in (AgentState.STOPPED, AgentState.FAILED):
        return []
    # Not when the record says this exit already, or a spent budget keeps the agent failed (that
    # record names the exit after the budget).
    said = record is not None and record.state is state and record.reason.startswith(observed.reason)
    if said or (spent and state is AgentState.FAILED and record is not None and record.state is state):
        return []
    return [Action(Kind.RECORD, observed.reason, agent_id, info, state)]


def _plan_orphans(
    fleet: Registry,
    listed: list[ContainerInfo],
    bound: Mapping[str, ContainerInfo | None],
    options: ReconcileOptions,
    now: datetime,
) -> list[Action]:
    owned = {info.id for info in bound.values() if info is not None}
    # Every container of a label-registered agent is its own (an older session's too).
    owned |= {info.id for info in listed if _label_agent(fleet, info.agent_label)}
    actions = []
    minimum = options.orphan_min_age.total_seconds()
    for info in sorted(listed, key=lambda i: i.name):
        if not info.managed or info.id in owned:
            continue  # never an unmanaged container, never one an agent of the fleet owns
        claimed = fleet.get(info.agent_label or "")
        if claimed is not None:
            # It names a registry agent that does not name it: not that agent's, and not removed on
            # a label's word either (it may be a real workload labelled by mistake). Reported only.
            why = f"claims registry agent {claimed.id!r}, whose probe does not name it: left alone, never acted on"
            actions.append(Action(Kind.LEAVE, why, None, info))
            continue
        label = f"agent {info.agent_label!r} is not in the fleet" if info.agent_label else "no agent label"
        age = info.age(now)
        if age < minimum:
            why = f"young orphan ({label}): created {age:.0f}s ago, younger than {format_duration(options.orphan_min_age)}"
            actions.append(Action(Kind.LEAVE, why, None, info))
        else:
            actions.append(Action(Kind.REMOVE, f"orphan ({label}), created {age:.0f}s ago", None, info))
    return actions


def _label_agent(fleet: Registry, agent_id: str | None) -> bool:
    agent = fleet.get(agent_id) if agent_id else None
    return agent is not None and agent.source == "docker"
