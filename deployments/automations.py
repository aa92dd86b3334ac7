"""agentwatch's automations, as code. `agentwatch bootstrap` creates them on the Prefect server.

Per route (one notification block each):
- `agentwatch: <route>: agent down`: `agentwatch.alert.down` / `.reminder` and the grouped
  `agentwatch.fleet.degraded` / `.reminder` for that route -> its chat.
- `agentwatch: <route>: agent recovered`: `agentwatch.alert.resolved` and `agentwatch.fleet.recovered`.

The monitor decides what is an alert (grouping, silences, dependencies, reminders); these only
forward the message the event carries (`headline`, `text`), so each fires once per event.

Fleet-wide:
- `agentwatch: restart failed docker agents`: `agentwatch.agent.failed` on a Docker agent -> a run
  of the `reconcile` deployment with `agent_ids` from the event.
- `agentwatch: monitor stalled`: no `agentwatch.monitor.cycle` event for 3 monitor intervals ->
  the routes that take monitor messages. A proactive trigger with `after` equal to `expect`,
  the only form that works per resource on Prefect 3.8 OSS (DESIGN.md).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import timedelta
from uuid import UUID

from prefect.events import AutomationCore, EventTrigger, Posture
from prefect.events.actions import ActionTypes, DoNothing, RunDeployment, SendNotification

from agentwatch.alerts import AGENT_EVENTS, FLEET_EVENTS, AlertKind, Route
from agentwatch.durations import format_duration
from agentwatch.registry import Registry

__all__ = [
    "TAG",
    "monitor_stalled_automation",
    "reconcile_automation",
    "route_automations",
    "wanted_automations",
]

TAG = "agentwatch"  # bootstrap owns (and prunes) automations with this tag and an agentwatch name
SUBJECT = "{{ event.payload.headline }}"
TEXT_BODY = "{{ event.payload.text }}"
JSON_BODY = "{{ event.payload | tojson }}"  # a `webhook` route gets the payload itself
MONITOR_EVENT = "agentwatch.monitor.cycle"


def route_automations(route: Route, block_id: UUID) -> list[AutomationCore]:
    """The down and recovered automations of one route."""
    body = JSON_BODY if route.kind == "webhook" else TEXT_BODY
    notify = SendNotification(block_document_id=block_id, subject=SUBJECT, body=body)
    down = {AGENT_EVENTS[AlertKind.DOWN], AGENT_EVENTS[AlertKind.REMINDER], FLEET_EVENTS[AlertKind.DOWN]}
    down.add(FLEET_EVENTS[AlertKind.REMINDER])
    recovered = {AGENT_EVENTS[AlertKind.RESOLVED], FLEET_EVENTS[AlertKind.RESOLVED]}
    return [
        _forward(f"agentwatch: {route.name}: agent down", down, route, notify, "Agents that went down, to"),
        _forward(f"agentwatch: {route.name}: agent recovered", recovered, route, notify, "Recoveries, to"),
    ]


def _forward(name: str, events: set[str], route: Route, action: ActionTypes, what: str) -> AutomationCore:
    return AutomationCore(
        name=name,
        description=f"{what} route {route.name!r} ({route.kind}). Decided by the monitor; this only forwards.",
        tags=[TAG],
        trigger=EventTrigger(
            match={"agentwatch.route": route.name}, expect=events, posture=Posture.Reactive, threshold=1
        ),
        actions=[action],
    )


def reconcile_automation(deployment_id: UUID) -> AutomationCore:
    """A Docker agent turned failed: run the reconcile deployment for that agent."""
    return AutomationCore(
        name="agentwatch: restart failed docker agents",
        description="A Docker agent's container failed: run the reconcile deployment for it (within its restart budget).",
        tags=[TAG],
        trigger=EventTrigger(
            match={"prefect.resource.id": "agentwatch.agent.*", "agentwatch.backend": "docker"},
            expect={"agentwatch.agent.failed"},
            posture=Posture.Reactive,
            threshold=1,
        ),
        actions=[
            RunDeployment(
                source="selected", deployment_id=deployment_id, parameters={"agent_ids": ["{{ event.payload.agent }}"]}
            )
        ],
    )


def monitor_stalled_automation(routes: Sequence[tuple[Route, UUID]], interval: timedelta) -> AutomationCore:
    """No monitor cycle for 3 intervals (at least 30 s, the trigger's floor is 10 s) -> those routes."""
    within = max(3 * interval, timedelta(seconds=30))
    headline = f"⚠️ agentwatch monitor stalled: no cycle for {format_duration(within)}"
    text = (
        f"No monitor run finished a cycle in {format_duration(within)} (3 runs of {format_duration(interval)}). "
        "Agents are not being checked: look at the monitor deployment and its worker or serve process."
    )
    actions: list[ActionTypes] = []
    for route, block_id in routes:
        if route.kind == "webhook":
            payload = {"kind": "monitor-stalled", "route": route.name, "headline": headline, "text": text}
            body = json.dumps(payload, ensure_ascii=False)
        else:
            body = text
        actions.append(SendNotification(block_document_id=block_id, subject=headline, body=body))
    return AutomationCore(
        name="agentwatch: monitor stalled",
        description=f"agentwatch watching itself: no {MONITOR_EVENT} event for {format_duration(within)}.",
        tags=[TAG],
        trigger=EventTrigger(
            match={"prefect.resource.id": "agentwatch.monitor"},
            after={MONITOR_EVENT},
            expect={MONITOR_EVENT},
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=within,
        ),
        actions=actions or [DoNothing()],
    )


def wanted_automations(
    registry: Registry, blocks: Mapping[str, UUID], reconcile_id: UUID | None, interval: timedelta
) -> list[AutomationCore]:
    """Every automation the registry asks for; `blocks` maps route names to block document ids."""
    routes = registry.alerts.routes if registry.alerts else []
    wanted: list[AutomationCore] = []
    for route in routes:
        wanted.extend(route_automations(route, blocks[route.name]))
    if reconcile_id is not None:
        wanted.append(reconcile_automation(reconcile_id))
    wanted.append(monitor_stalled_automation([(r, blocks[r.name]) for r in routes if r.monitor], interval))
    return wanted
