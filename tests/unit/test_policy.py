"""The health policy as a state machine: sequences of probe results walked step by step, time injected."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from agentwatch.models import AgentRecord, Asserted, Cause, NotProbed, ProbeResult, Transition
from agentwatch.models import AgentState as S
from agentwatch.policy import Evaluation, backoff_delay, evaluate, is_due, new_record, pause, resume
from agentwatch.registry import Policy

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
AGENT = "web-1"
OK = True
FAIL = False
REFUSED = "connection refused"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def policy(**fields: object) -> Policy:
    return Policy(**fields)  # type: ignore[arg-type]


_CAUSES = {S.UNMANAGED: Cause.UNMANAGED, S.UNKNOWN: Cause.ENGINE_UNREACHABLE}


def asserted(state: S, reason: str = "") -> ProbeResult:
    return ProbeResult(AGENT, ok=False, reason=reason, override=Asserted(state, _CAUSES.get(state, Cause.CONTAINER)))


def claimed(state: S, *, ok: bool, reason: str = "") -> ProbeResult:
    """A result asserting a state that only counting derives: the policy ignores the claim."""
    return ProbeResult(AGENT, ok=ok, reason=reason, override=Asserted(state, Cause.CONTAINER))


SKIP = ProbeResult(AGENT, ok=False, override=NotProbed())


@dataclass(frozen=True)
class Pause:
    until: float | None = None  # seconds after T0


RESUME = "resume"

Action = bool | ProbeResult | Pause | str


@dataclass(frozen=True)
class Step:
    """One step: at `at` seconds apply `action`; then expect (state, failures, successes) and `moved`."""

    at: float
    action: Action
    state: S
    failures: int
    successes: int
    moved: tuple[S, S] | None = None


def probe_result(action: bool | ProbeResult) -> ProbeResult:
    if isinstance(action, ProbeResult):
        return action
    return ProbeResult(AGENT, ok=action, latency_ms=12.0, reason="200 OK" if action else REFUSED)


def apply(rec: AgentRecord | None, action: Action, pol: Policy, now: datetime) -> Evaluation:
    if isinstance(action, Pause):
        base = rec if rec is not None else new_record(AGENT, now)
        return pause(base, now, until=at(action.until) if action.until is not None else None)
    if action == RESUME:
        assert rec is not None
        return resume(rec, now)
    assert isinstance(action, bool | ProbeResult)
    return evaluate(rec, probe_result(action), pol, now)


def walk(pol: Policy, steps: list[Step]) -> AgentRecord:
    rec: AgentRecord | None = None
    for i, step in enumerate(steps):
        now = at(step.at)
        ev = apply(rec, step.action, pol, now)
        new, tr = ev.record, ev.transition
        where = f"step {i} (t={step.at}s, {step.action!r})"
        assert (new.state, new.failures, new.successes) == (step.state, step.failures, step.successes), where
        assert new.agent_id == AGENT, where
        if step.moved is None:
            assert tr is None, f"{where}: unexpected transition {tr}"
            if rec is not None:
                assert new.since == rec.since, f"{where}: `since` moved without a transition"
        else:
            assert tr is not None, f"{where}: expected a transition {step.moved}"
            assert (tr.from_state, tr.to_state) == step.moved, where
            assert tr.agent_id == AGENT, where
            assert tr.at == now == new.since, where
            assert tr.failures == new.failures, where
            assert tr.reason == new.reason, where
        rec = new
    assert rec is not None
    return rec


CASES = [
    pytest.param(
        policy(),
        [
            Step(0, FAIL, S.DEGRADED, 1, 0, (S.UNKNOWN, S.DEGRADED)),
            Step(10, FAIL, S.DEGRADED, 2, 0),
            Step(20, FAIL, S.UNHEALTHY, 3, 0, (S.DEGRADED, S.UNHEALTHY)),
            Step(30, FAIL, S.UNHEALTHY, 4, 0),
            Step(40, FAIL, S.UNHEALTHY, 5, 0),
            Step(50, OK, S.HEALTHY, 0, 1, (S.UNHEALTHY, S.HEALTHY)),
            Step(60, OK, S.HEALTHY, 0, 2),
        ],
        id="fail-to-threshold-then-one-success-recovers",
    ),
    pytest.param(
        policy(),
        [
            Step(0, OK, S.HEALTHY, 0, 1, (S.UNKNOWN, S.HEALTHY)),
            Step(10, OK, S.HEALTHY, 0, 2),
            Step(20, FAIL, S.DEGRADED, 1, 0, (S.HEALTHY, S.DEGRADED)),
            Step(30, FAIL, S.DEGRADED, 2, 0),
            Step(40, OK, S.HEALTHY, 0, 1, (S.DEGRADED, S.HEALTHY)),
            Step(50, FAIL, S.DEGRADED, 1, 0, (S.HEALTHY, S.DEGRADED)),
        ],
        id="degraded-below-threshold-and-back",
    ),
    pytest.param(
        policy(failure_threshold=1),
        [
            Step(0, OK, S.HEALTHY, 0, 1, (S.UNKNOWN, S.HEALTHY)),
            Step(10, FAIL, S.UNHEALTHY, 1, 0, (S.HEALTHY, S.UNHEALTHY)),
            Step(20, FAIL, S.UNHEALTHY, 2, 0),
        ],
        id="threshold-1-straight-to-unhealthy",
    ),
    pytest.param(
        policy(failure_threshold=2, success_threshold=2),
        [
            Step(0, FAIL, S.DEGRADED, 1, 0, (S.UNKNOWN, S.DEGRADED)),
            Step(10, FAIL, S.UNHEALTHY, 2, 0, (S.DEGRADED, S.UNHEALTHY)),
            # Recovering keeps the failure count until the agent is healthy again.
            Step(20, OK, S.UNHEALTHY, 2, 1),
            Step(30, OK, S.HEALTHY, 0, 2, (S.UNHEALTHY, S.HEALTHY)),
            Step(40, OK, S.HEALTHY, 0, 3),
        ],
        id="success-threshold-2-from-unhealthy",
    ),
    pytest.param(
        policy(success_threshold=2),
        [
            Step(0, OK, S.HEALTHY, 0, 1, (S.UNKNOWN, S.HEALTHY)),
            Step(10, FAIL, S.DEGRADED, 1, 0, (S.HEALTHY, S.DEGRADED)),
            Step(20, OK, S.DEGRADED, 1, 1),
            Step(30, OK, S.HEALTHY, 0, 2, (S.DEGRADED, S.HEALTHY)),
        ],
        id="success-threshold-2-from-degraded",
    ),
    pytest.param(
        policy(success_threshold=3),
        [Step(0, OK, S.HEALTHY, 0, 1, (S.UNKNOWN, S.HEALTHY))],
        id="success-threshold-3-new-agent-healthy-on-first-success",
    ),
    pytest.param(
        policy(success_threshold=2, start_grace=timedelta(seconds=30)),
        [
            Step(0, FAIL, S.STARTING, 0, 0, (S.UNKNOWN, S.STARTING)),
            Step(10, OK, S.HEALTHY, 0, 1, (S.STARTING, S.HEALTHY)),
        ],
        id="success-threshold-2-starting-agent-healthy-on-first-success",
    ),
    pytest.param(
        policy(start_grace=timedelta(seconds=30)),
        [
            Step(0, FAIL, S.STARTING, 0, 0, (S.UNKNOWN, S.STARTING)),
            Step(10, FAIL, S.STARTING, 0, 0),
            Step(29, FAIL, S.STARTING, 0, 0),
            Step(30, FAIL, S.DEGRADED, 1, 0, (S.STARTING, S.DEGRADED)),
            Step(40, FAIL, S.DEGRADED, 2, 0),
            Step(50, FAIL, S.UNHEALTHY, 3, 0, (S.DEGRADED, S.UNHEALTHY)),
        ],
        id="grace-failures-not-counted-then-counted",
    ),
    pytest.param(
        policy(start_grace=timedelta(seconds=60)),
        [
            Step(0, FAIL, S.STARTING, 0, 0, (S.UNKNOWN, S.STARTING)),
            Step(10, OK, S.HEALTHY, 0, 1, (S.STARTING, S.HEALTHY)),
            # Inside the window still, but the agent has come up: failures count now.
            Step(20, FAIL, S.DEGRADED, 1, 0, (S.HEALTHY, S.DEGRADED)),
        ],
        id="grace-ends-once-healthy",
    ),
    pytest.param(
        policy(),
        [
            Step(0, OK, S.HEALTHY, 0, 1, (S.UNKNOWN, S.HEALTHY)),
            Step(10, asserted(S.STOPPED, "exited with code 0"), S.STOPPED, 0, 0, (S.HEALTHY, S.STOPPED)),
            Step(20, asserted(S.STOPPED, "exited with code 0"), S.STOPPED, 0, 0),
            Step(30, OK, S.HEALTHY, 0, 1, (S.STOPPED, S.HEALTHY)),
        ],
        id="asserted-stopped",
    ),
    pytest.param(
        policy(),
        [
            Step(0, asserted(S.FAILED, "OOM-killed"), S.FAILED, 1, 0, (S.UNKNOWN, S.FAILED)),
            Step(10, asserted(S.FAILED, "OOM-killed"), S.FAILED, 2, 0),
            Step(20, FAIL, S.UNHEALTHY, 3, 0, (S.FAILED, S.UNHEALTHY)),
        ],
        id="asserted-failed-counts-failures",
    ),
    pytest.param(
        policy(success_threshold=2),
        [
            Step(0, asserted(S.FAILED, "exited with code 1"), S.FAILED, 1, 0, (S.UNKNOWN, S.FAILED)),
            Step(10, OK, S.FAILED, 1, 1),
            Step(20, OK, S.HEALTHY, 0, 2, (S.FAILED, S.HEALTHY)),
        ],
        id="asserted-failed-recovers-with-success-threshold",
    ),
    pytest.param(
        policy(),
        [
            Step(0, FAIL, S.DEGRADED, 1, 0, (S.UNKNOWN, S.DEGRADED)),
            Step(10, FAIL, S.DEGRADED, 2, 0),
            Step(20, asserted(S.UNKNOWN, "engine unreachable"), S.UNKNOWN, 2, 0, (S.DEGRADED, S.UNKNOWN)),
            Step(30, asserted(S.UNKNOWN, "engine unreachable"), S.UNKNOWN, 2, 0),
            Step(40, FAIL, S.UNHEALTHY, 3, 0, (S.UNKNOWN, S.UNHEALTHY)),
        ],
        id="asserted-unknown-keeps-failure-count",
    ),
    pytest.param(
        policy(),
        [
            Step(0, FAIL, S.DEGRADED, 1, 0, (S.UNKNOWN, S.DEGRADED)),
            Step(10, asserted(S.STARTING, "health: starting"), S.STARTING, 0, 0, (S.DEGRADED, S.STARTING)),
            Step(20, OK, S.HEALTHY, 0, 1, (S.STARTING, S.HEALTHY)),
        ],
        id="asserted-starting-resets-failures",
    ),
    pytest.param(
        policy(),
        [
            Step(0, asserted(S.UNMANAGED, "stdio"), S.UNMANAGED, 0, 0, (S.UNKNOWN, S.UNMANAGED)),
            Step(10, asserted(S.UNMANAGED, "stdio"), S.UNMANAGED, 0, 0),
        ],
        id="asserted-unmanaged",
    ),
    pytest.param(
        policy(),
        [
            # Only some states can be asserted; others are derived from ok/failure counting.
            Step(0, claimed(S.HEALTHY, ok=False, reason=REFUSED), S.DEGRADED, 1, 0, (S.UNKNOWN, S.DEGRADED)),
            Step(10, claimed(S.UNHEALTHY, ok=True), S.HEALTHY, 0, 1, (S.DEGRADED, S.HEALTHY)),
            Step(20, claimed(S.PAUSED, ok=True), S.HEALTHY, 0, 2),
        ],
        id="non-assertable-states-are-ignored",
    ),
    pytest.param(
        policy(),
        [
            Step(0, SKIP, S.UNKNOWN, 0, 0),
            Step(5, OK, S.HEALTHY, 0, 1, (S.UNKNOWN, S.HEALTHY)),
            Step(10, SKIP, S.HEALTHY, 0, 1),
            Step(20, FAIL, S.DEGRADED, 1, 0, (S.HEALTHY, S.DEGRADED)),
            Step(30, SKIP, S.DEGRADED, 1, 0),
            Step(40, FAIL, S.DEGRADED, 2, 0),
        ],
        id="skipped-results-change-nothing",
    ),
    pytest.param(
        policy(),
        [
            Step(0, OK, S.HEALTHY, 0, 1, (S.UNKNOWN, S.HEALTHY)),
            Step(10, Pause(), S.PAUSED, 0, 1, (S.HEALTHY, S.PAUSED)),
            Step(20, FAIL, S.PAUSED, 0, 1),
            Step(30, FAIL, S.PAUSED, 0, 1),
            Step(40, FAIL, S.PAUSED, 0, 1),
            Step(50, FAIL, S.PAUSED, 0, 1),
            Step(60, asserted(S.FAILED, "exited with code 137"), S.PAUSED, 0, 1),
            Step(70, OK, S.PAUSED, 0, 1),
            Step(80, Pause(), S.PAUSED, 0, 1),
            Step(90, RESUME, S.UNKNOWN, 0, 0, (S.PAUSED, S.UNKNOWN)),
            Step(100, FAIL, S.DEGRADED, 1, 0, (S.UNKNOWN, S.DEGRADED)),
        ],
        id="pause-ignores-results-until-resumed",
    ),
    pytest.param(
        policy(),
        [
            Step(0, FAIL, S.DEGRADED, 1, 0, (S.UNKNOWN, S.DEGRADED)),
            Step(10, FAIL, S.DEGRADED, 2, 0),
            Step(20, Pause(), S.PAUSED, 2, 0, (S.DEGRADED, S.PAUSED)),
            Step(30, RESUME, S.UNKNOWN, 0, 0, (S.PAUSED, S.UNKNOWN)),
            Step(40, FAIL, S.DEGRADED, 1, 0, (S.UNKNOWN, S.DEGRADED)),
            Step(50, FAIL, S.DEGRADED, 2, 0),
            Step(60, FAIL, S.UNHEALTHY, 3, 0, (S.DEGRADED, S.UNHEALTHY)),
        ],
        id="resume-resets-counters",
    ),
    pytest.param(
        policy(),
        [
            Step(0, OK, S.HEALTHY, 0, 1, (S.UNKNOWN, S.HEALTHY)),
            Step(10, RESUME, S.HEALTHY, 0, 1),
        ],
        id="resume-when-not-paused-is-a-no-op",
    ),
    pytest.param(
        policy(start_grace=timedelta(seconds=30)),
        [
            Step(0, FAIL, S.STARTING, 0, 0, (S.UNKNOWN, S.STARTING)),
            Step(40, FAIL, S.DEGRADED, 1, 0, (S.STARTING, S.DEGRADED)),
            Step(50, Pause(), S.PAUSED, 1, 0, (S.DEGRADED, S.PAUSED)),
            Step(100, RESUME, S.UNKNOWN, 0, 0, (S.PAUSED, S.UNKNOWN)),
            Step(110, FAIL, S.STARTING, 0, 0, (S.UNKNOWN, S.STARTING)),
            Step(129, FAIL, S.STARTING, 0, 0),
            Step(130, FAIL, S.DEGRADED, 1, 0, (S.STARTING, S.DEGRADED)),
        ],
        id="resume-restarts-start-grace",
    ),
    pytest.param(
        policy(),
        [
            Step(0, Pause(until=60), S.PAUSED, 0, 0, (S.UNKNOWN, S.PAUSED)),
            Step(30, FAIL, S.PAUSED, 0, 0),
            Step(59, FAIL, S.PAUSED, 0, 0),
        ],
        id="pause-until-holds-before-expiry",
    ),
]


@pytest.mark.parametrize(("pol", "steps"), CASES)
def test_state_machine_sequences(pol: Policy, steps: list[Step]) -> None:
    walk(pol, steps)


# --- reasons, `since` and the transition value --------------------------------------------------


def test_unhealthy_reason_names_count_and_probe_reason_and_since_stays() -> None:
    pol = policy()
    rec = walk(pol, [Step(0, FAIL, S.DEGRADED, 1, 0, (S.UNKNOWN, S.DEGRADED))])
    assert rec.reason == "failed 1 of 3 consecutive health checks: connection refused"
    rec = evaluate(rec, probe_result(FAIL), pol, at(10)).record
    assert rec.reason == "failed 2 of 3 consecutive health checks: connection refused"

    ev = evaluate(rec, probe_result(FAIL), pol, at(20))
    assert ev.record.reason == "unhealthy after 3 consecutive failed health checks: connection refused"
    assert ev.record.since == at(20)
    assert ev.transition is not None
    assert ev.transition.reason == "unhealthy after 3 consecutive failed health checks: connection refused"
    assert ev.transition.failures == 3

    later = evaluate(ev.record, probe_result(FAIL), pol, at(30))
    assert later.transition is None
    assert later.record.reason == "unhealthy after 4 consecutive failed health checks: connection refused"
    assert later.record.since == at(20)
    later = evaluate(later.record, ProbeResult(AGENT, ok=False, reason="timed out after 5s"), pol, at(40))
    assert later.record.reason == "unhealthy after 5 consecutive failed health checks: timed out after 5s"
    assert later.record.since == at(20)
    assert later.record.last_checked == at(40)


def test_recovering_reason_counts_successes() -> None:
    pol = policy(failure_threshold=1, success_threshold=3)
    rec = evaluate(None, probe_result(FAIL), pol, at(0)).record
    assert rec.state is S.UNHEALTHY
    rec = evaluate(rec, probe_result(OK), pol, at(10)).record
    assert rec.reason == "recovering: 1 of 3 successful health checks"
    rec = evaluate(rec, probe_result(OK), pol, at(20)).record
    assert rec.reason == "recovering: 2 of 3 successful health checks"
    assert rec.state is S.UNHEALTHY
    assert rec.since == at(0)
    ev = evaluate(rec, probe_result(OK), pol, at(30))
    assert ev.record.state is S.HEALTHY
    assert ev.record.reason == "200 OK"
    assert ev.transition == Transition(AGENT, S.UNHEALTHY, S.HEALTHY, "200 OK", 0, at(30))


def test_grace_reason_and_asserted_reason() -> None:
    pol = policy(start_grace=timedelta(seconds=30))
    ev = evaluate(None, probe_result(FAIL), pol, at(0))
    assert ev.record.reason == "starting (inside start grace): connection refused"
    assert ev.record.first_seen == at(0)
    ev = evaluate(ev.record, asserted(S.STOPPED, "exited with code 0"), pol, at(10))
    assert ev.record.reason == "exited with code 0"
    assert ev.transition == Transition(AGENT, S.STARTING, S.STOPPED, "exited with code 0", 0, at(10))


def test_grace_boundary_is_exclusive() -> None:
    pol = policy(start_grace=timedelta(seconds=30))
    first = evaluate(None, probe_result(FAIL), pol, at(0)).record
    just_inside = evaluate(first, probe_result(FAIL), pol, at(29.999)).record
    assert (just_inside.state, just_inside.failures) == (S.STARTING, 0)
    at_edge = evaluate(first, probe_result(FAIL), pol, at(30)).record
    assert (at_edge.state, at_edge.failures) == (S.DEGRADED, 1)


def test_grace_counts_from_first_seen_of_stored_record() -> None:
    pol = policy(start_grace=timedelta(seconds=60))
    # A record first seen long ago (e.g. loaded from the store) is out of grace at once.
    old = AgentRecord(AGENT, first_seen=at(-3600), since=at(-3600))
    ev = evaluate(old, probe_result(FAIL), pol, at(0))
    assert (ev.record.state, ev.record.failures) == (S.DEGRADED, 1)
    # A record without first_seen gets it now, so grace starts now.
    bare = AgentRecord(AGENT)
    ev = evaluate(bare, probe_result(FAIL), pol, at(0))
    assert ev.record.first_seen == at(0)
    assert (ev.record.state, ev.record.failures) == (S.STARTING, 0)


def test_new_record_and_first_evaluation_fields() -> None:
    assert new_record(AGENT, at(0)) == AgentRecord(AGENT, state=S.UNKNOWN, since=at(0), first_seen=at(0))
    ev = evaluate(None, ProbeResult(AGENT, ok=True, latency_ms=42.5, reason="200 OK"), policy(), at(0))
    assert ev.record == AgentRecord(
        agent_id=AGENT,
        state=S.HEALTHY,
        since=at(0),
        reason="200 OK",
        failures=0,
        successes=1,
        first_seen=at(0),
        last_checked=at(0),
        next_check=at(0),
        latency_ms=42.5,
    )
    assert ev.transition == Transition(AGENT, S.UNKNOWN, S.HEALTHY, "200 OK", 0, at(0))


def test_skipped_result_keeps_record_identical() -> None:
    rec = evaluate(None, probe_result(OK), policy(), at(0)).record
    ev = evaluate(rec, SKIP, policy(), at(100))
    assert ev.record == rec
    assert ev.transition is None


def test_transition_failures_is_new_count() -> None:
    pol = policy(failure_threshold=2)
    rec = walk(pol, [Step(0, OK, S.HEALTHY, 0, 1, (S.UNKNOWN, S.HEALTHY))])
    ev = evaluate(rec, probe_result(FAIL), pol, at(10))
    assert ev.transition is not None and ev.transition.failures == 1
    ev = evaluate(ev.record, probe_result(FAIL), pol, at(20))
    assert ev.transition is not None and ev.transition.failures == 2
    ev = evaluate(ev.record, probe_result(OK), pol, at(30))
    assert ev.transition is not None and ev.transition.failures == 0


def test_transition_payload() -> None:
    tr = Transition(AGENT, S.DEGRADED, S.UNHEALTHY, "unhealthy after 3 consecutive failed health checks: x", 3, at(20))
    assert tr.payload() == {
        "agent": "web-1",
        "from": "degraded",
        "to": "unhealthy",
        "reason": "unhealthy after 3 consecutive failed health checks: x",
        "failures": 3,
        "since": "2025-03-01T12:00:20+00:00",
    }
    assert set(tr.payload()) == {"agent", "from", "to", "reason", "failures", "since"}


def test_is_down() -> None:
    assert {s for s in S if s.is_down} == {S.UNHEALTHY, S.FAILED}


# --- pause and resume ---------------------------------------------------------------------------


def test_pause_reasons_and_fields() -> None:
    rec = evaluate(None, probe_result(OK), policy(), at(0)).record
    ev = pause(rec, at(10))
    assert ev.record.reason == "paused by operator"
    assert (ev.record.paused, ev.record.paused_until, ev.record.sticky) == (True, None, False)
    assert ev.transition == Transition(AGENT, S.HEALTHY, S.PAUSED, "paused by operator", 0, at(10))

    ev = pause(rec, at(10), until=at(70), sticky=True)
    assert ev.record.reason == "paused until 2025-03-01T12:01:10+00:00"
    assert (ev.record.paused, ev.record.paused_until, ev.record.sticky) == (True, at(70), True)

    ev = pause(rec, at(10), reason="deploying v2")
    assert ev.record.reason == "deploying v2"
    assert ev.transition is not None and ev.transition.reason == "deploying v2"


def test_paused_record_is_returned_unchanged_by_evaluate() -> None:
    rec = pause(evaluate(None, probe_result(OK), policy(), at(0)).record, at(10)).record
    for offset, action in [(20, FAIL), (30, OK), (40, asserted(S.FAILED, "x")), (50, SKIP)]:
        ev = evaluate(rec, probe_result(action) if isinstance(action, bool) else action, policy(), at(offset))
        assert ev.record == rec
        assert ev.transition is None


def test_resume_resets_timers_and_counters() -> None:
    pol = policy(interval=timedelta(seconds=10))
    rec = None
    for i in range(5):
        rec = evaluate(rec, probe_result(FAIL), pol, at(i * 10)).record
    assert rec is not None and rec.state is S.UNHEALTHY
    paused = pause(rec, at(60), until=at(600), sticky=True).record
    ev = resume(paused, at(120))
    assert ev.record == rec.evolve(
        state=S.UNKNOWN,
        since=at(120),
        reason="resumed",
        failures=0,
        successes=0,
        first_seen=at(120),
        next_check=None,
        paused=False,
        paused_until=None,
        sticky=False,
    )
    assert ev.transition == Transition(AGENT, S.PAUSED, S.UNKNOWN, "resumed", 0, at(120))
    assert is_due(ev.record, at(120))


def test_paused_until_expiry_auto_resumes() -> None:
    pol = policy(start_grace=timedelta(seconds=30))
    rec = evaluate(None, probe_result(OK), pol, at(0)).record
    rec = evaluate(rec, probe_result(FAIL), pol, at(5)).record
    paused = pause(rec, at(10), until=at(60)).record
    assert evaluate(paused, probe_result(OK), pol, at(59.9)).record == paused

    ev = evaluate(paused, probe_result(OK), pol, at(60))
    assert ev.record.state is S.HEALTHY
    assert (ev.record.failures, ev.record.successes) == (0, 1)
    assert (ev.record.paused, ev.record.paused_until, ev.record.sticky) == (False, None, False)
    assert ev.record.first_seen == at(60)
    assert ev.transition is not None and ev.transition.to_state is S.HEALTHY

    # Grace restarted at the expiry: a failure right after it is "starting", not counted.
    ev = evaluate(paused, probe_result(FAIL), pol, at(61))
    assert (ev.record.state, ev.record.failures) == (S.STARTING, 0)


def test_paused_until_expiry_transition_is_from_paused() -> None:
    paused = pause(evaluate(None, probe_result(OK), policy(), at(0)).record, at(10), until=at(60)).record
    ev = evaluate(paused, probe_result(OK), policy(), at(60))
    assert ev.transition is not None
    assert (ev.transition.from_state, ev.transition.to_state) == (S.PAUSED, S.HEALTHY)


def test_paused_until_expiry_with_skipped_result_records_transition() -> None:
    paused = pause(evaluate(None, probe_result(OK), policy(), at(0)).record, at(10), until=at(60)).record
    ev = evaluate(paused, SKIP, policy(), at(60))
    assert ev.record.state is S.UNKNOWN
    assert ev.transition is not None
    assert (ev.transition.from_state, ev.transition.to_state) == (S.PAUSED, S.UNKNOWN)


def test_failure_while_recovering_from_unhealthy_stays_unhealthy() -> None:
    pol = policy(success_threshold=2)
    rec = None
    for i in range(3):
        rec = evaluate(rec, probe_result(FAIL), pol, at(i * 10)).record
    rec = evaluate(rec, probe_result(OK), pol, at(30)).record
    assert rec.state is S.UNHEALTHY
    ev = evaluate(rec, probe_result(FAIL), pol, at(40))
    assert ev.record.state is S.UNHEALTHY
    assert ev.transition is None


# --- backoff and is_due -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pol", "delays"),
    [
        pytest.param(
            policy(interval=timedelta(seconds=10)),
            {0: 10, 1: 10, 2: 10, 3: 10, 4: 20, 5: 40, 6: 60, 7: 60, 1000: 60},
            id="interval-10s-cap-60s",
        ),
        pytest.param(
            policy(interval=timedelta(0), timeout=timedelta(seconds=5)),
            {0: 0, 2: 0, 3: 5, 4: 10, 5: 20, 6: 40, 7: 60, 8: 60},
            id="interval-0-uses-timeout-as-base",
        ),
        pytest.param(
            policy(failure_threshold=1, interval=timedelta(seconds=2), max_backoff=timedelta(seconds=15)),
            {0: 2, 1: 2, 2: 4, 3: 8, 4: 15, 5: 15},
            id="threshold-1-custom-cap",
        ),
        pytest.param(
            policy(interval=timedelta(seconds=10), max_backoff=timedelta(0)),
            {2: 10, 3: 10, 4: 10, 10: 10},
            id="max-backoff-0-never-doubles",
        ),
        pytest.param(
            policy(interval=timedelta(seconds=10), max_backoff=timedelta(days=365)),
            {3: 10, 4: 20, 20: 10 * 2**17, 35: 365 * 86400, 10**6: 365 * 86400},
            id="doublings-bounded-no-overflow",
        ),
    ],
)
def test_backoff_delay(pol: Policy, delays: dict[int, float]) -> None:
    got = {failures: backoff_delay(pol, failures) for failures in delays}
    assert got == {failures: timedelta(seconds=s) for failures, s in delays.items()}


def test_backoff_never_checks_more_often_than_interval() -> None:
    pol = policy(interval=timedelta(minutes=5))
    assert backoff_delay(pol, 3) >= timedelta(minutes=5)


@pytest.mark.parametrize(
    ("pol", "steps"),
    [
        pytest.param(
            policy(interval=timedelta(seconds=10)),
            [(FAIL, 10), (FAIL, 10), (FAIL, 10), (FAIL, 20), (FAIL, 40), (FAIL, 60), (FAIL, 60), (OK, 10), (FAIL, 10)],
            id="interval-10s",
        ),
        pytest.param(
            policy(timeout=timedelta(seconds=5)),
            [(FAIL, 0), (FAIL, 0), (FAIL, 5), (FAIL, 10), (FAIL, 20), (FAIL, 40), (FAIL, 60), (OK, 0)],
            id="every-run-timeout-base",
        ),
        pytest.param(
            policy(interval=timedelta(seconds=10)),
            [
                (asserted(S.FAILED, "exit 1"), 10),
                (asserted(S.FAILED, "exit 1"), 10),
                (asserted(S.FAILED, "exit 1"), 10),
                (asserted(S.FAILED, "exit 1"), 20),
                (asserted(S.STOPPED, "exit 0"), 10),
            ],
            id="asserted-failed-backs-off",
        ),
        pytest.param(
            policy(interval=timedelta(seconds=10), start_grace=timedelta(seconds=1000)),
            [(FAIL, 10), (FAIL, 10), (FAIL, 10), (FAIL, 10), (FAIL, 10)],
            id="no-backoff-inside-grace",
        ),
    ],
)
def test_next_check_follows_backoff(pol: Policy, steps: list[tuple[bool | ProbeResult, float]]) -> None:
    rec = None
    now = at(0)
    for i, (action, delay) in enumerate(steps):
        ev = evaluate(rec, probe_result(action), pol, now)
        rec = ev.record
        assert rec.last_checked == now, f"step {i}"
        assert rec.next_check == now + timedelta(seconds=delay), f"step {i}"
        now = rec.next_check + timedelta(seconds=1)


def _checked(delay: float, last: float = 0) -> AgentRecord:
    return AgentRecord(AGENT, last_checked=at(last), next_check=at(last + delay))


@pytest.mark.parametrize(
    ("record", "now", "due"),
    [
        pytest.param(None, 0, True, id="no-record"),
        pytest.param(new_record(AGENT, at(0)), 0, True, id="never-checked"),
        pytest.param(_checked(0), 0, True, id="interval-0-due-at-once"),
        pytest.param(_checked(30), 10, False, id="30s-early"),
        pytest.param(_checked(30), 26.9, False, id="30s-outside-tolerance"),
        pytest.param(_checked(30), 27, True, id="30s-tolerance-is-a-tenth"),
        pytest.param(_checked(30), 30, True, id="30s-on-time"),
        pytest.param(_checked(30), 300, True, id="30s-late"),
        pytest.param(_checked(120), 114.9, False, id="120s-outside-tolerance"),
        pytest.param(_checked(120), 115, True, id="120s-tolerance-capped-at-5s"),
        pytest.param(_checked(600), 594.9, False, id="600s-tolerance-capped-at-5s"),
        pytest.param(_checked(10).evolve(paused=True), 1000, False, id="paused-indefinitely"),
        pytest.param(_checked(10).evolve(paused=True, paused_until=at(60)), 59, False, id="paused-until-before"),
        pytest.param(_checked(10).evolve(paused=True, paused_until=at(60)), 60, True, id="paused-until-reached"),
    ],
)
def test_is_due(record: AgentRecord | None, now: float, due: bool) -> None:
    assert is_due(record, at(now)) is due


def test_is_due_false_for_paused_never_checked_agent() -> None:
    paused = pause(new_record(AGENT, at(0)), at(0)).record
    assert is_due(paused, at(10)) is False


def test_is_due_after_evaluate_with_backoff() -> None:
    pol = policy(interval=timedelta(seconds=10))
    rec = None
    for i in range(4):
        rec = evaluate(rec, probe_result(FAIL), pol, at(i * 100)).record
    assert rec is not None and rec.next_check == at(300 + 20)
    assert not is_due(rec, at(317.9))
    assert is_due(rec, at(318))  # tolerance: a tenth of the 20 s gap
