"""The monitor's alert step, decided here and carried out by the Prefect layer (tasks/alerting.py).

    decide_alerts   read the published-but-unalerted transition rows, the open incidents and the
                    flap memory; plan (incidents.plan_alerts); build one event per alert and route
    (post)          the Prefect layer posts `AlertRound.events`, acknowledged, ids derived
    record_alerts   save the incident and flap changes and mark the rows alerted, in that order

Delivery is at-least-once on agentwatch's side and exactly-once on the server's: the events are
posted before the decision is saved, and each id is derived from what the event says
(`alert_event_id`), so a run that dies between the two and the run that decides the same again
make one event on the server, so one chat message.

The store comes in as the `AlertStore` protocol: the alerts package sits below the store.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from ..events import ROUTE_LABEL, EventSpec, agent_resource, fleet_resource
from ..flapping import FlapChange, FlapMemory, Flip, flap_lookback, flap_states
from ..models import AgentRecord
from ..registry import Registry
from .events import AlertEvent, alert_event_id, alert_events
from .incidents import AlertPlan, Incident, IncidentChange, plan_alerts

__all__ = ["AlertRound", "AlertStore", "alert_resource", "decide_alerts", "record_alerts"]


class _Row(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def agent_id(self) -> str: ...


class AlertStore(Protocol):
    """What the alert step reads and writes (agentwatch.store.StateStore is one)."""

    async def unalerted(self, limit: int = ...) -> Sequence[_Row]: ...
    async def mark_alerted(self, ids: Sequence[int], now: datetime) -> int: ...
    async def drop_missing_incidents(self, keep: Iterable[str]) -> list[str]: ...
    async def drop_missing_flaps(self, keep: Iterable[str]) -> list[str]: ...
    async def load_incidents(self) -> dict[str, Incident]: ...
    async def load_flaps(self) -> dict[str, FlapMemory]: ...
    async def recent_changes(self, agent_ids: Iterable[str], since: datetime) -> dict[str, list[Flip]]: ...
    async def save_incidents(
        self, changes: Sequence[IncidentChange], alerted: Sequence[int] = (), now: datetime | None = None
    ) -> list[str]: ...
    async def save_flaps(self, changes: Sequence[FlapChange]) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class AlertRound:
    """One cycle's alert decision: the rows it consumes, the plan, and the events to post first."""

    rows: tuple[int, ...] = ()  # transition-log row ids consumed
    plan: AlertPlan | None = None  # None: the registry has no `alerts:` section
    alerts: tuple[AlertEvent, ...] = ()
    events: tuple[EventSpec, ...] = ()


def alert_resource(alert: AlertEvent, registry: Registry) -> dict[str, str]:
    """The agent's own resource (or the fleet's) plus the route that automations match on."""
    if alert.agent_id is None:
        return fleet_resource(**{ROUTE_LABEL: alert.route})
    return {**agent_resource(alert.agent_id, registry.get(alert.agent_id)), ROUTE_LABEL: alert.route}


async def decide_alerts(
    store: AlertStore,
    fleet: Registry,
    records: Mapping[str, AgentRecord],
    now: datetime,
    run_url: str | None = None,
    limit: int = 10_000,
) -> AlertRound:
    """Open, remind about and resolve incidents for the agents that have new published transitions
    or an open incident. Reads only; nothing is written until `record_alerts`.

    `records` are the cycle's records (read once, updated by its commit)."""
    unalerted = await store.unalerted(limit)
    rows = tuple(r.id for r in unalerted)
    if fleet.alerts is None:  # no `alerts:` section: nothing to decide, the rows are simply consumed
        return AlertRound(rows=rows)
    await store.drop_missing_incidents(records.keys())
    await store.drop_missing_flaps(records.keys())
    incidents = await store.load_incidents()
    flaps = await store.load_flaps()
    only = {r.agent_id for r in unalerted} | set(incidents)
    # Flapping: the recent changes of the agents in question, one bounded read (agentwatch.flapping).
    recent = await store.recent_changes(only | set(flaps), now - flap_lookback(fleet))
    flapping = flap_states(fleet, recent, flaps, now, only)
    plan = plan_alerts(fleet, records, incidents, now, only=only, flapping=flapping)
    alerts = tuple(alert_events(plan.alerts, fleet, now, run_url))
    events = tuple(
        EventSpec(a.event, alert_resource(a, fleet), a.payload, occurred=now, id=alert_event_id(a)) for a in alerts
    )
    return AlertRound(rows=rows, plan=plan, alerts=alerts, events=events)


async def record_alerts(store: AlertStore, round: AlertRound, now: datetime) -> tuple[str, ...]:
    """Save what `decide_alerts` decided, after its events were posted; mark the rows alerted.

    Returns the agents whose incident an overlapping run changed meanwhile (theirs is kept)."""
    if round.plan is None:
        await store.mark_alerted(list(round.rows), now)
        return ()
    won = set(await store.save_incidents(round.plan.changes, alerted=list(round.rows), now=now))
    await store.save_flaps(round.plan.flap_changes)
    return tuple(sorted({c.agent_id for c in round.plan.changes} - won))
