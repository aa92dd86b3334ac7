"""What to alert on after a monitor cycle: a pure function of the fleet's stored states.

An agent that is down (unhealthy or failed) has an open incident. The decision is made from the
current state rather than from this cycle's transitions, so state changes written by other flows
(reconcile restarting a container, an operator's pause) are alerted on the same way:

- down, no incident yet: open one and alert `down`, unless held back;
- down, incident never alerted (it was held back): alert `down` as soon as nothing holds it back;
- down and alerted: a `reminder` every `repeat_interval` (0 = never), unless held back;
- healthy with an open incident: close it, and alert `resolved` when its `down` was alerted.
  Anything in between (degraded, starting after a restart, paused, stopped) keeps it open, so a
  restart loop is one incident, not one message per restart.

Held back: a silence covers the agent, an agent it `depends_on` is down (that agent's message names
its dependants), or no route matches it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

from ..models import AgentRecord, AgentState

if TYPE_CHECKING:  # the registry imports this package's config: no import cycle at run time
    from ..registry import AgentSpec, Registry

__all__ = ["Alert", "AlertKind", "AlertPlan", "Incident", "IncidentChange", "plan_alerts"]


class AlertKind(StrEnum):
    DOWN = "down"
    REMINDER = "reminder"
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class Incident:
    """One agent's open incident (a row in the state store). `notified_at` None: not alerted yet."""

    agent_id: str
    opened_at: datetime
    state: AgentState
    reason: str
    notified_at: datetime | None = None
    reminders: int = 0
    version: int = 0  # compare-and-swap counter; 0 = not stored yet


@dataclass(frozen=True, slots=True)
class IncidentChange:
    """Write `after` (None = delete) where the stored row is still at `version` (0 = absent)."""

    agent_id: str
    version: int
    after: Incident | None


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert for one agent, to the routes that carry it."""

    kind: AlertKind
    agent_id: str
    routes: tuple[str, ...]
    state: AgentState  # the agent's state now
    reason: str  # why it is down (for resolved: why it was down)
    since: datetime  # when the incident began
    dependants: tuple[tuple[str, bool], ...] = ()  # (agent id, down now)
    note: str = ""  # e.g. why a down alert comes late
    reminders: int = 0


@dataclass
class AlertPlan:
    """The alerts of one cycle, the incident writes they depend on, and what was held back (and why)."""

    alerts: list[Alert] = field(default_factory=list)
    changes: list[IncidentChange] = field(default_factory=list)
    held_back: list[tuple[str, str]] = field(default_factory=list)


def plan_alerts(
    registry: Registry, records: Mapping[str, AgentRecord], incidents: Mapping[str, Incident], now: datetime
) -> AlertPlan:
    """Decide this cycle's alerts. Agents without a record, and incidents of agents no longer in the
    registry, are left alone (the store forgets those with the agent's record)."""
    plan = AlertPlan()
    config = registry.alerts
    if config is None:
        return plan
    dependants: dict[str, list[str]] = {}
    for agent in registry.agents:
        for dep in agent.depends_on:
            dependants.setdefault(dep, []).append(agent.id)

    for agent in registry.agents:
        record = records.get(agent.id)
        incident = incidents.get(agent.id)
        if record is None:
            continue
        down = record.state.is_down and not record.paused
        if not down:
            if incident is not None and record.state is AgentState.HEALTHY:
                plan.changes.append(IncidentChange(agent.id, incident.version, None))
                if incident.notified_at is not None:
                    routes = config.routes_for(agent.id, agent.labels)
                    plan.alerts.append(
                        Alert(AlertKind.RESOLVED, agent.id, routes, record.state, incident.reason, incident.opened_at)
                    )
            continue

        routes = config.routes_for(agent.id, agent.labels)
        held = _held_back(agent, routes, registry, records, now)
        deps = tuple((d, _is_down(records.get(d))) for d in dependants.get(agent.id, []))
        if incident is None:
            opened = Incident(agent.id, record.since or now, record.state, record.reason)
            if held:
                plan.held_back.append((agent.id, held))
                plan.changes.append(IncidentChange(agent.id, 0, opened))
                continue
            plan.changes.append(IncidentChange(agent.id, 0, replace(opened, notified_at=now)))
            plan.alerts.append(
                Alert(AlertKind.DOWN, agent.id, routes, record.state, record.reason, opened.opened_at, deps)
            )
        elif held:
            plan.held_back.append((agent.id, held))
        elif incident.notified_at is None:
            plan.changes.append(IncidentChange(agent.id, incident.version, replace(incident, notified_at=now)))
            note = f"down since {incident.opened_at:%Y-%m-%d %H:%M} UTC; alerts were held back until now"
            plan.alerts.append(
                Alert(AlertKind.DOWN, agent.id, routes, record.state, record.reason, incident.opened_at, deps, note)
            )
        elif _reminder_due(incident, config.repeat_interval, now):
            count = incident.reminders + 1
            after = replace(incident, notified_at=now, reminders=count)
            plan.changes.append(IncidentChange(agent.id, incident.version, after))
            plan.alerts.append(
                Alert(
                    AlertKind.REMINDER,
                    agent.id,
                    routes,
                    record.state,
                    record.reason,
                    incident.opened_at,
                    deps,
                    reminders=count,
                )
            )
    return plan


def _held_back(
    agent: AgentSpec, routes: tuple[str, ...], registry: Registry, records: Mapping[str, AgentRecord], now: datetime
) -> str | None:
    """Why this agent's alert is held back now, or None."""
    assert registry.alerts is not None
    silence = registry.alerts.silence_for(agent.id, agent.labels, now)
    if silence is not None:
        return "silenced" + (f": {silence.reason}" if silence.reason else "")
    down_deps = [d for d in agent.depends_on if _is_down(records.get(d))]
    if down_deps:
        return f"depends on {', '.join(down_deps)}, which is down"
    if not routes:
        return "no route matches it"
    return None


def _is_down(record: AgentRecord | None) -> bool:
    return record is not None and record.state.is_down and not record.paused


def _reminder_due(incident: Incident, every: timedelta, now: datetime) -> bool:
    if every <= timedelta(0) or incident.notified_at is None:
        return False
    return now - incident.notified_at >= every
