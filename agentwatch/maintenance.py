"""Operator actions for agents of every kind: pause and resume (what they read back is in
agentwatch.status).

Pause and resume write the agent's record with compare-and-swap, like the monitor, so an operator
and a monitor run never overwrite each other: whoever loses re-reads and tries again. A paused
agent is not probed and not alerted on; resume restarts its counters and timers (a heartbeat agent
gets a whole timeout before its first miss). `until` ends a pause by itself; a sticky pause also
ignores beats, which otherwise wake a paused heartbeat agent (see heartbeat.watch).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from .durations import parse_duration
from .errors import StoreConflict, UnknownAgent
from .models import AgentRecord
from .policy import Evaluation, new_record, pause, resume
from .registry import AgentSpec, Registry
from .store import CommitResult, StateStore

__all__ = ["parse_until", "require_agent", "set_paused", "set_resumed"]


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
        result = await store.commit([evaluation])
        if not result.conflicts:
            return result
    raise StoreConflict(f"agent {agent_id}: its record changed under each of {attempts} attempts")
