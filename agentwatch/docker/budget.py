"""The restart budget: how often reconcile may restart one agent's container. Pure; time is passed in.

- At most `max_restarts` restarts in any sliding `window`; when they are spent the agent stays
  failed (asserted with `Cause.RESTART_BUDGET`; the reason says "restart budget exhausted") until
  the oldest restart leaves the window.
- Between restarts the wait doubles: `backoff` after the first, twice that after the second, ...
  capped at `backoff_max`. The first restart in a window is immediate.
- A clean run resets the budget: the container has run healthy for `reset_after` since it started.

Why both: the window caps the damage of a container that crashes at once, the backoff spaces
restarts so a slow dependency has time to come back, and the reset keeps a container that failed
once last week from starting this week's trouble with a spent budget.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from ..durations import format_duration
from ..settings import Settings

__all__ = [
    "BudgetRules",
    "Decision",
    "RestartBudget",
    "Verdict",
    "decide",
    "exhausted_reason",
    "is_clean_run",
    "record_restart",
]


@dataclass(frozen=True, slots=True)
class BudgetRules:
    """The limits of the restart budget (from settings)."""

    max_restarts: int = 3
    window: timedelta = timedelta(minutes=10)
    backoff: timedelta = timedelta(seconds=10)
    backoff_max: timedelta = timedelta(minutes=5)
    reset_after: timedelta = timedelta(minutes=2)

    @classmethod
    def from_settings(cls, settings: Settings) -> BudgetRules:
        return cls(
            max_restarts=settings.restart_max,
            window=settings.restart_window,
            backoff=settings.restart_backoff,
            backoff_max=settings.restart_backoff_max,
            reset_after=settings.restart_reset_after,
        )

    def wait_after(self, restarts: int) -> timedelta:
        """The backoff owed after `restarts` restarts in the window."""
        if restarts <= 0:
            return timedelta(0)
        return min(self.backoff_max, self.backoff * (2 ** min(restarts - 1, 32)))


@dataclass(frozen=True, slots=True)
class RestartBudget:
    """One agent's restart history, stored between runs (compare-and-swap on `version`)."""

    agent_id: str
    restarts: tuple[datetime, ...] = ()  # when reconcile restarted the container, oldest first
    # Set when reconcile found the budget spent (once per exhaustion, so its event is emitted once):
    # reconcile knows, and `retry_at` says when it tries again. Cleared by the next restart.
    exhausted_at: datetime | None = None
    retry_at: datetime | None = None  # when a deferred or refused restart may be tried again
    version: int = 0  # 0 = not stored yet

    def recent(self, rules: BudgetRules, now: datetime) -> tuple[datetime, ...]:
        return tuple(t for t in self.restarts if now - t < rules.window)

    def is_exhausted(self, rules: BudgetRules, now: datetime) -> bool:
        return len(self.recent(rules, now)) >= rules.max_restarts

    @property
    def empty(self) -> bool:
        return not self.restarts and self.exhausted_at is None and self.retry_at is None

    def reset(self) -> RestartBudget:
        """The budget after a clean run: nothing used, written over this one's version."""
        return RestartBudget(self.agent_id, version=self.version)


def exhausted_reason(detail: str) -> str:
    """The reason an agent with a spent budget is failed: the one wording, never matched on."""
    return f"restart budget exhausted: {detail}"


class Verdict(StrEnum):
    ALLOWED = "allowed"
    BACKOFF = "backoff"
    EXHAUSTED = "exhausted"


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether a restart may happen now; `budget` is the record to store with the decision."""

    verdict: Verdict
    budget: RestartBudget
    reason: str
    newly_exhausted: bool = False


def decide(budget: RestartBudget, rules: BudgetRules, now: datetime) -> Decision:
    """May the agent's container be restarted at `now`? Restarting is recorded by `record_restart`."""
    recent = budget.recent(rules, now)
    used = f"{len(recent)} of {rules.max_restarts} restarts in {format_duration(rules.window)}"
    if len(recent) >= rules.max_restarts:
        retry = (min(recent) + rules.window) if recent else None
        updated = replace(budget, restarts=recent, exhausted_at=budget.exhausted_at or now, retry_at=retry)
        return Decision(Verdict.EXHAUSTED, updated, exhausted_reason(used), budget.exhausted_at is None)
    if recent:
        wait = rules.wait_after(len(recent))
        ready = max(recent) + wait
        if now < ready:
            updated = replace(budget, restarts=recent, retry_at=ready)
            reason = f"restart deferred until {ready.isoformat(timespec='seconds')} (backoff {format_duration(wait)}; {used})"
            return Decision(Verdict.BACKOFF, updated, reason)
    return Decision(
        Verdict.ALLOWED, replace(budget, restarts=recent), f"restart {len(recent) + 1} of {rules.max_restarts}"
    )


def record_restart(budget: RestartBudget, rules: BudgetRules, now: datetime) -> RestartBudget:
    """The budget after a restart at `now` (an allowed decision's budget, with the restart added)."""
    return replace(budget, restarts=(*budget.recent(rules, now), now), exhausted_at=None, retry_at=None)


def is_clean_run(started_at: datetime | None, healthy: bool, rules: BudgetRules, now: datetime) -> bool:
    """True when a container has run healthy long enough since it started to reset its budget."""
    return healthy and started_at is not None and now - started_at >= rules.reset_after
