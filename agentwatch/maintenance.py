"""Operator actions for agents of every kind: pause, resume, and the fleet's status table.

Pause and resume write the agent's record with compare-and-swap, like the monitor, so an operator
and a monitor run never overwrite each other: whoever loses re-reads and tries again. A paused
agent is not probed and not alerted on; resume restarts its counters and timers (a heartbeat agent
gets a whole timeout before its first miss). `until` ends a pause by itself; a sticky pause also
ignores beats, which otherwise wake a paused heartbeat agent (see heartbeat.watch).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from .durations import parse_duration
from .errors import StoreConflict, UnknownAgent
from .heartbeat.beats import Beat
from .heartbeat.watch import clock_start
from .models import AgentRecord
from .policy import Evaluation, new_record, pause, resume
from .probes.heartbeat import check_heartbeat
from .registry import AgentSpec, Registry
from .store import CommitResult, StateStore
from .uptime import LONGEST, Availability, fleet_uptime, uptime_fields, uptime_rows

__all__ = ["parse_until", "read_status", "read_uptime", "require_agent", "set_paused", "set_resumed", "status_rows"]


def require_agent(registry: Registry, agent_id: str, source: str) -> AgentSpec:
    """The agent with this id, or UnknownAgent naming the registry and some ids it has."""
    agent = registry.get(agent_id)
    if agent is None:
        raise UnknownAgent(agent_id, source, registry.ids)
    return agent


def parse_until(text: str, now: datetime) -> datetime:
    """An end of pause: an ISO time (UTC unless it says otherwise) or a duration from now (`2h`)."""
    try:
        return now + parse_duration(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"not a time or a duration: {text!r} (use e.g. 2h, 30m or 2025-03-01T18:00)") from None
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    if when <= now:
        raise ValueError(f"{text!r} is in the past")
    return when.astimezone(UTC)


async def set_paused(
    store: StateStore,
    agent_id: str,
    now: datetime,
    *,
    until: datetime | None = None,
    sticky: bool = False,
    reason: str = "",
) -> CommitResult:
    """Pause an agent (again: a second pause replaces `until` and `sticky`)."""
    return await _update(store, agent_id, now, lambda rec: pause(rec, now, until=until, sticky=sticky, reason=reason))


async def set_resumed(store: StateStore, agent_id: str, now: datetime) -> CommitResult:
    """End an agent's pause; nothing is written when it is not paused."""
    return await _update(store, agent_id, now, lambda rec: resume(rec, now))


async def _update(
    store: StateStore, agent_id: str, now: datetime, change: Callable[[AgentRecord], Evaluation], attempts: int = 5
) -> CommitResult:
    for _ in range(attempts):
        record = (await store.load([agent_id])).get(agent_id) or new_record(agent_id, now)
        evaluation = change(record)
        if evaluation.record == record:
            return CommitResult()
        result = await store.commit([(evaluation.record, evaluation.transition)])
        if not result.conflicts:
            return result
    raise StoreConflict(f"agent {agent_id}: its record changed under each of {attempts} attempts")


def status_rows(
    registry: Registry,
    records: Mapping[str, AgentRecord],
    beats: Mapping[str, Beat],
    now: datetime,
    uptimes: Mapping[str, Mapping[str, Availability]] | None = None,
) -> list[dict[str, Any]]:
    """One row per agent: state, since, last beat, seconds since it, missed beats, pause, uptime
    (percent over 24 h, 7 d, 30 d: agentwatch.uptime), reason.

    Missed beats are counted at `now` (not at the last monitor run); they are None for agents
    that do not beat and while a pause lasts.
    """
    rows = []
    for agent in registry.agents:
        rec = records.get(agent.id)
        beat = beats.get(agent.id)
        spec = agent.probe.heartbeat if agent.probe is not None else None
        last = beat.last_seen if beat is not None else None
        missed = None
        if spec is not None and not (rec is not None and rec.paused):
            missed = check_heartbeat(agent.id, spec, beat, clock_start(rec, now), now).details["missed"]
        rows.append(
            {
                "id": agent.id,
                "probe": agent.probe.kind if agent.probe is not None else "-",
                "state": rec.state.value if rec is not None else "unknown",
                "since": _iso(rec.since if rec is not None else None),
                "last_beat": _iso(last),
                "seconds_since": round((now - last).total_seconds(), 1) if last is not None else None,
                "missed": missed,
                "paused": bool(rec and rec.paused),
                "paused_until": _iso(rec.paused_until if rec is not None else None),
                "sticky": bool(rec and rec.sticky),
                **uptime_fields((uptimes or {}).get(agent.id)),
                "reason": rec.reason if rec is not None else "not checked yet",
            }
        )
    return rows


async def read_status(
    store: StateStore, registry: Registry, now: datetime, agent_ids: list[str] | None = None
) -> list[dict[str, Any]]:
    """Status rows from the store as it is now, for the whole registry or some of its agents."""
    wanted = [a for a in registry.agents if agent_ids is None or a.id in agent_ids]
    ids = [a.id for a in wanted]
    records = await store.load(ids)
    beats = await store.load_beats(ids)
    uptimes = fleet_uptime(await store.state_marks(now - LONGEST, ids), records, now)
    return status_rows(registry.model_copy(update={"agents": wanted}), records, beats, now, uptimes)


async def read_uptime(store: StateStore, registry: Registry, now: datetime) -> list[dict[str, Any]]:
    """Every agent's availability over 24 h, 7 d and 30 d (agentwatch.uptime.uptime_rows), from one
    bounded read of the transition log."""
    ids = registry.ids
    records = await store.load(ids)
    uptimes = fleet_uptime(await store.state_marks(now - LONGEST, ids), records, now)
    return uptime_rows(registry.agents, records, uptimes)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value is not None else None
