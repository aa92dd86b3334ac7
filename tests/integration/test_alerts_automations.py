"""The automations and notification blocks `agentwatch bootstrap` creates, driven for real: on the
session's Prefect test server (its triggers and actions services evaluate and act), with the
shared alert fleet (tests/integration/alert_fleet.py: a webhook receiver on 127.0.0.1, one path
per route). Each test posts agentwatch's own alert events, built by agentwatch.alerts and posted
by the monitor's own `post_events`, and reads what reached the receiver (or which flow runs the
server created). Also bootstrap itself: its refusal without an API, `--work-pool`, `url_secret`
routes, and the removal of a route's automations and block."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.blocks.system import Secret
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterExpectedStartTime,
)
from prefect.events import Posture

from agentwatch.alerts import Alert, AlertKind, alert_event_id, alert_events
from agentwatch.alerts.step import alert_resource
from agentwatch.errors import BootstrapError
from agentwatch.events import EventSpec, agent_resource
from agentwatch.models import AgentState
from agentwatch.registry import Registry, load_registry, parse_registry
from deployments.automations import monitor_stalled_automation
from deployments.bootstrap import bootstrap as apply_bootstrap
from tasks.publishing import post_events

from .alert_fleet import AGENTWATCH, BULK, CHATS, PATHS, ROOT, SETTLE, Fleet, bootstrap, settle
from .alert_support import receiving

pytestmark = pytest.mark.integration

REASON = 'HTTP 500 "oops" <b>&</b> back\\slash'


@pytest.fixture(autouse=True)
def fleet_environment(request: pytest.FixtureRequest) -> None:
    """The tests that use the fleet get its environment, and no message received yet."""
    if "fleet" in request.fixturenames:
        request.getfixturevalue("alerting")


def alert(kind: AlertKind, agent: str, *routes: str, since: datetime | None = None) -> Alert:
    state = AgentState.HEALTHY if kind is AlertKind.RESOLVED else AgentState.UNHEALTHY
    since = since or datetime.now(UTC) - timedelta(minutes=5)
    return Alert(kind, agent, routes, state, REASON, since, reminders=1 if kind is AlertKind.REMINDER else 0)


async def post_alerts(registry: Registry, alerts: list[Alert]) -> list[Any]:
    """Post the alert events the monitor would post for these alerts; return them."""
    now = datetime.now(UTC)
    events = alert_events(alerts, registry, now, run_url="http://prefect.test/runs/flow-run/1")
    await post_events(
        [
            EventSpec(e.event, alert_resource(e, registry), e.payload, occurred=now, id=alert_event_id(e))
            for e in events
        ],
        related=[],
    )
    return events


def wait_for(receiver: Any, path: str, n: int, timeout: float = 30) -> list[Any]:
    """The messages on `path` once there are `n`, and SETTLE seconds later for any extra one."""
    receiver.wait(lambda r: len(r.on(path)) >= n, timeout)
    time.sleep(SETTLE)
    return receiver.on(path)


async def test_every_alert_event_reaches_its_route_and_no_other(fleet: Fleet) -> None:
    registry = load_registry(str(fleet.path))
    # Each kind: one agent's alert, and (in another cycle) 6 at once, over group_threshold 5: a fleet event.
    single = [alert(kind, "e2e-web-1", "e2e-webhook") for kind in AlertKind]
    single.append(alert(AlertKind.DOWN, "e2e-web-1", "e2e-nowhere"))  # no such route: no automation
    grouped = [alert(kind, agent, "e2e-webhook") for kind in AlertKind for agent in BULK[:6]]
    events = await post_alerts(registry, single) + await post_alerts(registry, grouped)
    expected = sorted(e.event for e in events if e.route == "e2e-webhook")
    assert len(expected) == 10 and len(set(expected)) == 10  # five kinds, agent and fleet events

    received = wait_for(fleet.receiver, "/hook", len(expected))
    bodies = [r.json for r in received]
    assert sorted(by_payload(events, body) for body in bodies) == expected
    heard = {r.path.split("?")[0] for r in fleet.receiver.received if b"monitor-stalled" not in r.body}
    assert heard == {"/hook"}  # no other route heard it ("monitor stalled" may come: no cycle runs here)
    async with get_client() as client:
        names = sorted(a.name for a in await client.read_automations() if a.name.startswith("agentwatch: "))
    assert names == sorted(
        [f"agentwatch: {route}: agent {what}" for route in PATHS for what in ("down", "recovered")]
        + ["agentwatch: crash zombie runs", "agentwatch: monitor stalled", "agentwatch: restart failed docker agents"]
    )


def by_payload(events: list[Any], body: dict[str, Any]) -> str:
    """The name of the posted event whose payload the webhook received, as is."""
    [event] = [e for e in events if e.payload == body]
    return str(event.event)


async def test_each_chat_gets_its_own_shape_with_the_text_as_sent(fleet: Fleet) -> None:
    registry = load_registry(str(fleet.path))
    [down] = [alert(AlertKind.DOWN, "e2e-web-1", *(f"e2e-{kind}" for kind in CHATS))]
    events = {e.route: e.payload for e in await post_alerts(registry, [down])}
    assert REASON in events["e2e-slack"]["text"]
    assert settle(fleet.receiver, dict.fromkeys(CHATS.values(), 1)) == dict.fromkeys(CHATS.values(), 1)
    for kind, path in CHATS.items():
        [message] = fleet.receiver.on(path)
        assert message.path == f"{path}?token={fleet.token}-e2e-{kind}"  # the URL from the route's variable
        payload = events[f"e2e-{kind}"]
        headline, text = payload["headline"], payload["text"]
        body = message.json
        if kind == "slack":
            assert body["text"] == headline
            assert body["blocks"][0]["text"]["text"] == f"*{headline}*\n{text}"
        elif kind == "teams":
            card = body["attachments"][0]["content"]
            assert card["type"] == "AdaptiveCard"
            assert [block["text"] for block in card["body"]] == [headline, text]
        elif kind == "discord":
            assert body["content"] == f"**{headline}**\n{text}"
            assert body["allowed_mentions"] == {"parse": []}
        else:
            assert body == payload  # a webhook route receives the event payload itself, as JSON
            assert message.headers["Content-Type"] == "application/json"
    async with get_client() as client:
        blocks = await client.read_block_documents_by_type("custom-webhook", include_secrets=False)
    urls = {b.name: b.data["url"] for b in blocks if b.name and b.name.startswith("agentwatch-e2e-")}
    assert urls and set(urls.values()) == {"{{url}}"}  # the URL lives only in the block's secrets


async def test_failed_docker_agent_event_runs_the_reconcile_deployment(fleet: Fleet) -> None:
    registry = parse_registry(
        "agents:\n"
        "  - {id: aw-dock-1, probe: {docker: {container: aw-c1}}}\n"
        "  - {id: aw-http-1, probe: {http: {url: 'http://127.0.0.1:9/'}}}\n"
    )
    since = datetime.now(UTC) - timedelta(seconds=1)

    def failed(agent: str) -> EventSpec:
        payload = {"agent": agent, "from": "healthy", "to": "failed", "reason": "exited with code 3"}
        return EventSpec(
            "agentwatch.agent.failed", agent_resource(agent, registry.get(agent)), payload, id=uuid.uuid4()
        )

    await post_events([failed("aw-http-1"), failed("aw-dock-1")], related=[])  # only the second is a Docker agent
    async with get_client() as client:
        deployment = await client.read_deployment_by_name("reconcile-fleet/reconcile")
        runs_filter = {
            "deployment_filter": DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
            "flow_run_filter": FlowRunFilter(expected_start_time=FlowRunFilterExpectedStartTime(after_=since)),
        }
        deadline = time.monotonic() + 30
        while not (runs := await client.read_flow_runs(**runs_filter)) and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        await asyncio.sleep(SETTLE)
        runs = await client.read_flow_runs(**runs_filter)
        for run in runs:  # nobody serves them here; a later serve must not run them
            await client.delete_flow_run(run.id)
    assert [run.parameters["agent_ids"] for run in runs] == [["aw-dock-1"]]


@pytest.mark.parametrize(("interval", "within"), [(30, 90), (5, 30)])
def test_monitor_stalled_is_proactive_with_after_equal_to_expect(interval: int, within: int) -> None:
    # Its real firing is tests/integration/test_alerts_e2e.py::test_monitor_stalled_when_no_cycle_for_three_intervals.
    trigger = monitor_stalled_automation([], timedelta(seconds=interval)).trigger
    assert trigger.posture is Posture.Proactive  # type: ignore[union-attr]
    # Armed by bootstrap too (agentwatch.monitor.armed), so a monitor that never ran is reported.
    assert trigger.after == trigger.expect == {"agentwatch.monitor.cycle", "agentwatch.monitor.armed"}  # type: ignore[union-attr]
    assert trigger.for_each == {"prefect.resource.id"}  # type: ignore[union-attr]
    assert trigger.within == timedelta(seconds=within)  # type: ignore[union-attr]


def test_bootstrap_refuses_without_a_prefect_api(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text("agents: []\nalerts:\n  routes: [{name: ops, kind: slack, url_env: AW_NOWHERE}]\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env |= {"PREFECT_HOME": str(tmp_path / "prefect"), "AW_NOWHERE": "https://chat.example/hooks/x"}
    done = subprocess.run(
        [AGENTWATCH, "bootstrap", str(path)], capture_output=True, text=True, timeout=120, env=env, cwd=ROOT
    )
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1] == "error: bootstrap needs a Prefect server: set PREFECT_API_URL"
    assert done.stdout == ""  # nothing was created anywhere (no temporary server either)


def test_bootstrap_registers_the_deployments_on_a_work_pool(fleet: Fleet) -> None:
    pool = f"aw-test-{uuid.uuid4().hex[:6]}"

    async def pools(names: list[str]) -> list[str | None]:
        async with get_client() as client:
            return [(await client.read_deployment_by_name(name)).work_pool_name for name in names]

    async def working_dirs(names: list[str]) -> list[Any]:
        async with get_client() as client:
            return [(await client.read_deployment_by_name(n)).job_variables.get("working_dir") for n in names]

    async def create_pool() -> None:
        async with get_client() as client:
            await client.create_work_pool(WorkPoolCreate(name=pool, type="process"))

    async def delete_pool() -> None:  # the deployments lose the pool with it: as the module found them
        async with get_client() as client:
            await client.delete_work_pool(pool)

    asyncio.run(create_pool())
    try:
        first = bootstrap(fleet, "--work-pool", pool).stdout
        names = [line.split()[1] for line in first.splitlines() if line.startswith("deployment ")]
        assert {"monitor-fleet/monitor", "reconcile-fleet/reconcile", "shutdown-fleet/shutdown"} <= set(names), first
        assert asyncio.run(pools(names)) == [pool] * len(names)
        # A process worker runs the entrypoints from where bootstrap ran (they are relative to it).
        assert asyncio.run(working_dirs(names)) == [str(ROOT.resolve())] * len(names)
        again = bootstrap(fleet, "--work-pool", pool).stdout
        assert again.strip().splitlines()[-1] == "nothing to change", again
    finally:
        asyncio.run(delete_pool())
    assert asyncio.run(pools(names)) == [None] * len(names)


def with_route(fleet: Fleet, path: Path, route: dict[str, Any]) -> str:
    """The fleet's registry plus one route (no monitor messages, so "monitor stalled" stays as it is)."""
    registry = yaml.safe_load(fleet.path.read_text())
    registry["alerts"]["routes"].append({**route, "monitor": False, "match": {"agents": ["e2e-web-1"]}})
    path.write_text(yaml.safe_dump(registry, sort_keys=False))
    return str(path)


async def apply(registry: str, fleet: Fleet) -> list[str]:
    """Bootstrap in this process (deployments left as the module's bootstrap made them); its lines."""
    lines: list[str] = []
    await apply_bootstrap(registry, interval=fleet.interval, deployments=False, echo=lines.append)
    return lines


async def test_url_secret_route_sends_to_the_url_in_its_secret_block(fleet: Fleet, tmp_path: Path) -> None:
    name = f"aw-e2e-vault-{uuid.uuid4().hex[:6]}"
    secret_token = uuid.uuid4().hex
    registry = with_route(fleet, tmp_path / "fleet.yaml", {"name": "e2e-vault", "kind": "webhook", "url_secret": name})
    with pytest.raises(BootstrapError, match=f"route 'e2e-vault': no Secret block '{name}'"):
        await apply(registry, fleet)
    await Secret(value=f"{fleet.receiver.url}/vault?token={secret_token}").save(name)
    try:
        lines = await apply(registry, fleet)
        assert [line.split()[-1] for line in lines if "e2e-vault" in line] == ["created"] * 3
        await post_alerts(load_registry(registry), [alert(AlertKind.DOWN, "e2e-web-1", "e2e-vault")])
        [message] = wait_for(fleet.receiver, "/vault", 1)
        assert message.path == f"/vault?token={secret_token}"
        assert (message.json["route"], message.json["kind"]) == ("e2e-vault", "down")
        assert not [line for line in lines if secret_token in line]
    finally:
        await apply(str(fleet.path), fleet)  # back to the module's routes
        async with get_client() as client:
            await client.delete_block_document((await Secret.aload(name))._block_document_id)


async def test_a_route_dropped_from_the_registry_loses_its_automations_and_block(
    fleet: Fleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with receiving() as other:
        monkeypatch.setenv("AW_E2E_GONE", f"{other.url}/gone")
        registry = with_route(
            fleet, tmp_path / "fleet.yaml", {"name": "e2e-gone", "kind": "webhook", "url_env": "AW_E2E_GONE"}
        )
        lines = await apply(registry, fleet)
        assert [line.split()[-1] for line in lines if "e2e-gone" in line] == ["created"] * 3

        lines = await apply(str(fleet.path), fleet)  # the route is gone from the registry
        gone = sorted(" ".join(line.split()) for line in lines if "e2e-gone" in line)
        assert gone == [
            "automation agentwatch: e2e-gone: agent down removed",
            "automation agentwatch: e2e-gone: agent recovered removed",
            "block agentwatch-e2e-gone removed",
        ]
        assert lines[-1] == "3 removed"
        async with get_client() as client:
            names = {a.name for a in await client.read_automations()}
            blocks = {
                b.name for b in await client.read_block_documents_by_type("custom-webhook", include_secrets=False)
            }
        assert not [n for n in names if "e2e-gone" in n] and "agentwatch-e2e-gone" not in blocks
        assert "agentwatch: e2e-slack: agent down" in names and "agentwatch-e2e-slack" in blocks  # the others stay

        # Its alerts now reach nobody; the routes still there still deliver.
        registry_then = load_registry(registry)
        await post_alerts(registry_then, [alert(AlertKind.DOWN, "e2e-web-1", "e2e-gone", "e2e-webhook")])
        assert len(wait_for(fleet.receiver, "/hook", 1)) == 1
        assert other.received == []
