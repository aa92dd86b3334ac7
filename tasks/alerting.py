"""The monitor's alert step as a Prefect task: decide (agentwatch.alerts.step), post the alert
events, then record the decision. The automations `agentwatch bootstrap` created forward each event
to chat, one automation per route.

Posting before recording, with ids derived from the decision, is what makes a retry after a crash
one chat message (see agentwatch/alerts/step.py).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from agentwatch.alerts.step import decide_alerts, record_alerts
from agentwatch.models import AgentRecord
from agentwatch.registry import Registry
from agentwatch.store import StateStore
from tasks.publishing import post_events

__all__ = ["AlertReport", "raise_alerts"]


@dataclass(frozen=True, slots=True)
class AlertReport:
    considered: int = 0  # transition rows consumed
    events: int = 0
    held_back: int = 0
    lost_races: tuple[str, ...] = ()


async def raise_alerts(
    store: StateStore,
    fleet: Registry,
    records: Mapping[str, AgentRecord],
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
    run_url: str | None = None,
    limit: int = 10_000,
) -> AlertReport:
    """Decide, post the alert events (acknowledged), record the decision and mark the rows alerted.

    Raises on an API failure; nothing is recorded then, so the next run decides again and posts
    the same event ids."""
    now = datetime.now(UTC)
    decided = await decide_alerts(store, fleet, records, now, run_url, limit)
    await post_events(decided.events)
    lost = await record_alerts(store, decided, now)
    if lost:
        logger.warning("%d incident(s) were updated by an overlapping run meanwhile: %s", len(lost), ", ".join(lost))
    held_back = decided.plan.held_back if decided.plan is not None else []
    if held_back:
        shown = "; ".join(f"{agent}: {why}" for agent, why in held_back[:10])
        logger.info("%d alert(s) held back: %s", len(held_back), shown)
    for alert in decided.alerts[:10]:
        logger.info("Alert %s to %s: %s", alert.event, alert.route, alert.payload["headline"])
    if len(decided.alerts) > 10:
        logger.info("... and %d more alert event(s)", len(decided.alerts) - 10)
    return AlertReport(len(decided.rows), len(decided.events), len(held_back), lost)
