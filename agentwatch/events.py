"""Every event agentwatch emits: its name, its resource, and the value the Prefect layer posts.

One module, so an automation, a test and the code that emits an event agree on its spelling.

| event | resource | when |
|---|---|---|
| `agentwatch.agent.<state>` | `agentwatch.agent.<id>` | a transition (one per row of the transition log) |
| `agentwatch.agent.late` | `agentwatch.agent.<id>` | a heartbeat agent missed its first beat |
| `agentwatch.agent.changed` | `agentwatch.agent.<id>` | what an agent says it is (name, version, protocol) changed |
| `agentwatch.agent.heartbeat` | `agentwatch.agent.<id>` | sent by an agent itself (Prefect-native heartbeats) |
| `agentwatch.alert.down` / `.reminder` / `.resolved` | `agentwatch.agent.<id>` + route | one agent's alert |
| `agentwatch.alert.flapping` / `.settled` | `agentwatch.agent.<id>` + route | one agent began flapping / settled |
| `agentwatch.fleet.degraded` / `.reminder` / `.recovered` | `agentwatch.fleet` + route | a grouped alert |
| `agentwatch.fleet.flapping` / `.settled` | `agentwatch.fleet` + route | the same, for flapping and settled |
| `agentwatch.fleet.first-seen` | `agentwatch.fleet` | agents seen healthy for the first time (one event, not one each) |
| `agentwatch.fleet.shutdown` | `agentwatch.fleet` | the shutdown flow ran |
| `agentwatch.container.<action>` | the agent's, or `agentwatch.container.<id>`, + container id and name | reconcile or shutdown acted |
| `agentwatch.monitor.cycle` | `agentwatch.monitor` | a monitor cycle completed |
| `agentwatch.monitor.armed` | `agentwatch.monitor` | bootstrap armed "monitor stalled" |
| `agentwatch.heartbeat.batch` | `agentwatch.heartbeat-server` | the heartbeat server flushed beats |
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .registry import AgentSpec

__all__ = [
    "AGENT_CHANGED",
    "AGENT_HEARTBEAT",
    "AGENT_LATE",
    "AGENT_PREFIX",
    "ALERT_DOWN",
    "ALERT_FLAPPING",
    "ALERT_REMINDER",
    "ALERT_RESOLVED",
    "ALERT_SETTLED",
    "BACKEND_LABEL",
    "CONTAINER_ID_LABEL",
    "CONTAINER_NAME_LABEL",
    "CONTAINER_PREFIX",
    "EVERY_AGENT",
    "FLEET_DEGRADED",
    "FLEET_FIRST_SEEN",
    "FLEET_FLAPPING",
    "FLEET_RECOVERED",
    "FLEET_REMINDER",
    "FLEET_SETTLED",
    "FLEET_RESOURCE_ID",
    "FLEET_SHUTDOWN",
    "HEARTBEAT_BATCH",
    "MONITOR_ARMED",
    "MONITOR_CYCLE",
    "MONITOR_RESOURCE_ID",
    "ROUTE_LABEL",
    "EventSpec",
    "agent_event_name",
    "agent_resource",
    "agent_resource_id",
    "container_event_name",
    "container_resource",
    "fleet_resource",
    "monitor_resource",
    "derived_event_id",
]

AGENT_PREFIX = "agentwatch.agent."
CONTAINER_PREFIX = "agentwatch.container."
FLEET_RESOURCE_ID = "agentwatch.fleet"
MONITOR_RESOURCE_ID = "agentwatch.monitor"
HEARTBEAT_SERVER_RESOURCE_ID = "agentwatch.heartbeat-server"

AGENT_LATE = "agentwatch.agent.late"
AGENT_CHANGED = "agentwatch.agent.changed"
AGENT_HEARTBEAT = "agentwatch.agent.heartbeat"  # Prefect-native heartbeats, sent by agents themselves
FLEET_FIRST_SEEN = "agentwatch.fleet.first-seen"
FLEET_SHUTDOWN = "agentwatch.fleet.shutdown"
MONITOR_CYCLE = "agentwatch.monitor.cycle"
MONITOR_ARMED = "agentwatch.monitor.armed"
HEARTBEAT_BATCH = "agentwatch.heartbeat.batch"

# Alert events (agentwatch.alerts.events): one agent's, and a route's summary of many.
ALERT_DOWN = "agentwatch.alert.down"
ALERT_REMINDER = "agentwatch.alert.reminder"
ALERT_RESOLVED = "agentwatch.alert.resolved"
ALERT_FLAPPING = "agentwatch.alert.flapping"
ALERT_SETTLED = "agentwatch.alert.settled"
FLEET_DEGRADED = "agentwatch.fleet.degraded"
FLEET_REMINDER = "agentwatch.fleet.reminder"
FLEET_RECOVERED = "agentwatch.fleet.recovered"
FLEET_FLAPPING = "agentwatch.fleet.flapping"
FLEET_SETTLED = "agentwatch.fleet.settled"

ROUTE_LABEL = "agentwatch.route"  # on alert events: the route whose automation forwards them
BACKEND_LABEL = "agentwatch.backend"  # "docker" on container-backed agents: what the reconcile automation matches
LABEL_PREFIX = "agentwatch.label."  # an agent's labels ride along on its resource
CONTAINER_ID_LABEL = "agentwatch.container.id"  # on container events: the container acted on
CONTAINER_NAME_LABEL = "agentwatch.container.name"

# Event ids that must survive a retry are uuid5 of this namespace and a key (derived_event_id).
_NAMESPACE = uuid.UUID("6f1d6c1e-0a43-4c55-9a51-7d1f3c2b9e10")


def agent_resource_id(agent_id: str) -> str:
    return AGENT_PREFIX + agent_id


EVERY_AGENT = agent_resource_id("*")  # the resource id pattern an automation matches every agent with


def agent_event_name(state: str) -> str:
    """`agentwatch.agent.<state>` for a state value (`AgentState.value`)."""
    return AGENT_PREFIX + state


def container_event_name(action: str) -> str:
    """`agentwatch.container.<action>`: started, stopped, restarted, removed, restart-budget-exhausted."""
    return CONTAINER_PREFIX + action


def agent_resource(agent_id: str, agent: AgentSpec | None) -> dict[str, str]:
    """The event resource of one agent; labels ride along so automations can route by them."""
    resource = {"prefect.resource.id": agent_resource_id(agent_id)}
    if agent is not None:
        resource["prefect.resource.name"] = agent.display_name
        for key, value in agent.labels.items():
            resource[LABEL_PREFIX + key] = value
        if agent.source == "docker" or (agent.probe is not None and agent.probe.kind == "docker"):
            resource[BACKEND_LABEL] = "docker"  # what the reconcile automation matches
    return resource


def container_resource(
    container_id: str, name: str, agent_id: str | None = None, agent: AgentSpec | None = None
) -> dict[str, str]:
    """The resource of a container event: its agent's when the container serves one, else the
    container's own (`agentwatch.container.<id>`); the container's id and name ride along."""
    if agent_id is not None:
        resource = agent_resource(agent_id, agent)
    else:
        resource = {"prefect.resource.id": CONTAINER_PREFIX + container_id}
    resource.update({CONTAINER_ID_LABEL: container_id, CONTAINER_NAME_LABEL: name})
    return resource


def fleet_resource(**extra: str) -> dict[str, str]:
    return {"prefect.resource.id": FLEET_RESOURCE_ID, "prefect.resource.name": "agentwatch fleet", **extra}


def monitor_resource() -> dict[str, str]:
    return {"prefect.resource.id": MONITOR_RESOURCE_ID, "prefect.resource.name": "agentwatch monitor"}


def derived_event_id(key: str, suffix: str = "") -> uuid.UUID:
    """The deterministic id of an event derived from what it reports: a transition row's uid, an
    alert decision, an identity change. The same key always gives the same id, so an event posted
    again by a retry is kept once by the server (and acted on once by its automations)."""
    return uuid.uuid5(_NAMESPACE, f"{key}/{suffix}" if suffix else key)


@dataclass(frozen=True, slots=True)
class EventSpec:
    """One event to post: what the Prefect layer turns into a `prefect.events.Event`.

    `id` None: a fresh id (events that no durable row stands behind)."""

    event: str
    resource: Mapping[str, str]
    payload: Mapping[str, Any] = field(default_factory=dict)
    occurred: datetime | None = None
    id: uuid.UUID | None = None
