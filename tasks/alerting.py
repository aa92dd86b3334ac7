"""The monitor's alert step: consume the published transitions not yet alerted on, decide
(agentwatch.alerts) and post alert events that the automations `agentwatch bootstrap` created
forward to chat, one automation per route.

Delivery is at-least-once on the agentwatch side and exactly-once on the server's: the events are
posted (acknowledged) before the decision is saved, and each has an id derived from what it says,
so a run that dies between the two and the run that decides the same again make one event.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from agentwatch.alerts import AlertEvent, alert_event_id, alert_events, plan_alerts
from agentwatch.events import ROUTE_LABEL, EventSpec, agent_resource, fleet_resource
from agentwatch.flapping import flap_lookback, flap_states
from agentwatch.models import AgentRecord
from agentwatch.registry import Registry
from agentwatch.store import StateStore
from tasks.publishing import post_events

__all__ = ["AlertReport", "alert_resource", "raise_alerts"]


@dataclass(frozen=True, slots=True)
class AlertReport:
    considered: int = 0  # transition rows consumed
    events: int = 0
    held_back: int = 0
    lost_races: tuple[str, ...] = ()


def alert_resource(alert: AlertEvent, registry: Registry) -> dict[str, str]:
    """The agent's own resource (or the fleet's) plus the route that automations match on."""
    if alert.agent_id is None:
        return fleet_resource(**{ROUTE_LABEL: alert.route})
    return {**agent_resource(alert.agent_id, registry.get(alert.agent_id)), ROUTE_LABEL: alert.route}


async def raise_alerts(
    store: StateStore,
    fleet: Registry,
    records: Mapping[str, AgentRecord],
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
    run_url: str | None = None,
    limit: int = 10_000,
) -> AlertReport:
    """Open, remind about and resolve incidents for the agents that have new published
    transitions or an open incident; post their alert events; mark the rows alerted.

    `records` are the cycle's records (read once, updated by its commit). Raises on an API failure
    (nothing is marked then: the next run decides again and posts the same event ids)."""
    rows = await store.unalerted(limit)
    now = datetime.now(UTC)
    if fleet.alerts is None:  # no `alerts:` section: nothing to decide, nothing to keep
        await store.mark_alerted([r.id for r in rows], now)
        return AlertReport(considered=len(rows))
    await store.drop_missing_incidents(records.keys())
    await store.drop_missing_flaps(records.keys())
    incidents = await store.load_incidents()
    flaps = await store.load_flaps()
    only = {r.agent_id for r in rows} | set(incidents)
    # Flapping: the recent changes of the agents in question, one bounded read (agentwatch.flapping).
    recent = await store.recent_changes(only | set(flaps), now - flap_lookback(fleet))
    flapping = flap_states(fleet, recent, flaps, now, only)
    plan = plan_alerts(fleet, records, incidents, now, only=only, flapping=flapping)
    events = alert_events(plan.alerts, fleet, now, run_url)
    specs = [
        EventSpec(e.event, alert_resource(e, fleet), e.payload, occurred=now, id=alert_event_id(e)) for e in events
    ]
    await post_events(specs)
    won = set(await store.save_incidents(plan.changes, alerted=[r.id for r in rows], now=now))
    await store.save_flaps(plan.flap_changes)
    lost = tuple(sorted({c.agent_id for c in plan.changes} - won))
    if lost:
        logger.warning("%d incident(s) were updated by an overlapping run meanwhile: %s", len(lost), ", ".join(lost))
    if plan.held_back:
        shown = "; ".join(f"{agent}: {why}" for agent, why in plan.held_back[:10])
        logger.info("%d alert(s) held back: %s", len(plan.held_back), shown)
    for alert in events[:10]:
        logger.info("Alert %s to %s: %s", alert.event, alert.route, alert.payload["headline"])
    if len(events) > 10:
        logger.info("... and %d more alert event(s)", len(events) - 10)
    return AlertReport(len(rows), len(events), len(plan.held_back), lost)
