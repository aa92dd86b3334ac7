"""Alerts: routes to chat, incidents, grouping, reminders, silences and dependencies.

The monitor decides (this package, pure); Prefect automations forward the resulting events to
notification blocks (deployments/automations.py, created by `agentwatch bootstrap`).
"""

from ..registry.alerts import AlertsConfig, Route, RouteKind, Selector, Silence
from .events import AGENT_EVENTS, FLEET_EVENTS, AlertEvent, alert_event_id, alert_events
from .incidents import Alert, AlertKind, AlertPlan, Incident, IncidentChange, plan_alerts
from .messages import agent_message, clean, fleet_message

__all__ = [
    "AGENT_EVENTS",
    "FLEET_EVENTS",
    "Alert",
    "AlertEvent",
    "AlertKind",
    "AlertPlan",
    "AlertsConfig",
    "Incident",
    "IncidentChange",
    "Route",
    "RouteKind",
    "Selector",
    "Silence",
    "agent_message",
    "alert_event_id",
    "alert_events",
    "clean",
    "fleet_message",
    "plan_alerts",
]
