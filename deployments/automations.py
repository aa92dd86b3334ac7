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
  the only form that works per resource on Prefect 3.8 OSS (docs/decisions.md). Bootstrap emits
  `agentwatch.monitor.armed` (in both sets), so the window starts at bootstrap, not at the first
  cycle: a monitor that never completes one is reported too.
- `agentwatch: crash zombie runs`: the zombie guard (Prefect's recipe). A run of an agentwatch
  deployment (tag `agentwatch`) that shows no sign of life (heartbeat, Pending, Running, ...) for
  `zombie_within(heartbeat)` is marked Crashed, which frees its deployment concurrency slot at once:
  the process that ran it was killed (SIGKILL, OOM, a lost machine), while Running or while still
  being submitted (Pending: no heartbeat ever comes). One proactive trigger, one timer per run.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import timedelta
from uuid import UUID

from prefect.client.schemas.objects import StateType
from prefect.events import AutomationCore, EventTrigger, Posture
from prefect.events.actions import ActionTypes, ChangeFlowRunState, DoNothing, RunDeployment, SendNotification

from agentwatch.alerts import AGENT_EVENTS, FLEET_EVENTS, AlertKind, Route
from agentwatch.durations import format_duration
from agentwatch.events import (
    BACKEND_LABEL,
    EVERY_AGENT,
    MONITOR_ARMED,
    MONITOR_CYCLE,
    MONITOR_RESOURCE_ID,
    ROUTE_LABEL,
    agent_event_name,
)
from agentwatch.models import AgentState
from agentwatch.registry import Registry

__all__ = [
    "HEARTBEAT_SECONDS",
    "MONITOR_STALLED_NAME",
    "TAG",
    "ZOMBIE_NAME",
    "configured_heartbeat",
    "monitor_stalled_automation",
    "reconcile_automation",
    "route_automations",
    "wanted_automations",
    "zombie_automation",
    "zombie_within",
]

TAG = "agentwatch"  # bootstrap owns (and prunes) automations with this tag and an agentwatch name
SUBJECT = "{{ event.payload.headline }}"
TEXT_BODY = "{{ event.payload.text }}"
JSON_BODY = "{{ event.payload | tojson }}"  # a `webhook` route gets the payload itself
MONITOR_EVENT = MONITOR_CYCLE
MONITOR_STALLED_NAME = "agentwatch: monitor stalled"
ZOMBIE_NAME = "agentwatch: crash zombie runs"

# The flow-run heartbeat agentwatch's runs send (PREFECT_FLOWS_HEARTBEAT_FREQUENCY): `serve` sets it
# unless the user did; a worker that runs agentwatch deployments must be started with it. 30 s is
# Prefect's minimum. The zombie guard's window is derived from it, so both must agree.
HEARTBEAT_SECONDS = 30
# Signs of life of a flow run: each one (re)starts the run's timer. Pending and Submitting cover a
# run whose process was killed before its engine started (no heartbeat ever comes); Cancelling a
# run someone cancelled after its runner died (nobody is left to finish the cancellation).
ALIVE_EVENTS = frozenset(
    f"prefect.flow-run.{name}" for name in ("heartbeat", "Pending", "Submitting", "Running", "Retrying", "Cancelling")
)
# Every other flow-run event (Completed, Failed, Crashed, Cancelled, TimedOut, AwaitingRetry,
# Paused, Suspended, ...) settles the timer without firing: expected, but not a start.
SETTLED_EVENTS = frozenset({"prefect.flow-run.*"})


def route_automations(route: Route, block_id: UUID) -> list[AutomationCore]:
    """The down and recovered automations of one route."""
    body = JSON_BODY if route.kind == "webhook" else TEXT_BODY
    notify = SendNotification(block_document_id=block_id, subject=SUBJECT, body=body)
    down = {AGENT_EVENTS[AlertKind.DOWN], AGENT_EVENTS[AlertKind.REMINDER], FLEET_EVENTS[AlertKind.DOWN]}
    down |= {FLEET_EVENTS[AlertKind.REMINDER], AGENT_EVENTS[AlertKind.FLAPPING], FLEET_EVENTS[AlertKind.FLAPPING]}
    recovered = {AGENT_EVENTS[AlertKind.RESOLVED], FLEET_EVENTS[AlertKind.RESOLVED]}
    recovered |= {AGENT_EVENTS[AlertKind.SETTLED], FLEET_EVENTS[AlertKind.SETTLED]}
    return [
        _forward(f"agentwatch: {route.name}: agent down", down, route, notify, "Agents that went down, to"),
        _forward(f"agentwatch: {route.name}: agent recovered", recovered, route, notify, "Recoveries, to"),
    ]


def _forward(name: str, events: set[str], route: Route, action: ActionTypes, what: str) -> AutomationCore:
    return AutomationCore(
        name=name,
        description=f"{what} route {route.name!r} ({route.kind}). Decided by the monitor; this only forwards.",
        tags=[TAG],
        trigger=EventTrigger(match={ROUTE_LABEL: route.name}, expect=events, posture=Posture.Reactive, threshold=1),
        actions=[action],
    )


def reconcile_automation(deployment_id: UUID) -> AutomationCore:
    """A Docker agent turned failed: run the reconcile deployment for that agent."""
    return AutomationCore(
        name="agentwatch: restart failed docker agents",
        description="A Docker agent's container failed: run the reconcile deployment for it (within its restart budget).",
        tags=[TAG],
        trigger=EventTrigger(
            match={"prefect.resource.id": EVERY_AGENT, BACKEND_LABEL: "docker"},
            expect={agent_event_name(AgentState.FAILED)},
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
    # `armed` (bootstrap) starts the window like a cycle does; with `after` equal to `expect`, each
    # of them restarts it, and the trigger stays armed after it fired until the next one.
    events = {MONITOR_CYCLE, MONITOR_ARMED}
    return AutomationCore(
        name=MONITOR_STALLED_NAME,
        description=(
            f"agentwatch watching itself: no {MONITOR_CYCLE} event for {format_duration(within)} "
            f"after the last one or after bootstrap ({MONITOR_ARMED})."
        ),
        tags=[TAG],
        trigger=EventTrigger(
            match={"prefect.resource.id": MONITOR_RESOURCE_ID},
            after=events,
            expect=events,
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=within,
        ),
        actions=actions or [DoNothing()],
    )


def configured_heartbeat() -> int:
    """The heartbeat this process's settings give flow runs: PREFECT_FLOWS_HEARTBEAT_FREQUENCY when
    the user set it (environment or profile), else HEARTBEAT_SECONDS (not Prefect's default of 180,
    which `serve` overrides)."""
    from prefect.settings import get_current_settings

    flows = get_current_settings().flows
    if "heartbeat_frequency" in flows.model_fields_set and flows.heartbeat_frequency is not None:
        return max(int(flows.heartbeat_frequency), HEARTBEAT_SECONDS)
    return HEARTBEAT_SECONDS


def zombie_within(heartbeat_seconds: int = HEARTBEAT_SECONDS) -> timedelta:
    """How long a run may show no sign of life before the guard crashes it: 2.5 heartbeats.

    One lost or late heartbeat (a busy event loop, a slow events websocket) never crashes a live
    run; two in a row do. It also bounds the Pending phase (process start, imports) at 75 s for
    the default 30 s heartbeat, far above the few seconds a served run takes to start.
    """
    return timedelta(seconds=max(heartbeat_seconds, HEARTBEAT_SECONDS) * 5 / 2)


def zombie_automation(heartbeat_seconds: int = HEARTBEAT_SECONDS) -> AutomationCore:
    """Crash a run of an agentwatch deployment whose process is gone (Prefect's zombie recipe).

    The flow engine emits `prefect.flow-run.heartbeat` every `heartbeat_seconds` while the run is
    Running; heartbeats and state events carry the run's tags as related resources
    (`prefect.tag.agentwatch`, role `tag`), which is how this is scoped to agentwatch's runs.
    One timer per run (`for_each` the run's resource id): every sign of life restarts it, any
    other state event settles it. When it runs out the run is proposed Crashed, not forced: a
    run that reached a final state meanwhile keeps it. Crashed releases the run's deployment
    concurrency slot at once, so the next scheduled run starts instead of being cancelled.

    Measured on Prefect 3.8.8: the state events of a run the scheduler created less than 5 minutes
    before it started reach automations up to 15 minutes late (each follows the run's Scheduled
    state, whose event the scheduler never emits, and the trigger service waits for it). For such
    a run only heartbeats count in time: a Running zombie is still crashed within the window, but a
    Pending one is not (`python -m deployments.serve` sweeps those itself), and a run that
    finished is not seen finishing, so the guard fires anyway and its proposal is refused ("Run is
    already in terminal state"): an `action.failed` event, harmless.
    """
    within = zombie_within(heartbeat_seconds)
    message = (
        f"agentwatch zombie guard: no heartbeat or state change for {format_duration(within)}; "
        "the process running this flow run is gone (killed, or its machine lost). "
        "Marked Crashed to free its concurrency slot."
    )
    return AutomationCore(
        name=ZOMBIE_NAME,
        description=(
            f"Runs tagged {TAG!r} with no heartbeat (every {heartbeat_seconds}s) or state event for "
            f"{format_duration(within)} are marked Crashed (Pending, Running or Cancelling with no process left)."
        ),
        tags=[TAG],
        trigger=EventTrigger(
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related={"prefect.resource.role": "tag", "prefect.resource.id": f"prefect.tag.{TAG}"},
            after=set(ALIVE_EVENTS),
            expect=set(ALIVE_EVENTS | SETTLED_EVENTS),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=within,
        ),
        actions=[ChangeFlowRunState(state=StateType.CRASHED, name="Crashed", message=message)],
    )


def wanted_automations(
    registry: Registry,
    blocks: Mapping[str, UUID],
    reconcile_id: UUID | None,
    interval: timedelta,
    heartbeat_seconds: int = HEARTBEAT_SECONDS,
) -> list[AutomationCore]:
    """Every automation the registry asks for; `blocks` maps route names to block document ids."""
    routes = registry.alerts.routes if registry.alerts else []
    wanted: list[AutomationCore] = []
    for route in routes:
        wanted.extend(route_automations(route, blocks[route.name]))
    if reconcile_id is not None:
        wanted.append(reconcile_automation(reconcile_id))
    wanted.append(monitor_stalled_automation([(r, blocks[r.name]) for r in routes if r.monitor], interval))
    wanted.append(zombie_automation(heartbeat_seconds))
    return wanted
