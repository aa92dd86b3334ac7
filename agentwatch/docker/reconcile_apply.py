"""Carrying out a reconcile plan against the engine and the store it is given.

The order is the point:
1. Claim budgets: every budget change of the plan is stored before it is acted on, with
   compare-and-swap on the version it was read at. A budget another reconcile run changed since
   means that run got there first: the step is dropped here, so two overlapping runs restart a
   container once.
2. Record exit information (and spent budgets) ...
3. ... then act on the containers (concurrently) ...
4. ... then record what the actions led to (restarted -> starting): an agent's history reads
   "failed: exited with code 3" before "starting: restarted".

Engine and store are passed in (`ContainerOps`, `BudgetStore`: DockerEngine and StateStore are
ones). What a person or an automation sees of it (events, progress, log lines) goes through the
`ActionWatcher` the caller gives; the result says what happened.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from ..errors import ContainerOpFailed, EngineUnavailable
from ..models import AgentRecord, AgentState, Transition
from ..registry import Registry
from .budget import RestartBudget
from .reconcile import Action, Kind
from .recording import Assertion, RecordStore, commit_assertions

__all__ = [
    "ActionWatcher",
    "BudgetStore",
    "ContainerOps",
    "Outcome",
    "ReconcileResult",
    "act_on_containers",
    "apply_reconcile",
    "claim_budgets",
    "planned",
]


class ContainerOps(Protocol):
    """What reconcile asks of an engine; each raises ContainerOpFailed or EngineUnavailable."""

    async def start(self, container_id: str) -> None: ...
    async def restart(self, container_id: str, timeout: float) -> None: ...
    async def stop(self, container_id: str, timeout: float) -> None: ...
    async def remove(self, container_id: str) -> None: ...


class BudgetStore(RecordStore, Protocol):
    """The records and restart budgets of the state store."""

    async def save_restart_budget(self, budget: RestartBudget) -> RestartBudget | None: ...
    async def drop_missing_restart_budgets(self, keep: Iterable[str]) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class Outcome:
    """What came of one container action: done, or the engine's refusal."""

    action: Action
    ok: bool
    detail: str = ""
    stopped: bool = False  # a running orphan was stopped before its removal

    def row(self) -> dict[str, Any]:
        return {**self.action.row(), "outcome": "done" if self.ok else f"failed: {self.detail}"}


class ActionWatcher(Protocol):
    """Told before the container actions start and as each one ends (progress, events, logs)."""

    async def begin(self, total: int) -> None: ...
    async def done(self, outcome: Outcome) -> None: ...


@dataclass(frozen=True)
class ReconcileResult:
    """A reconcile run's steps and what came of them; a dry run's are only `planned`."""

    actions: list[Action]  # the steps carried out (after the budget claims), or planned
    outcomes: list[Outcome] = field(default_factory=list)  # of the container actions, in their order
    lost: list[Action] = field(default_factory=list)  # dropped: another run changed the budget first
    transitions: list[Transition] = field(default_factory=list)  # committed, exits before restarts
    conflicts: list[str] = field(default_factory=list)  # records another run changed meanwhile
    dry_run: bool = False

    @property
    def done(self) -> int:
        return sum(1 for o in self.outcomes if o.ok)

    @property
    def newly_exhausted(self) -> list[Action]:
        """Budgets found spent for the first time: said once, by an event."""
        return [a for a in self.actions if a.kind is Kind.EXHAUSTED and a.notify and a.container is not None]

    def rows(self) -> list[dict[str, Any]]:
        """One row per step; container actions carry their outcome."""
        if self.dry_run:
            return [{**a.row(), "outcome": "planned"} for a in self.actions]
        pending = iter(self.outcomes)
        rows = []
        for action in self.actions:
            if action.mutating:
                rows.append(next(pending).row())
            else:
                rows.append({**action.row(), "outcome": "-" if action.kind is Kind.LEAVE else "done"})
        return rows


def planned(actions: Sequence[Action]) -> ReconcileResult:
    """A dry run: the plan, nothing changed."""
    return ReconcileResult(list(actions), dry_run=True)


async def claim_budgets(store: BudgetStore, actions: Sequence[Action]) -> tuple[list[Action], list[Action]]:
    """Store each budget change before acting on it: (kept, lost). A budget another reconcile
    run changed since it was read means that run got there first: its step is lost."""
    kept: list[Action] = []
    lost: list[Action] = []
    for action in actions:
        if action.budget is None:
            kept.append(action)
            continue
        saved = await store.save_restart_budget(action.budget)
        if saved is None:
            lost.append(action)
        else:
            kept.append(replace(action, budget=saved))
    return kept, lost


async def act_on_containers(
    engine: ContainerOps, actions: Sequence[Action], stop_timeout: float, watcher: ActionWatcher | None = None
) -> list[Outcome]:
    """Carry out the starts, restarts and removals of `actions` concurrently (a running orphan is
    stopped before it is removed); outcomes in the actions' order."""
    mutating = [a for a in actions if a.mutating]
    if watcher is not None:
        await watcher.begin(len(mutating))

    async def one(action: Action) -> Outcome:
        info = action.container
        assert info is not None
        stopped = False
        try:
            if action.kind is Kind.START:
                await engine.start(info.id)
            elif action.kind is Kind.RESTART:
                await engine.restart(info.id, stop_timeout)
            else:
                if info.running:
                    await engine.stop(info.id, stop_timeout)
                    stopped = True
                await engine.remove(info.id)
            outcome = Outcome(action, True, stopped=stopped)
        except (ContainerOpFailed, EngineUnavailable) as exc:
            outcome = Outcome(action, False, str(exc), stopped=stopped)
        if watcher is not None:
            await watcher.done(outcome)
        return outcome

    return list(await asyncio.gather(*(one(a) for a in mutating)))


async def apply_reconcile(
    actions: Sequence[Action],
    *,
    fleet: Registry,
    records: Mapping[str, AgentRecord],
    engine: ContainerOps,
    store: BudgetStore,
    stop_timeout: float,
    now: datetime,
    run_id: str | None = None,
    watcher: ActionWatcher | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> ReconcileResult:
    """Carry out a plan made at `now` from `records`, in the order of this module's docstring.
    Budgets of agents no longer in the fleet are forgotten on the way."""
    kept, lost = await claim_budgets(store, actions)
    await store.drop_missing_restart_budgets(fleet.ids)
    exits = [
        Assertion(a.agent_id, a.state, a.reason, a.cause)
        for a in kept
        if a.kind in (Kind.RECORD, Kind.EXHAUSTED) and a.agent_id is not None and a.state is not None
    ]
    first = await commit_assertions(store, fleet, records, exits, now, run_id)
    records = {**records, **{r.agent_id: r for r in first.saved}}
    outcomes = await act_on_containers(engine, kept, stop_timeout, watcher)
    restarts = [
        Assertion(o.action.agent_id, AgentState.STARTING, f"restarted: {o.action.reason}")
        for o in outcomes
        if o.ok and o.action.kind in (Kind.START, Kind.RESTART) and o.action.agent_id is not None
    ]
    second = await commit_assertions(store, fleet, records, restarts, clock(), run_id)
    return ReconcileResult(
        kept,
        outcomes,
        lost,
        [*first.transitions, *second.transitions],
        sorted({*first.conflicts, *second.conflicts}),
    )
