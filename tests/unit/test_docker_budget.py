"""The restart budget walked step by step with injected time: window, backoff, exhaustion, reset."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from agentwatch.docker.budget import BudgetRules, RestartBudget, Verdict, decide, is_clean_run, record_restart

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
RULES = BudgetRules(
    max_restarts=3,
    window=timedelta(minutes=10),
    backoff=timedelta(seconds=10),
    backoff_max=timedelta(seconds=30),
    reset_after=timedelta(minutes=2),
)
A, B, E = Verdict.ALLOWED, Verdict.BACKOFF, Verdict.EXHAUSTED


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# Each step: (seconds after T0 a restart is wanted, expected verdict). An allowed restart happens.
SEQUENCES = {
    "first-restart-is-immediate": [(0, A)],
    "backoff-doubles-between-restarts": [(0, A), (5, B), (10, A), (25, B), (30, A)],
    "spent-after-three-in-window": [(0, A), (10, A), (30, A), (100, E), (599, E)],
    "window-refills-budget": [(0, A), (10, A), (30, A), (600, A), (601, E), (611, B), (620, A)],
}
# Room for six restarts in the window, so the backoff (10s, 20s, 40s, 80s, 160s) reaches its 30s cap:
# the fourth restart is due 30s after the third (not 40s), the fifth 30s after the fourth (not 80s).
ROOMY = dataclasses.replace(RULES, max_restarts=6)
CAPPED = [(0, A), (10, A), (30, A), (59, B), (60, A), (89, B), (90, A), (119, B), (120, A), (130, E)]


@pytest.mark.parametrize(
    ("rules", "steps"),
    [*((RULES, steps) for steps in SEQUENCES.values()), (ROOMY, CAPPED)],
    ids=[*SEQUENCES.keys(), "backoff-capped"],
)
def test_sequences(rules: BudgetRules, steps: list[tuple[float, Verdict]]) -> None:
    budget = RestartBudget("a")
    for seconds, expected in steps:
        decision = decide(budget, rules, at(seconds))
        assert decision.verdict is expected, f"at {seconds}s: {decision.reason}"
        budget = decision.budget
        if decision.verdict is Verdict.ALLOWED:
            budget = record_restart(budget, rules, at(seconds))


def test_backoff_says_when() -> None:
    budget = record_restart(RestartBudget("a"), RULES, T0)
    decision = decide(budget, RULES, at(3))
    assert decision.verdict is B
    assert decision.budget.retry_at == at(10)
    assert "backoff 10s" in decision.reason


def test_exhaustion_is_news_once_and_says_when_it_refills() -> None:
    budget = RestartBudget("a", restarts=(at(0), at(10), at(30)))
    first = decide(budget, RULES, at(40))
    assert first.verdict is E and first.newly_exhausted
    assert first.reason.startswith("restart budget exhausted: 3 of 3 restarts in 10m")
    assert first.budget.retry_at == at(600)
    again = decide(first.budget, RULES, at(50))
    assert again.verdict is E and not again.newly_exhausted
    assert again.budget.exhausted_at == at(40)


def test_restart_clears_exhaustion_and_forgets_old_restarts() -> None:
    budget = RestartBudget("a", restarts=(at(0), at(10), at(30)), exhausted_at=at(40), retry_at=at(600))
    after = record_restart(budget, RULES, at(605))
    assert after.restarts == (at(10), at(30), at(605))
    assert after.exhausted_at is None and after.retry_at is None


def test_zero_budget_never_restarts() -> None:
    assert decide(RestartBudget("a"), BudgetRules(max_restarts=0), T0).verdict is E


@pytest.mark.parametrize(
    ("started", "healthy", "now", "clean"),
    [
        pytest.param(0, True, 120, True, id="healthy-long-enough"),
        pytest.param(0, True, 119, False, id="healthy-not-long-enough"),
        pytest.param(0, False, 1000, False, id="not-healthy"),
        pytest.param(None, True, 1000, False, id="never-started"),
    ],
)
def test_clean_run(started: float | None, healthy: bool, now: float, clean: bool) -> None:
    start = at(started) if started is not None else None
    assert is_clean_run(start, healthy, RULES, at(now)) is clean


def test_wait_after() -> None:
    assert [RULES.wait_after(n).total_seconds() for n in range(5)] == [0, 10, 20, 30, 30]
