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

Flapping (agentwatch.flapping): while an agent flaps, its down, resolved and reminder alerts are
held (its incident still opens and closes, unalerted); one `flapping` alert says it flaps. When it
has settled, one `settled` alert gives its state then, and stands for the alerts held meanwhile:
an agent that settled down has its incident marked alerted, so `resolved` follows when it recovers.
A `flapping` alert held back (silence, dependency, no route) is sent when nothing holds it any
more while the agent still flaps; if it never went out, no `settled` follows and alerts resume as
usual.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

from ..durations import format_duration
from ..flapping import FlapChange, FlapMemory, FlapPhase, FlapState
from ..models import AgentRecord, AgentState

if TYPE_CHECKING:  # the registry imports this package's config: no import cycle at run time
    from ..registry import AgentSpec, Registry

__all__ = ["Alert", "AlertKind", "AlertPlan", "Incident", "IncidentChange", "plan_alerts"]


class AlertKind(StrEnum):
    DOWN = "down"
    REMINDER = "reminder"
    RESOLVED = "resolved"
    FLAPPING = "flapping"
    SETTLED = "settled"


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
    flap_changes: list[FlapChange] = field(default_factory=list)  # the store's flap_state writes


def plan_alerts(
    registry: Registry,
    records: Mapping[str, AgentRecord],
    incidents: Mapping[str, Incident],
    now: datetime,
    only: Collection[str] | None = None,
    flapping: Mapping[str, FlapState] | None = None,
) -> AlertPlan:
    """Decide this cycle's alerts. Agents without a record, and incidents of agents no longer in the
    registry, are left alone (the store forgets those with the agent's record).

    `only`: the agents to decide on (those with new transitions or an open incident); None = all.
    An agent with neither has nothing to alert about, so the monitor passes only those.

    `flapping`: the agents that flap or settle now (agentwatch.flapping.flap_states); they are
    decided on whatever `only` says. Its writes come back in `flap_changes`."""
    plan = AlertPlan()
    config = registry.alerts
    if config is None:
        return plan
    dependants: dict[str, list[str]] = {}
    for agent in registry.agents:
        for dep in agent.depends_on:
            dependants.setdefault(dep, []).append(agent.id)

    flapping = flapping or {}
    if only is not None and flapping:
        only = {*only, *flapping}
    agents = registry.agents if only is None else [a for a in registry.agents if a.id in only]
    for agent in agents:
        record = records.get(agent.id)
        incident = incidents.get(agent.id)
        if record is None:
            continue
        flap = flapping.get(agent.id)
        if flap is not None and _plan_flap(plan, flap, agent, record, incident, registry, records, now):
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


def _plan_flap(
    plan: AlertPlan,
    flap: FlapState,
    agent: AgentSpec,
    record: AgentRecord,
    incident: Incident | None,
    registry: Registry,
    records: Mapping[str, AgentRecord],
    now: datetime,
) -> bool:
    """Decide a flapping or settling agent. False: decide it as usual (nothing is held for it)."""
    assert registry.alerts is not None
    memory = flap.memory
    routes = registry.alerts.routes_for(agent.id, agent.labels)
    held = "paused" if record.paused else _held_back(agent, routes, registry, records, now)
    down = record.state.is_down and not record.paused
    if flap.phase is FlapPhase.SETTLED:
        if memory is not None:
            plan.flap_changes.append(FlapChange(agent.id, memory.version, None))
        if memory is None or memory.notified_at is None or held:
            return False  # nobody was told it flaps: no settled message, alerts resume as usual
        note = f"no state change for {format_duration(flap.window)}: its alerts resume"
        plan.alerts.append(
            Alert(AlertKind.SETTLED, agent.id, routes, record.state, record.reason, memory.since, note=note)
        )
        # The settled message says what the held alerts would have: an agent that settled down
        # counts as alerted (reminders and `resolved` follow), a healthy one has no incident.
        if down and incident is None:
            opened = Incident(agent.id, record.since or now, record.state, record.reason, notified_at=now)
            plan.changes.append(IncidentChange(agent.id, 0, opened))
        elif down and incident is not None:
            plan.changes.append(IncidentChange(agent.id, incident.version, replace(incident, notified_at=now)))
        elif incident is not None and record.state is AgentState.HEALTHY:
            plan.changes.append(IncidentChange(agent.id, incident.version, None))
        return True
    if flap.phase is not FlapPhase.FLAPPING or flap.since is None:
        return False
    # Flapping: keep the incident's bookkeeping, send none of its alerts.
    why = f"flapping since {flap.since:%Y-%m-%d %H:%M} UTC"
    if down and incident is None:
        plan.changes.append(
            IncidentChange(agent.id, 0, Incident(agent.id, record.since or now, record.state, record.reason))
        )
        plan.held_back.append((agent.id, why))
    elif (
        down
        and incident is not None
        and (incident.notified_at is None or _reminder_due(incident, registry.alerts.repeat_interval, now))
    ):
        plan.held_back.append((agent.id, why))
    elif not down and incident is not None and record.state is AgentState.HEALTHY:
        plan.changes.append(IncidentChange(agent.id, incident.version, None))
        if incident.notified_at is not None:
            plan.held_back.append((agent.id, why))
    notified_at = memory.notified_at if memory is not None else None
    if notified_at is None and held:
        plan.held_back.append((agent.id, held))
    elif notified_at is None:
        notified_at = now
        window = format_duration(flap.window)
        plan.alerts.append(
            Alert(
                AlertKind.FLAPPING,
                agent.id,
                routes,
                record.state,
                f"{flap.changes} state changes within {window}",
                flap.since,
                note=f"its down and recovered alerts are held until it has been stable for {window}",
            )
        )
    after = FlapMemory(agent.id, flap.since, flap.changes, notified_at)
    if memory is None or replace(memory, version=0) != after:
        plan.flap_changes.append(FlapChange(agent.id, memory.version if memory is not None else 0, after))
    return True


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
