"""What reconcile and shutdown assert about agents, and how it reaches the store.

A state reconcile or shutdown knows outright (an exit, a spent budget, a restart, a stop) goes
through the health policy as an asserted probe result, so it is stored and published exactly like
the monitor's. The store is passed in (`RecordStore`: agentwatch.store.StateStore is one); this
package never imports it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from ..models import AgentRecord, AgentState, Asserted, Cause, ProbeResult, Transition
from ..policy import Evaluation, evaluate
from ..registry import Registry

__all__ = ["Assertion", "CommitOutcome", "RecordStore", "asserted_evaluations", "commit_assertions"]


@dataclass(frozen=True, slots=True)
class Assertion:
    """One agent's state as reconcile or shutdown knows it, why, and how it knows."""

    agent_id: str
    state: AgentState
    reason: str
    cause: Cause = Cause.CONTAINER


class CommitOutcome(Protocol):
    """What a store commit wrote (agentwatch.store.CommitResult)."""

    @property
    def saved(self) -> Sequence[AgentRecord]: ...
    @property
    def transitions(self) -> Sequence[Transition]: ...
    @property
    def conflicts(self) -> Sequence[str]: ...


class RecordStore(Protocol):
    """The agent records of the state store, as reconcile and shutdown use them."""

    async def load(self, agent_ids: Iterable[str] | None = None) -> dict[str, AgentRecord]: ...

    async def commit(self, changes: Sequence[Evaluation], run_id: str | None = None) -> CommitOutcome: ...


def asserted_evaluations(
    fleet: Registry, records: Mapping[str, AgentRecord], wanted: Iterable[Assertion], now: datetime
) -> list[Evaluation]:
    """The policy's evaluation of each assertion whose record it changes; agents not in the fleet
    are skipped, paused agents are left as they are (the policy keeps them)."""
    out: list[Evaluation] = []
    for want in wanted:
        agent = fleet.get(want.agent_id)
        if agent is None:
            continue
        before = records.get(want.agent_id)
        result = ProbeResult(want.agent_id, ok=False, reason=want.reason, override=Asserted(want.state, want.cause))
        evaluation = evaluate(before, result, agent.policy, now)
        if evaluation.record != before:
            out.append(evaluation)
    return out


async def commit_assertions(
    store: RecordStore,
    fleet: Registry,
    records: Mapping[str, AgentRecord],
    wanted: Iterable[Assertion],
    now: datetime,
    run_id: str | None,
) -> CommitOutcome:
    """Evaluate the assertions against `records` and commit them (compare-and-swap per record)."""
    evaluations = asserted_evaluations(fleet, records, wanted, now)
    return await store.commit(evaluations, run_id=run_id)
