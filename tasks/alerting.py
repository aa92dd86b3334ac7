"""The monitor's alert step: decide from the stored states (agentwatch.alerts) and emit alert events
that the automations `agentwatch bootstrap` created forward to chat, one automation per route."""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import get_run_logger, task
from prefect.cache_policies import NONE
from prefect.events import emit_event

from agentwatch.alerts import AlertEvent, alert_events, plan_alerts
from agentwatch.registry import Registry
from agentwatch.settings import get_settings
from agentwatch.store import StateStore
from tasks.recording import agent_resource

ROUTE_LABEL = "agentwatch.route"
FLEET_RESOURCE = "agentwatch.fleet"


def alert_resource(alert: AlertEvent, registry: Registry) -> dict[str, str]:
    """The agent's own resource (or the fleet's) plus the route that automations match on."""
    if alert.agent_id is None:
        resource = {"prefect.resource.id": FLEET_RESOURCE, "prefect.resource.name": "agentwatch fleet"}
    else:
        resource = agent_resource(alert.agent_id, registry.get(alert.agent_id))
    return {**resource, ROUTE_LABEL: alert.route}


@task(name="raise-alerts", cache_policy=NONE)
async def raise_alerts(registry: Registry, run_url: str | None = None) -> int:
    """Open, remind about and resolve incidents; emit their alert events. Returns how many events.

    Reads the states fresh from the store, so states other flows wrote (reconcile, pause) count
    too. Incident writes are compare-and-swap: an overlapping run that lost the race alerts nothing.
    """
    if registry.alerts is None:
        return 0
    logger = get_run_logger()
    now = datetime.now(UTC)
    async with StateStore(get_settings().resolved_database_url()) as store:
        records = await store.load()
        await store.drop_missing_incidents(records)
        incidents = await store.load_incidents()
        plan = plan_alerts(registry, records, incidents, now)
        won = set(await store.save_incidents(plan.changes)) if plan.changes else set()
    lost = sorted({c.agent_id for c in plan.changes} - won)
    if lost:
        logger.warning("%d incident(s) were updated by an overlapping run; it alerts: %s", len(lost), ", ".join(lost))
    if plan.held_back:
        shown = "; ".join(f"{agent}: {why}" for agent, why in plan.held_back[:10])
        logger.info("%d alert(s) held back: %s", len(plan.held_back), shown)
    events = alert_events([a for a in plan.alerts if a.agent_id in won], registry, now, run_url)
    for alert in events:
        emit_event(event=alert.event, resource=alert_resource(alert, registry), occurred=now, payload=alert.payload)
        logger.info("Alert %s to %s: %s", alert.event, alert.route, alert.payload["headline"])
    return len(events)
