"""Alert events: what the monitor emits for automations to forward, one per route.

State events (`agentwatch.agent.<state>`) record every transition. Alert events are separate and
rarer; each names one route in its resource (`agentwatch.route`), so one automation per route
forwards them to that route's chat:

| event | resource | when |
|---|---|---|
| `agentwatch.alert.down` / `.reminder` / `.resolved` | `agentwatch.agent.<id>` | one agent |
| `agentwatch.alert.flapping` / `.settled` | `agentwatch.agent.<id>` | one agent began flapping / settled (agentwatch.flapping) |
| `agentwatch.fleet.degraded` / `.reminder` / `.recovered` | `agentwatch.fleet` | more than `group_threshold` agents of one kind, for one route, in one cycle |
| `agentwatch.fleet.flapping` / `.settled` | `agentwatch.fleet` | the same, for flapping and settled |

The payload carries the message (`headline`, `text`) and its fields.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..events import (
    ALERT_DOWN,
    ALERT_FLAPPING,
    ALERT_REMINDER,
    ALERT_RESOLVED,
    ALERT_SETTLED,
    FLEET_DEGRADED,
    FLEET_FLAPPING,
    FLEET_RECOVERED,
    FLEET_REMINDER,
    FLEET_SETTLED,
    derived_event_id,
)
from .incidents import Alert, AlertKind
from .messages import MAX_NAMES, agent_message, clean, fleet_message

if TYPE_CHECKING:
    from ..registry import Registry

__all__ = ["AGENT_EVENTS", "FLEET_EVENTS", "AlertEvent", "alert_event_id", "alert_events"]

AGENT_EVENTS = {
    AlertKind.DOWN: ALERT_DOWN,
    AlertKind.REMINDER: ALERT_REMINDER,
    AlertKind.RESOLVED: ALERT_RESOLVED,
    AlertKind.FLAPPING: ALERT_FLAPPING,
    AlertKind.SETTLED: ALERT_SETTLED,
}
FLEET_EVENTS = {
    AlertKind.DOWN: FLEET_DEGRADED,
    AlertKind.REMINDER: FLEET_REMINDER,
    AlertKind.RESOLVED: FLEET_RECOVERED,
    AlertKind.FLAPPING: FLEET_FLAPPING,
    AlertKind.SETTLED: FLEET_SETTLED,
}


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """One event to emit. `agent_id` None: a fleet summary."""

    event: str
    route: str
    agent_id: str | None
    payload: dict[str, Any]
    identity: str = ""  # what makes two decisions the same alert (see alert_event_id)


def alert_event_id(alert: AlertEvent) -> uuid.UUID:
    """The same alert (event, route, agent or group, incident start, reminder count) always gets the
    same event id: a run that posted it and died before saving its incident, and the run that then
    decides the same again, make one event on the server, so one message."""
    return derived_event_id(f"{alert.event}|{alert.route}|{alert.identity}", "alert")


def alert_events(
    alerts: Sequence[Alert], registry: Registry, now: datetime, run_url: str | None = None
) -> list[AlertEvent]:
    """One event per (alert, route); where more than `group_threshold` alerts of one kind go to one
    route, one summary event for that route instead."""
    threshold = registry.alerts.group_threshold if registry.alerts else 5
    groups: dict[tuple[str, AlertKind], list[Alert]] = {}
    for alert in alerts:
        for route in alert.routes:
            groups.setdefault((route, alert.kind), []).append(alert)
    events: list[AlertEvent] = []
    for (route, kind), group in groups.items():
        if len(group) > threshold:
            events.append(_fleet_event(route, kind, group, now, run_url))
        else:
            events.extend(_agent_event(route, a, registry, now, run_url) for a in group)
    return events


def _agent_event(route: str, alert: Alert, registry: Registry, now: datetime, run_url: str | None) -> AlertEvent:
    agent = registry.get(alert.agent_id)
    headline, text = agent_message(alert, agent, now, run_url)
    payload: dict[str, Any] = {
        "kind": alert.kind.value,
        "route": route,
        "agent": alert.agent_id,
        "name": agent.display_name if agent else alert.agent_id,
        "state": alert.state.value,
        "reason": clean(alert.reason),
        "since": alert.since.isoformat(),
        "dependants": [d for d, _ in alert.dependants],
        "reminders": alert.reminders,
        "run_url": run_url,
        "headline": headline,
        "text": text,
    }
    identity = f"{alert.agent_id}|{alert.since.isoformat()}|{alert.reminders}"
    return AlertEvent(AGENT_EVENTS[alert.kind], route, alert.agent_id, payload, identity)


def _fleet_event(route: str, kind: AlertKind, group: list[Alert], now: datetime, run_url: str | None) -> AlertEvent:
    headline, text = fleet_message(kind, group, now, run_url)
    states: dict[str, int] = {}
    for alert in group:
        states[alert.state.value] = states.get(alert.state.value, 0) + 1
    payload: dict[str, Any] = {
        "kind": kind.value,
        "route": route,
        "count": len(group),
        "states": states,
        "agents": [a.agent_id for a in group[:MAX_NAMES]],
        "more": max(0, len(group) - MAX_NAMES),
        "run_url": run_url,
        "headline": headline,
        "text": text,
    }
    members = sorted(f"{a.agent_id}@{a.since.isoformat()}#{a.reminders}" for a in group)
    return AlertEvent(FLEET_EVENTS[kind], route, None, payload, "|".join(members))
