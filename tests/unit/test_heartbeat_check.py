"""The missed-beat check and the health policy over it, walked step by step with time injected."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from agentwatch.beats import Beat, PingKind
from agentwatch.heartbeat.watch import clock_start, late_warnings, wake_on_beats
from agentwatch.models import AgentRecord, Asserted, Cause, Counted, OwnThreshold, Transition
from agentwatch.models import AgentState as S
from agentwatch.policy import evaluate, new_record, pause, resume
from agentwatch.probes.heartbeat import check_heartbeat
from agentwatch.registry import HeartbeatProbe, Policy, parse_registry

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
SPEC = HeartbeatProbe(timeout=timedelta(seconds=30), max_missed=3)
AGENT = "batch-1"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def beat(seconds: float, kind: PingKind = PingKind.BEAT, code: int | None = None) -> Beat:
    return Beat.ping(AGENT, kind, at(seconds), code)


@pytest.mark.parametrize(
    ("last", "clock", "now", "ok", "missed", "reason"),
    [
        (0, 0, 9, True, 0, "last beat 9.0s ago"),
        (0, 0, 29.9, True, 0, "last beat 30s ago"),
        (0, 0, 42, False, 1, "late: 1 missed beat (last beat 42s ago)"),
        (0, 0, 61, False, 2, "late: 2 missed beats (last beat 61s ago)"),
        (0, 0, 95, False, 3, "no beat for 95s: 3 missed beats"),
        (0, 0, 1000, False, 33, "no beat for 1000s: 33 missed beats"),
        (0, 50, 55, True, 0, "last beat 55s ago"),  # resumed at 50: the old beat is not a miss yet
        (0, 50, 85, False, 1, "late: 1 missed beat (no beat since the timer started 35s ago)"),
        (None, 0, 31, False, 1, "late: 1 missed beat (no beat since the timer started 31s ago)"),
    ],
    ids=["fresh", "just-in-time", "one-missed", "two-missed", "timed-out", "long-gone", "reset", "reset-late", "never"],
)
def test_missed_beats(last: float | None, clock: float, now: float, ok: bool, missed: int, reason: str) -> None:
    result = check_heartbeat(AGENT, SPEC, beat(last) if last is not None else None, at(clock), at(now))
    assert (result.ok, result.details["missed"], result.reason) == (ok, missed, reason)
    assert result.override == (None if ok else Counted(missed, 3))


def test_a_new_agent_waits_one_timeout_for_its_first_beat() -> None:
    result = check_heartbeat(AGENT, SPEC, None, at(0), at(5))
    assert result.override == Asserted(S.STARTING, Cause.HEARTBEAT)
    assert result.reason == "waiting for the first beat (due within 30s)"
    assert result.details["last_beat"] is None


def test_a_reported_failure_fails_at_once_until_the_next_beat() -> None:
    failed = beat(0).merged(beat(5, PingKind.FAIL, 2))
    result = check_heartbeat(AGENT, SPEC, failed, at(0), at(6))
    assert (result.ok, result.reason, result.override) == (
        False,
        "job reported failure (exit code 2)",
        OwnThreshold(3),  # counted one per monitor cycle by the policy
    )
    assert check_heartbeat(AGENT, SPEC, failed.merged(beat(7)), at(0), at(8)).ok


@dataclass(frozen=True)
class Step:
    at: float
    beat: float | None  # time of the last beat, None = never
    state: S
    failures: int
    reason: str = ""


POLICY = Policy(failure_threshold=5)  # ignored for heartbeats: max_missed is their threshold


@pytest.mark.parametrize(
    "steps",
    [
        [
            Step(0, None, S.STARTING, 0, "waiting for the first beat"),
            Step(10, 5, S.HEALTHY, 0, "last beat"),
            Step(34, 5, S.HEALTHY, 0),
            Step(45, 5, S.DEGRADED, 1, "late: 1 missed beat (last beat 40s ago)"),
            Step(70, 5, S.DEGRADED, 2, "late: 2 missed beats"),
            Step(100, 5, S.UNHEALTHY, 3, "no beat for 95s: 3 missed beats"),
            Step(130, 5, S.UNHEALTHY, 4),
            Step(131, 131, S.HEALTHY, 0, "last beat"),
        ],
        [
            Step(0, 0, S.HEALTHY, 0),
            Step(200, 0, S.UNHEALTHY, 6, "no beat for 200s: 6 missed beats"),  # monitor was away: straight down
            Step(201, 201, S.HEALTHY, 0),
        ],
    ],
    ids=["miss-one-by-one", "straight-to-timeout"],
)
def test_policy_counts_missed_beats(steps: list[Step]) -> None:
    rec: AgentRecord | None = None
    for step in steps:
        now = at(step.at)
        b = beat(step.beat) if step.beat is not None else None
        result = check_heartbeat(AGENT, SPEC, b, clock_start(rec, now), now)
        rec = evaluate(rec, result, POLICY, now).record
        assert (rec.state, rec.failures) == (step.state, step.failures), step
        assert step.reason in rec.reason, step
        assert rec.next_check == now  # no backoff: a heartbeat check costs a dictionary lookup


def test_reported_failure_is_counted_per_cycle_against_max_missed() -> None:
    rec = evaluate(None, check_heartbeat(AGENT, SPEC, beat(0), at(0), at(1)), POLICY, at(1)).record
    failed = beat(0).merged(beat(2, PingKind.FAIL, 7))
    states = []
    for t in (3, 4, 5):
        rec = evaluate(rec, check_heartbeat(AGENT, SPEC, failed, clock_start(rec, at(t)), at(t)), POLICY, at(t)).record
        states.append((rec.state, rec.failures))
    assert states == [(S.DEGRADED, 1), (S.DEGRADED, 2), (S.UNHEALTHY, 3)]
    assert rec.reason == "unhealthy after 3 consecutive failed health checks: job reported failure (exit code 7)"


def test_clock_restarts_at_resume_and_at_the_end_of_a_timed_pause() -> None:
    rec = new_record(AGENT, at(0))
    assert clock_start(None, at(7)) == at(7)
    assert clock_start(rec, at(100)) == at(0)
    paused = pause(rec, at(10), until=at(60)).record
    assert clock_start(paused, at(70)) == at(60)
    assert clock_start(resume(paused, at(50)).record, at(70)) == at(50)


REGISTRY = parse_registry(
    """
agents:
  - {id: batch-1, probe: {heartbeat: {timeout: 30s}}}
  - {id: batch-2, probe: {heartbeat: {timeout: 30s}}}
  - {id: batch-3, probe: {heartbeat: {timeout: 30s}}}
"""
)


def test_a_beat_wakes_a_plain_pause_but_not_a_sticky_one() -> None:
    records = {
        "batch-1": pause(new_record("batch-1", at(0)), at(10)).record,
        "batch-2": pause(new_record("batch-2", at(0)), at(10), sticky=True).record,
        "batch-3": pause(new_record("batch-3", at(0)), at(10)).record,
    }
    beats = {
        "batch-1": Beat.ping("batch-1", PingKind.BEAT, at(20)),
        "batch-2": Beat.ping("batch-2", PingKind.BEAT, at(20)),
        "batch-3": Beat.ping("batch-3", PingKind.BEAT, at(5)),  # before the pause: not a wake-up
    }
    woken = wake_on_beats(REGISTRY, records, beats, at(30))
    assert [r.agent_id for r, _ in woken] == ["batch-1"]
    record, transition = woken[0]
    assert (record.state, record.paused, record.first_seen) == (S.UNKNOWN, False, at(30))
    assert transition is not None and transition.from_state is S.PAUSED
    assert transition.reason.startswith("resumed by a beat at 2025-03-01T12:00:20")


def test_late_warning_only_when_missed_beats_start() -> None:
    late = check_heartbeat(AGENT, SPEC, beat(0), at(0), at(40))
    failed = check_heartbeat(AGENT, SPEC, beat(0).merged(beat(1, PingKind.FAIL)), at(0), at(2))
    first = Transition(AGENT, S.HEALTHY, S.DEGRADED, late.reason, 1, at(40))
    worse = Transition(AGENT, S.DEGRADED, S.UNHEALTHY, "no beat", 3, at(100))
    assert [w.agent_id for w in late_warnings([first], [late])] == [AGENT]
    warning = late_warnings([first], [late])[0]
    assert warning.payload()["missed"] == 1 and warning.payload()["reason"] == late.reason
    assert late_warnings([worse], [late]) == []  # already late: no second warning
    assert late_warnings([first], [failed]) == []  # a reported failure is not a missed beat
