"""The heartbeat "probe": judge an agent by the age of its last beat, never by the network.

A beat older than `timeout` is a missed beat: missed = floor(age / timeout), where the age runs
from the latest sign of life (beat, job start or failure) or from when the agent's clock started
(first sight by the monitor, or a resume), whichever is later. So a new agent, and one just
resumed, get one whole timeout before a first miss. The count goes to the policy as
`Counted(missed, max_missed)`; 0 missed is healthy. Before a first beat is due the agent is
starting (`Asserted(STARTING, Cause.HEARTBEAT)`).

A job's failure (`/fail`, or a non-zero exit code) stands until its next beat; while it stands the
check fails at once, counted one per monitor cycle against `max_missed` (`OwnThreshold(max_missed)`).

Time is injected: the monitor reads the beats once and passes them with `now` in a BeatSnapshot.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..beats import Beat
from ..models import AgentState, Asserted, Cause, Counted, NotProbed, OwnThreshold, ProbeResult
from ..registry import AgentSpec, HeartbeatProbe
from .context import BeatSnapshot

if TYPE_CHECKING:
    from .context import ProbeContext

__all__ = ["BeatSnapshot", "check_heartbeat", "probe_heartbeat"]


def check_heartbeat(
    agent_id: str, spec: HeartbeatProbe, beat: Beat | None, clock: datetime | None, now: datetime
) -> ProbeResult:
    """The missed-beat verdict for one agent at `now` (pure: no I/O, no clock of its own)."""
    last_seen = beat.last_seen if beat is not None else None
    reference = max((t for t in (last_seen, clock) if t is not None), default=now)
    age = max(0.0, (now - reference).total_seconds())
    timeout = spec.timeout.total_seconds()
    missed = int(age // timeout)
    details: dict[str, Any] = {
        "missed": missed,
        "max_missed": spec.max_missed,
        "timeout_s": timeout,
        "last_beat": last_seen.isoformat() if last_seen else None,
        "age_s": round(age, 3),
    }
    if beat is not None and beat.failing:
        code = f" (exit code {beat.last_exit_code})" if beat.last_exit_code is not None else ""
        details["exit_code"] = beat.last_exit_code
        reason = f"job reported failure{code}"
        return ProbeResult(agent_id, ok=False, reason=reason, details=details, override=OwnThreshold(spec.max_missed))
    if missed == 0:
        if last_seen is None:
            reason = f"waiting for the first beat (due within {_secs(timeout)})"
            starting = Asserted(AgentState.STARTING, Cause.HEARTBEAT)
            return ProbeResult(agent_id, ok=False, reason=reason, details=details, override=starting)
        reason = f"last beat {_secs((now - last_seen).total_seconds())} ago"
        return ProbeResult(agent_id, ok=True, reason=reason, details=details)
    if missed >= spec.max_missed:
        reason = f"no beat for {_secs(age)}: {missed} missed beats"
    else:
        plural = "" if missed == 1 else "s"
        since = "last beat" if reference == last_seen else "no beat since the timer started"
        reason = f"late: {missed} missed beat{plural} ({since} {_secs(age)} ago)"
    return ProbeResult(agent_id, ok=False, reason=reason, details=details, override=Counted(missed, spec.max_missed))


async def probe_heartbeat(agent: AgentSpec, ctx: ProbeContext) -> ProbeResult:
    """The PROBES entry: look the agent up in the snapshot the monitor passed in `ctx.beats`."""
    assert agent.probe is not None and agent.probe.heartbeat is not None
    snapshot = ctx.beats
    if snapshot is None:
        # Only the monitor loads beats; a bare `probe_many` call has nothing to judge by.
        return ProbeResult(agent.id, ok=False, reason="no beats loaded: judged by the monitor", override=NotProbed())
    return check_heartbeat(
        agent.id, agent.probe.heartbeat, snapshot.beats.get(agent.id), snapshot.clocks.get(agent.id), snapshot.now
    )


def _secs(seconds: float) -> str:
    return f"{seconds:.1f}s" if seconds < 10 else f"{seconds:.0f}s"
