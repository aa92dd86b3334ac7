"""Which container belongs to which agent, and what the monitor does with that knowledge.

The monitor probes, reconcile acts. Between them sit three rules kept here, so both apply them
the same way:
- a recorded stop stays a stop: once shutdown (or reconcile) recorded an agent stopped after its
  container exited, that exit (SIGTERM's 143, or 137 after the stop timeout) is not a crash;
- a spent restart budget keeps the agent failed, with that reason, until the budget refills;
- a label-registered agent probed over HTTP/TCP whose container has exited is judged by the exit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime

from ..models import AgentRecord, AgentState, ProbeResult, Transition
from ..policy import evaluate
from ..registry import AgentSpec, Registry
from .budget import BudgetRules, RestartBudget
from .labels import is_docker_agent
from .probe import container_result
from .state import ContainerInfo

__all__ = [
    "EXHAUSTED",
    "asserted_changes",
    "bind_containers",
    "reconcile_candidates",
    "recorded_stop",
    "settle_results",
]

EXHAUSTED = "restart budget exhausted"
_EPOCH = datetime.min.replace(tzinfo=UTC)
Change = tuple[AgentRecord, Transition | None]


def bind_containers(
    fleet: Registry, listed: Iterable[ContainerInfo], inspected: Mapping[str, ContainerInfo | None] | None = None
) -> dict[str, ContainerInfo | None]:
    """Each fleet agent's container: its docker probe's target, else (for an agent registered by
    labels) the newest running container labelled with its id. None = a docker probe whose
    container the engine does not have.

    A registry agent is bound only to what its docker probe names: a container labelled with its
    id is not its container (anyone can write a label), so an HTTP agent of the registry has none.
    `inspected` maps docker probe refs the listing did not cover to what `inspect` found.
    """
    listed = list(listed)
    by_label: dict[str, ContainerInfo] = {}
    for info in sorted(listed, key=lambda i: (i.running, i.created or _EPOCH)):
        if info.agent_label:
            by_label[info.agent_label] = info  # sorted ascending: the preferred one lands last
    bound: dict[str, ContainerInfo | None] = {}
    for agent in fleet.agents:
        ref = agent.probe.docker.container if agent.probe and agent.probe.docker else None
        if ref is not None:
            found = next((i for i in listed if i.id == ref or i.matches(ref)), None)
            bound[agent.id] = found if found is not None else (inspected or {}).get(ref)
        elif agent.source == "docker" and agent.id in by_label:
            bound[agent.id] = by_label[agent.id]
    return bound


def recorded_stop(result: ProbeResult, record: AgentRecord | None) -> bool:
    """True when `result` reports the very exit that agentwatch already recorded as a stop."""
    finished = result.details.get("finished_at")
    exited = result.state in (AgentState.FAILED, AgentState.STOPPED)
    if not exited or record is None or record.state is not AgentState.STOPPED:
        return False
    if not finished or record.since is None or result.details.get("oom_killed"):
        return False
    return datetime.fromisoformat(finished) <= record.since


def settle_results(
    results: Iterable[ProbeResult],
    fleet: Registry,
    records: Mapping[str, AgentRecord],
    budgets: Mapping[str, RestartBudget],
    containers: Mapping[str, ContainerInfo | None],
    rules: BudgetRules,
    now: datetime,
) -> list[ProbeResult]:
    """The monitor's probe results with the rules of this module's docstring applied."""
    out = []
    for result in results:
        agent = fleet.get(result.agent_id)
        if agent is None or not is_docker_agent(agent):
            out.append(result)
            continue
        info = containers.get(agent.id)
        kind = agent.probe.kind if agent.probe else None
        if info is not None and kind in ("http", "tcp") and not info.running and not result.skipped:
            result = container_result(agent.id, info.name, info, result.latency_ms)
        record = records.get(agent.id)
        budget = budgets.get(agent.id)
        if recorded_stop(result, record):
            assert record is not None
            result = ProbeResult(
                agent.id, ok=False, state=AgentState.STOPPED, reason=record.reason, details=result.details
            )
        elif budget is not None and _failing(result) and budget.is_exhausted(rules, now):
            reason = result.reason if result.reason.startswith(EXHAUSTED) else f"{EXHAUSTED}: {result.reason}"
            result = ProbeResult(agent.id, ok=False, state=AgentState.FAILED, reason=reason, details=result.details)
        out.append(result)
    return out


def _failing(result: ProbeResult) -> bool:
    return not result.ok and not result.skipped and result.state in (None, AgentState.FAILED)


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
        # A budget reconcile found spent is not news to reconcile.
        if agent is not None and is_docker_agent(agent) and down and not t.reason.startswith(EXHAUSTED):
            ids.append(t.agent_id)
    for agent_id, budget in sorted(budgets.items()):
        record = records.get(agent_id)
        due = budget.retry_at is not None and budget.retry_at <= now
        if due and record is not None and record.state.is_down and fleet.get(agent_id) and agent_id not in ids:
            ids.append(agent_id)
    return ids


def asserted_changes(
    fleet: Registry,
    records: Mapping[str, AgentRecord],
    wanted: Sequence[tuple[str, AgentState, str]],
    now: datetime,
) -> list[Change]:
    """Records for states reconcile or shutdown assert (agent, state, reason), through the policy,
    so they are stored and published exactly like the monitor's. Paused agents are left as they are."""
    changes: list[Change] = []
    for agent_id, state, reason in wanted:
        agent: AgentSpec | None = fleet.get(agent_id)
        if agent is None:
            continue
        before = records.get(agent_id)
        evaluation = evaluate(before, ProbeResult(agent_id, ok=False, state=state, reason=reason), agent.policy, now)
        if evaluation.record != before:
            changes.append((evaluation.record, evaluation.transition))
    return changes
