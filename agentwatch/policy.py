"""The health policy: a pure function from (record, probe result, policy, now) to a new record.

Rules (README "Health policy"):
- A failure below `failure_threshold` makes the agent degraded, with the reason "failed N of M
  consecutive health checks: <probe reason>"; at the threshold it is unhealthy, with the reason
  "unhealthy after N consecutive failed health checks: <probe reason>" and `since` the time it
  became so.
- Failures inside `start_grace` (counted from first sight, or from a resume) do not count: the
  agent is starting.
- One success makes it healthy; recovering from degraded/unhealthy/failed takes
  `success_threshold` consecutive successes.
- Once the threshold is reached the re-check delay doubles on each further failure, from the
  interval (or the timeout when the interval is 0, "every run") up to `max_backoff`; a success
  resets it.
- A paused agent is not probed and not alerted; resume resets its timers and counters.
- The policy branches on a result's typed `override` (agentwatch.models), never on its text:
  - `Asserted(state, cause)`: a backend knows the state outright (a container that exited, an
    unreachable engine, an unmanaged agent); the policy takes it as given. A failed state counts
    one more failure (and backs off), an unknown one leaves the count as it was (nothing was
    learnt about the agent), any other resets it. Only the states counting never derives
    (unmanaged, stopped, failed, unknown, starting) may be asserted; any other is ignored and
    the check judged by `ok` as usual.
  - `Counted(failures, threshold)`: the probe counts for itself (heartbeat: missed beats against
    `max_missed`); its count replaces one-per-check, its reason is used as given, and there is no
    backoff.
  - `OwnThreshold(threshold)`: counted one per check by the policy, as usual, but against the
    probe's threshold and without backoff (heartbeat: a job's reported failure).
  - `NotProbed()`: nothing was checked; the record stays as it is.
- Only a change of state is a transition.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import NamedTuple

from .models import AgentRecord, AgentState, Asserted, Counted, NotProbed, OwnThreshold, ProbeResult, Transition
from .registry import Policy

__all__ = ["Evaluation", "backoff_delay", "evaluate", "is_due", "new_record", "pause", "resume"]

_RECOVERING = (AgentState.DEGRADED, AgentState.UNHEALTHY, AgentState.FAILED)
# States a probe may assert outright; other states are derived from ok/failure counting.
_ASSERTED = (AgentState.UNMANAGED, AgentState.STOPPED, AgentState.FAILED, AgentState.UNKNOWN, AgentState.STARTING)


class Evaluation(NamedTuple):
    """The new record and, when the state changed, the transition: what the store commits."""

    record: AgentRecord
    transition: Transition | None = None


def new_record(agent_id: str, now: datetime) -> AgentRecord:
    return AgentRecord(agent_id=agent_id, state=AgentState.UNKNOWN, since=now, first_seen=now)


def is_due(record: AgentRecord | None, now: datetime) -> bool:
    """True when the agent should be probed now (interval and backoff honoured).

    A small tolerance (a tenth of the delay, at most 5 s) keeps an agent whose interval equals the
    schedule's from slipping to every other run through scheduling jitter.
    """
    if record is not None and record.paused:
        return record.paused_until is not None and now >= record.paused_until
    if record is None or record.next_check is None or record.last_checked is None:
        return True
    gap = record.next_check - record.last_checked
    tolerance = min(timedelta(seconds=5), gap / 10)
    return now >= record.next_check - tolerance


def backoff_delay(policy: Policy, failures: int) -> timedelta:
    """Delay before the next check of an agent with `failures` consecutive failures."""
    if failures < policy.failure_threshold:
        return policy.interval
    base = policy.interval if policy.interval > timedelta(0) else policy.timeout
    doublings = min(failures - policy.failure_threshold, 32)
    capped = min(policy.max_backoff, base * (2**doublings)) if policy.max_backoff > timedelta(0) else base
    # Backing off never checks more often than the interval asks for.
    return max(policy.interval, capped)


def evaluate(prev: AgentRecord | None, result: ProbeResult, policy: Policy, now: datetime) -> Evaluation:
    """Apply one probe result to an agent's record."""
    before = prev if prev is not None else new_record(result.agent_id, now)
    if before.first_seen is None:
        before = before.evolve(first_seen=now)
    after = _next(before, result, policy, now)
    # Measured against the record as it was, so an expired pause reads paused -> <new state>.
    return Evaluation(after, _transition(before, after))


def _next(rec: AgentRecord, result: ProbeResult, policy: Policy, now: datetime) -> AgentRecord:
    if rec.paused and rec.paused_until is not None and now >= rec.paused_until:
        rec = _resumed(rec, now)
    if rec.paused:
        return rec
    checked: dict[str, object] = {"last_checked": now, "latency_ms": result.latency_ms}
    match result.override:
        case NotProbed():
            return rec
        case Asserted(state=state) if state in _ASSERTED:
            return _asserted(rec, state, result.reason, policy, now, checked)
    own = result.override if isinstance(result.override, Counted | OwnThreshold) else None

    if result.ok:
        successes = rec.successes + 1
        recovering = rec.state in _RECOVERING and successes < policy.success_threshold
        state = rec.state if recovering else AgentState.HEALTHY
        reason = (
            f"recovering: {successes} of {policy.success_threshold} successful health checks"
            if recovering
            else result.reason
        )
        # A success while still recovering keeps the failure count: one more failure is not an
        # improvement from unhealthy to degraded.
        failures = rec.failures if recovering else 0
        return _settle(
            rec, state, reason, now, **checked, failures=failures, successes=successes, next_check=now + policy.interval
        )

    in_grace = (
        policy.start_grace > timedelta(0)
        and rec.first_seen is not None
        and now - rec.first_seen < policy.start_grace
        and rec.state in (AgentState.UNKNOWN, AgentState.STARTING)
    )
    if in_grace:
        reason = f"starting (inside start grace): {result.reason}"
        return _settle(rec, AgentState.STARTING, reason, now, **checked, successes=0, next_check=now + policy.interval)
    return _failed(rec, result.reason, own, policy, now, checked)


def _asserted(
    rec: AgentRecord, state: AgentState, reason: str, policy: Policy, now: datetime, checked: dict[str, object]
) -> AgentRecord:
    """A state a backend asserted: taken as given; a failure is counted (and backs off)."""
    if state is AgentState.FAILED:
        failures = rec.failures + 1
    elif state is AgentState.UNKNOWN:
        failures = rec.failures  # the backend is unreachable: nothing was learnt about the agent
    else:
        failures = 0
    delay = backoff_delay(policy, failures) if state is AgentState.FAILED else policy.interval
    return _settle(rec, state, reason, now, **checked, failures=failures, successes=0, next_check=now + delay)


def _failed(
    rec: AgentRecord,
    reason: str,
    own: Counted | OwnThreshold | None,
    policy: Policy,
    now: datetime,
    checked: dict[str, object],
) -> AgentRecord:
    """A failed check: degraded below the threshold, unhealthy at it.

    `own` is a probe's own count (its reason used as given) and threshold, or its threshold alone;
    either way no backoff: a heartbeat check re-reads stored beats, which costs nothing.
    """
    counted = own.failures if isinstance(own, Counted) else None
    failures = counted if counted is not None else rec.failures + 1
    threshold = own.threshold if own is not None else policy.failure_threshold
    if failures >= threshold:
        state = AgentState.UNHEALTHY
        worded = f"unhealthy after {failures} consecutive failed health checks: {reason}"
    else:
        state = AgentState.DEGRADED
        worded = f"failed {failures} of {threshold} consecutive health checks: {reason}"
    delay = policy.interval if own is not None else backoff_delay(policy, failures)
    return _settle(
        rec,
        state,
        reason if counted is not None else worded,
        now,
        **checked,
        failures=failures,
        successes=0,
        next_check=now + delay,
    )


def pause(
    rec: AgentRecord, now: datetime, until: datetime | None = None, sticky: bool = False, reason: str = ""
) -> Evaluation:
    """Put an agent in maintenance: not probed, not alerted, until resumed (or `until`)."""
    text = reason or ("paused until " + until.isoformat() if until else "paused by operator")
    paused = _settle(rec.evolve(paused=True, paused_until=until, sticky=sticky), AgentState.PAUSED, text, now)
    return Evaluation(paused, _transition(rec, paused))


def resume(rec: AgentRecord, now: datetime) -> Evaluation:
    """End a pause: counters and timers restart as if the agent were new (grace included)."""
    if not rec.paused:
        return Evaluation(rec)
    resumed = _resumed(rec, now)
    return Evaluation(resumed, _transition(rec, resumed))


def _resumed(rec: AgentRecord, now: datetime) -> AgentRecord:
    return rec.evolve(
        state=AgentState.UNKNOWN,
        since=now,
        reason="resumed",
        paused=False,
        paused_until=None,
        sticky=False,
        failures=0,
        successes=0,
        first_seen=now,
        next_check=None,
    )


def _settle(rec: AgentRecord, state: AgentState, reason: str, now: datetime, **fields: object) -> AgentRecord:
    since = now if state is not rec.state else rec.since
    return rec.evolve(state=state, reason=reason, since=since, **fields)


def _transition(old: AgentRecord, new: AgentRecord) -> Transition | None:
    if new.state is old.state:
        return None
    assert new.since is not None
    return Transition(
        agent_id=new.agent_id,
        from_state=old.state,
        to_state=new.state,
        reason=new.reason,
        failures=new.failures,
        at=new.since,
    )
