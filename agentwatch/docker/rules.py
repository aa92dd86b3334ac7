"""The monitor's Docker rules: what a cycle's probe results mean for Docker agents, and which of
them reconcile should look at afterwards.

The monitor probes, reconcile acts. Between them sit three rules kept here, so both apply them
the same way:
- a recorded stop stays a stop: once shutdown (or reconcile) recorded an agent stopped after its
  container exited, that exit (SIGTERM's 143, or 137 after the stop timeout) is not a crash;
- a spent restart budget keeps the agent failed (`Asserted(FAILED, Cause.RESTART_BUDGET)`) until
  the budget refills;
- a label-registered agent probed over HTTP/TCP whose container has exited is judged by the exit.

Each rule reads typed values (ContainerInfo's engine times, the result's override, the budget
row), never the text of a reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from ..models import AgentRecord, AgentState, Asserted, Cause, ProbeResult, Transition
from ..registry import Registry
from .budget import BudgetRules, RestartBudget, exhausted_reason
from .labels import is_docker_agent
from .observe import container_result
from .state import ContainerInfo

__all__ = ["reconcile_candidates", "recorded_stop", "settle_results"]

_EXITED = (AgentState.FAILED, AgentState.STOPPED)


def recorded_stop(result: ProbeResult, info: ContainerInfo | None, record: AgentRecord | None) -> bool:
    """True when `result` reports the very exit that agentwatch already recorded as a stop: the
    container `info` (not running) finished no later than the record turned stopped."""
    if result.asserted not in _EXITED or record is None or record.state is not AgentState.STOPPED:
        return False
    # A running container's finish time is its previous life's: the exit reported came after.
    if info is None or info.running or info.oom_killed or info.finished_at is None or record.since is None:
        return False
    return info.finished_at <= record.since


def settle_results(
    results: Iterable[ProbeResult],
    fleet: Registry,
    records: Mapping[str, AgentRecord],
    budgets: Mapping[str, RestartBudget],
    containers: Mapping[str, ContainerInfo | None],
    rules: BudgetRules,
    now: datetime,
) -> list[ProbeResult]:
    """The monitor's probe results with the rules of this module's docstring applied; `containers`
    are the agents' containers as the cycle listed them (`bind_containers`)."""
    out = []
    for result in results:
        agent = fleet.get(result.agent_id)
        if agent is None or not is_docker_agent(agent):
            out.append(result)
            continue
        info = containers.get(agent.id)
        kind = agent.probe.kind if agent.probe else None
        if info is not None and kind in ("http", "tcp") and not info.running and result.probed:
            result = container_result(agent.id, info.name, info, result.latency_ms)
        record = records.get(agent.id)
        budget = budgets.get(agent.id)
        if recorded_stop(result, info, record):
            assert record is not None
            stopped = Asserted(AgentState.STOPPED, Cause.CONTAINER)
            result = ProbeResult(agent.id, ok=False, reason=record.reason, details=result.details, override=stopped)
        elif budget is not None and _failing(result) and budget.is_exhausted(rules, now):
            spent = Asserted(AgentState.FAILED, Cause.RESTART_BUDGET)
            reason = exhausted_reason(result.reason)
            result = ProbeResult(agent.id, ok=False, reason=reason, details=result.details, override=spent)
        out.append(result)
    return out


def _failing(result: ProbeResult) -> bool:
    return not result.ok and result.probed and result.asserted in (None, AgentState.FAILED)


def reconcile_candidates(
    fleet: Registry,
    transitions: Iterable[Transition],
    records: Mapping[str, AgentRecord],
    budgets: Mapping[str, RestartBudget],
    now: datetime,
) -> list[str]:
    """Docker agents reconcile should look at after a monitor cycle: those that just turned failed
    or unhealthy (a vanished container turns failed), and those whose deferred restart is due."""
    ids: list[str] = []
    for t in transitions:
        agent = fleet.get(t.agent_id)
        down = t.to_state in (AgentState.FAILED, AgentState.UNHEALTHY)
        # A budget reconcile already found spent is not news to it: its retry is due at `retry_at`.
        # One the monitor found spent first is: reconcile records it once and schedules that retry.
        known = (budget := budgets.get(t.agent_id)) is not None and budget.exhausted_at is not None
        if agent is not None and is_docker_agent(agent) and down and not known:
            ids.append(t.agent_id)
    for agent_id, budget in sorted(budgets.items()):
        record = records.get(agent_id)
        due = budget.retry_at is not None and budget.retry_at <= now
        if due and record is not None and record.state.is_down and fleet.get(agent_id) and agent_id not in ids:
            ids.append(agent_id)
    return ids
