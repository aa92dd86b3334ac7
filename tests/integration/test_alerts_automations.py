"""Automations and notification blocks as code, checked without a server: what each trigger
matches, what each action sends, and the request each chat's block would make."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
from prefect.events import Posture
from prefect.events.actions import RunDeployment, SendNotification

from agentwatch.alerts import Route
from agentwatch.registry import parse_registry
from deployments.automations import monitor_stalled_automation, reconcile_automation, wanted_automations
from deployments.notifications import route_block

pytestmark = pytest.mark.integration

URL = "https://chat.example/hooks/T0/B0/secret-part"
BODY = 'reason: HTTP 500 "oops"\nsince: 2025-06-02 12:00:00 UTC'


def route(kind: str, **extra: object) -> Route:
    return Route.model_validate({"name": f"r-{kind}", "kind": kind, "url_env": "X", **extra})


@pytest.mark.parametrize(
    ("kind", "read"),
    [
        ("slack", lambda j: j["blocks"][0]["text"]["text"]),
        ("teams", lambda j: j["attachments"][0]["content"]["body"][1]["text"]),
        ("discord", lambda j: j["content"]),
    ],
)
def test_chat_blocks_send_their_own_shape(kind: str, read: object) -> None:
    block = route_block(route(kind), URL)
    assert block.url == "{{url}}"  # the URL itself lives only in the obfuscated secrets
    request = block._build_request_args(body=BODY, subject="🔴 web-1 is unhealthy")
    assert request["url"] == URL
    payload = json.loads(json.dumps(request["json"]))
    assert BODY in read(payload)  # type: ignore[operator]
    if kind == "discord":
        assert payload["allowed_mentions"] == {"parse": []}


def test_webhook_block_sends_the_rendered_json_as_is() -> None:
    block = route_block(route("webhook"), URL)
    request = block._build_request_args(body='{"agent": "web-1"}', subject="x")
    assert request["content"] == '{"agent": "web-1"}'
    assert request["headers"] == {"Content-Type": "application/json"}


def test_route_automations_forward_only_their_route() -> None:
    registry = parse_registry(
        "agents: []\nalerts:\n  routes:\n"
        "    - {name: ops, kind: slack, url_env: A}\n    - {name: hook, kind: webhook, url_env: B, monitor: false}\n"
    )
    blocks = {"ops": uuid.uuid4(), "hook": uuid.uuid4()}
    wanted = {a.name: a for a in wanted_automations(registry, blocks, uuid.uuid4(), timedelta(seconds=30))}
    assert sorted(wanted) == [
        "agentwatch: crash zombie runs",
        "agentwatch: hook: agent down",
        "agentwatch: hook: agent recovered",
        "agentwatch: monitor stalled",
        "agentwatch: ops: agent down",
        "agentwatch: ops: agent recovered",
        "agentwatch: restart failed docker agents",
    ]
    down = wanted["agentwatch: ops: agent down"]
    assert down.trigger.match.root == {"agentwatch.route": "ops"}  # type: ignore[union-attr]
    assert down.trigger.expect == {  # type: ignore[union-attr]
        "agentwatch.alert.down",
        "agentwatch.alert.reminder",
        "agentwatch.fleet.degraded",
        "agentwatch.fleet.reminder",
        "agentwatch.alert.flapping",
        "agentwatch.fleet.flapping",
    }
    assert wanted["agentwatch: ops: agent recovered"].trigger.expect == {  # type: ignore[union-attr]
        "agentwatch.alert.resolved",
        "agentwatch.fleet.recovered",
        "agentwatch.alert.settled",
        "agentwatch.fleet.settled",
    }
    [action] = down.actions
    assert isinstance(action, SendNotification) and action.block_document_id == blocks["ops"]
    assert (action.subject, action.body) == ("{{ event.payload.headline }}", "{{ event.payload.text }}")
    [hook_action] = wanted["agentwatch: hook: agent recovered"].actions
    assert isinstance(hook_action, SendNotification) and hook_action.body == "{{ event.payload | tojson }}"
    stalled = wanted["agentwatch: monitor stalled"]
    assert [a.block_document_id for a in stalled.actions] == [blocks["ops"]]  # type: ignore[union-attr]


def test_reconcile_runs_the_deployment_for_the_failed_docker_agent() -> None:
    deployment = uuid.uuid4()
    automation = reconcile_automation(deployment)
    trigger = automation.trigger
    assert trigger.expect == {"agentwatch.agent.failed"}  # type: ignore[union-attr]
    assert trigger.match.root == {"prefect.resource.id": "agentwatch.agent.*", "agentwatch.backend": "docker"}  # type: ignore[union-attr]
    [action] = automation.actions
    assert isinstance(action, RunDeployment)
    assert action.deployment_id == deployment
    assert action.parameters == {"agent_ids": ["{{ event.payload.agent }}"]}


@pytest.mark.parametrize(("interval", "within"), [(30, 90), (5, 30)])
def test_monitor_stalled_is_proactive_with_after_equal_to_expect(interval: int, within: int) -> None:
    trigger = monitor_stalled_automation([], timedelta(seconds=interval)).trigger
    assert trigger.posture is Posture.Proactive  # type: ignore[union-attr]
    # Armed by bootstrap too (agentwatch.monitor.armed), so a monitor that never ran is reported.
    assert trigger.after == trigger.expect == {"agentwatch.monitor.cycle", "agentwatch.monitor.armed"}  # type: ignore[union-attr]
    assert trigger.for_each == {"prefect.resource.id"}  # type: ignore[union-attr]
    assert trigger.within == timedelta(seconds=within)  # type: ignore[union-attr]
