"""What the monitor does with beats, besides the missed-beat check itself.

- It reads the beats of the heartbeat agents once per cycle, with the time it read them at
  (a BeatSnapshot for the `heartbeat` probe).
- A beat wakes an agent under a plain pause (healthchecks semantics); a sticky pause ignores beats
  until an operator resumes it. The server records every beat either way, so `status` shows them.
- The first missed beat raises a `late` warning next to the degraded transition.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from ..beats import Beat
from ..models import AgentRecord, AgentState, Counted, ProbeResult, Transition
from ..policy import Evaluation, resume
from ..probes.heartbeat import BeatSnapshot
from ..registry import Registry
from ..store import CommitResult, StateStore

__all__ = ["HeartbeatRound", "LateWarning", "clock_start", "heartbeat_round", "late_warnings", "wake_on_beats"]

_LATE = (AgentState.DEGRADED, AgentState.UNHEALTHY)


@dataclass(frozen=True, slots=True)
class LateWarning:
    """An agent's first missed beat: the `agentwatch.agent.late` event."""

    agent_id: str
    reason: str
    at: datetime
    details: dict[str, Any] = field(default_factory=dict)

    def payload(self) -> dict[str, Any]:
        return {"agent": self.agent_id, "reason": self.reason, "at": self.at.isoformat(), **self.details}


@dataclass(frozen=True, slots=True)
class HeartbeatRound:
    """The beats for this cycle's probes, and the agents their beats woke (already committed)."""

    snapshot: BeatSnapshot | None
    woken: CommitResult = field(default_factory=CommitResult)


def clock_start(record: AgentRecord | None, now: datetime) -> datetime:
    """When the agent's missed-beat clock started: first sight, or the end of its last pause."""
    if record is None:
        return now
    if record.paused:
        # Only probed once the pause has run out: the clock restarts where the pause ended.
        return record.paused_until or now
    return record.first_seen or now


def wake_on_beats(
    registry: Registry, records: Mapping[str, AgentRecord], beats: Mapping[str, Beat], now: datetime
) -> list[Evaluation]:
    """Resume the agents under a plain (not sticky) pause that have beaten since it began."""
    changes: list[Evaluation] = []
    for agent in registry.agents:
        record, beat = records.get(agent.id), beats.get(agent.id)
        if record is None or beat is None or not record.paused or record.sticky:
            continue
        seen = beat.last_seen
        if seen is None or record.since is None or seen <= record.since:
            continue
        evaluation = resume(record, now)
        reason = f"resumed by a beat at {seen.isoformat(timespec='seconds')}"
        woken = evaluation.record.evolve(reason=reason)
        transition = replace(evaluation.transition, reason=reason) if evaluation.transition else None
        changes.append(Evaluation(woken, transition))
    return changes


async def heartbeat_round(
    store: StateStore,
    registry: Registry,
    records: Mapping[str, AgentRecord],
    now: datetime,
    run_id: str | None = None,
    among: Callable[[str], bool] | None = None,
) -> HeartbeatRound:
    """Read the heartbeat agents' beats, wake the paused ones that beat, and snapshot the rest.

    Costs nothing for a registry without heartbeat agents. The wake-ups are committed here, before
    the probes, so the same cycle judges the woken agents by their beats. `among`: the stored beats
    this run may forget (a shard's own agents; all when None).
    """
    ids = [a.id for a in registry.agents if a.probe is not None and a.probe.heartbeat is not None]
    await store.drop_missing_beats(ids, among)
    if not ids:
        return HeartbeatRound(None)
    beats = await store.load_beats(ids)
    changes = wake_on_beats(registry, records, beats, now)
    woken = await store.commit(changes, run_id=run_id) if changes else CommitResult()
    current = {**records, **{r.agent_id: r for r in woken.saved}}
    clocks = {i: clock_start(current.get(i), now) for i in ids}
    return HeartbeatRound(BeatSnapshot(now=now, beats=beats, clocks=clocks), woken)


def late_warnings(transitions: Sequence[Transition], results: Iterable[ProbeResult]) -> list[LateWarning]:
    """A warning for each agent whose missed beats went from 0 to 1 or more in this cycle."""
    # Missed beats are a probe's own count; a reported job failure (counted by the policy) is not one.
    missed = {r.agent_id: r for r in results if isinstance(r.override, Counted) and r.override.failures}
    warnings = []
    for t in transitions:
        result = missed.get(t.agent_id)
        if result is not None and t.to_state in _LATE and t.from_state not in _LATE:
            warnings.append(LateWarning(t.agent_id, result.reason, t.at, dict(result.details)))
    return warnings
