"""Alerts end to end on a real Prefect server (the session's test server runs the triggers and
actions services): `agentwatch bootstrap` creates blocks, automations and deployments; the monitor
runs against real HTTP agents on 127.0.0.1; a webhook receiver on 127.0.0.1 stands in for Slack,
Teams, Discord and a plain webhook, each route pointed at its own path. Counts are exact, read
after a settle period. The tests run in file order and share one fleet and one state store."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId, FlowRunFilter

from agentwatch.demo import AgentServer, serve_in_thread
from agentwatch.models import AgentState
from agentwatch.store import StateStore
from flows.monitor import monitor_fleet

from .alert_support import Received, WebhookReceiver, receiving
from .conftest import SESSION, TEST_LABEL
from .docker_support import RunContainer, status_is, wait_until
from .prefect_reads import read_events

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHATS = {"slack": "/slack", "teams": "/teams", "discord": "/discord", "webhook": "/hook"}
BULK = [f"e2e-bulk-{i}" for i in range(20)]
SETTLE = 3.0  # after the expected messages arrived, wait this long for any extra one
SERVE = "import sys; from prefect import serve; from flows.reconcile import reconcile_deployment; serve(reconcile_deployment(sys.argv[1]))"


@dataclass
class Fleet:
    """The e2e fleet: writes its registry with some agents failing, runs monitor cycles."""

    path: Path
    agents: AgentServer
    receiver: WebhookReceiver
    api_url: str
    env: dict[str, str]
    down: set[str] = field(default_factory=set)
    container: str | None = None
    latencies: list[float] = field(default_factory=list)

    def write(self) -> None:
        def http(agent_id: str, labels: dict[str, str]) -> dict[str, Any]:
            mode = "fail" if agent_id in self.down else "ok"
            return {"id": agent_id, "labels": labels, "probe": {"http": {"url": self.agents.url(f"{mode}-{agent_id}")}}}

        agents = [http("e2e-web-1", {"tier": "web"}), http("e2e-quiet-1", {"tier": "web", "maint": "yes"})]
        agents += [http(a, {"tier": "bulk"}) for a in BULK]
        if self.container:
            agents.append(
                {"id": "e2e-dock-1", "labels": {"tier": "docker"}, "probe": {"docker": {"container": self.container}}}
            )
        now = datetime.now(UTC)
        routes = [
            {
                "name": f"e2e-{kind}",
                "kind": kind,
                "url_env": f"AW_E2E_{kind.upper()}",
                "match": {"labels": {"tier": "web"}},
            }
            for kind in CHATS
        ]
        routes += [
            {"name": "e2e-bulk", "kind": "webhook", "url_env": "AW_E2E_BULK", "match": {"labels": {"tier": "bulk"}}},
            {
                "name": "e2e-docker",
                "kind": "discord",
                "url_env": "AW_E2E_DOCKER",
                "match": {"labels": {"tier": "docker"}},
            },
            {"name": "e2e-watch", "kind": "webhook", "url_env": "AW_E2E_WATCH", "match": {"labels": {"tier": "none"}}},
        ]
        for route in routes:
            route["monitor"] = route["name"] == "e2e-watch"  # only /watch hears "monitor stalled"
        silence = {
            "match": {"labels": {"maint": "yes"}},
            "start": (now - timedelta(hours=1)).isoformat(),
            "end": (now + timedelta(hours=1)).isoformat(),
            "reason": "planned maintenance",
        }
        registry = {
            "defaults": {"failure_threshold": 2, "timeout": "2s"},
            "agents": agents,
            "alerts": {"group_threshold": 5, "routes": routes, "silences": [silence]},
        }
        self.path.write_text(yaml.safe_dump(registry, sort_keys=False))

    async def cycle(self) -> dict[str, dict[str, Any]]:
        self.write()
        return {row["id"]: row for row in await monitor_fleet(str(self.path), force=True)}


@pytest.fixture(scope="module")
def fleet(prefect_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    base = tmp_path_factory.mktemp("alerts-e2e")
    with receiving() as receiver, serve_in_thread() as agents, pytest.MonkeyPatch.context() as mp:
        env = {f"AW_E2E_{k.upper()}": receiver.url + p for k, p in CHATS.items()}
        env |= {f"AW_E2E_{k}": f"{receiver.url}/{k.lower()}" for k in ("BULK", "DOCKER", "WATCH")}
        env |= {
            "AGENTWATCH_DATABASE_URL": f"sqlite:///{base}/state.db",
            # The automation restarts failed containers here, so the test sees it do so.
            "AGENTWATCH_RECONCILE_IN_MONITOR": "false",
            "AGENTWATCH_RESTART_BACKOFF": "0s",
            "AGENTWATCH_DOCKER_SCOPE": f"{TEST_LABEL}={SESSION}",
        }
        for key, value in env.items():
            mp.setenv(key, value)
        state = Fleet(
            base / "fleet.yaml", agents, receiver, prefect_server, {**os.environ, "PREFECT_API_URL": prefect_server}
        )
        state.write()
        yield state
        _cleanup(prefect_server)
        if state.latencies:
            print(f"\nevent -> webhook latency: {sorted(round(x, 3) for x in state.latencies)} s")


def _cleanup(api_url: str) -> None:
    """Remove this module's automations and blocks, so they never act on other tests' events."""
    import asyncio

    async def remove() -> None:
        async with get_client() as client:
            for automation in await client.read_automations():
                if automation.name.startswith("agentwatch: "):
                    await client.delete_automation(automation.id)
            for block in await client.read_block_documents_by_type("custom-webhook", include_secrets=False):
                if block.name and block.name.startswith("agentwatch-e2e-"):
                    await client.delete_block_document(block.id)

    asyncio.run(remove())


def bootstrap(fleet: Fleet) -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).parent / "agentwatch"), "bootstrap", str(fleet.path), "--interval", "10"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=fleet.env, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return done


def counts(receiver: WebhookReceiver, *paths: str) -> dict[str, int]:
    return {p: len(receiver.on(p)) for p in paths}


def settle(receiver: WebhookReceiver, expected: dict[str, int], timeout: float = 30) -> dict[str, int]:
    """Wait until every path has at least its expected count, then SETTLE more; return the counts."""
    receiver.wait(lambda r: all(len(r.on(p)) >= n for p, n in expected.items()), timeout)
    time.sleep(SETTLE)
    return counts(receiver, *expected)


def test_bootstrap_creates_everything_and_a_second_run_changes_nothing(fleet: Fleet) -> None:
    first = bootstrap(fleet).stdout
    assert "automation  agentwatch: e2e-slack: agent down" in first
    assert "agentwatch: restart failed docker agents" in first and "agentwatch: monitor stalled" in first
    second = bootstrap(fleet).stdout
    lines = second.strip().splitlines()
    assert lines[-1] == "nothing to change", second
    assert all(line.endswith("unchanged") for line in lines[:-1]), second
    for url in (v for k, v in fleet.env.items() if k.startswith("AW_E2E_")):
        assert url not in first + second  # no webhook URL is ever printed


async def test_agent_down_then_recovered_exactly_one_message_each(fleet: Fleet) -> None:
    rows = await fleet.cycle()
    assert {rows[a]["state"] for a in rows} == {"healthy"}
    fleet.down = {"e2e-web-1", "e2e-quiet-1", *BULK}
    await fleet.cycle()  # degraded: below the threshold, no message
    started = datetime.now(UTC)
    rows = await fleet.cycle()  # unhealthy: the alert
    assert rows["e2e-web-1"]["state"] == rows["e2e-quiet-1"]["state"] == rows["e2e-bulk-0"]["state"] == "unhealthy"
    paths = [*CHATS.values(), "/bulk"]
    assert settle(fleet.receiver, dict.fromkeys(paths, 1)) == dict.fromkeys(paths, 1)

    for path in CHATS.values():
        [message] = fleet.receiver.on(path)
        assert "e2e-web-1 is unhealthy" in message.text
        assert "unreachable after 2 consecutive health checks: HTTP 500" in message.text
        assert "/flow-run/" in message.text  # the link to the monitor run that saw it
    assert fleet.receiver.on("/slack")[0].json["text"] == "🔴 e2e-web-1 is unhealthy"
    assert fleet.receiver.on("/discord")[0].json["content"].startswith("**🔴 e2e-web-1 is unhealthy**\nreason: ")
    assert fleet.receiver.on("/teams")[0].json["attachments"][0]["content"]["type"] == "AdaptiveCard"
    hook = fleet.receiver.on("/hook")[0].json
    assert (hook["agent"], hook["state"], hook["kind"]) == ("e2e-web-1", "unhealthy", "down")
    assert datetime.fromisoformat(hook["since"]) >= started - timedelta(seconds=30)
    await _record_latency(fleet, started, fleet.receiver.on("/slack")[0])

    fleet.down = set(BULK) | {"e2e-quiet-1"}
    rows = await fleet.cycle()
    assert rows["e2e-web-1"]["state"] == "healthy"
    expected = {**dict.fromkeys(CHATS.values(), 2), "/bulk": 1}
    assert settle(fleet.receiver, expected) == expected
    for path in CHATS.values():
        assert "e2e-web-1 recovered after" in fleet.receiver.on(path)[1].text


async def test_twenty_agents_down_in_one_cycle_are_one_message(fleet: Fleet) -> None:
    [grouped] = fleet.receiver.on("/bulk")
    body = grouped.json
    assert (body["kind"], body["count"], body["states"]) == ("down", 20, {"unhealthy": 20})
    assert body["agents"] == BULK[:10] and body["more"] == 10
    assert body["headline"] == "🔴 20 agents are down"


async def test_silenced_agent_is_recorded_but_never_announced(fleet: Fleet) -> None:
    assert not [r for r in fleet.receiver.received if "e2e-quiet-1" in r.text]
    async with StateStore(fleet.env["AGENTWATCH_DATABASE_URL"]) as store:
        record = (await store.load(["e2e-quiet-1"]))["e2e-quiet-1"]
        incident = (await store.load_incidents())["e2e-quiet-1"]
    assert record.state is AgentState.UNHEALTHY
    assert incident.notified_at is None  # held back: a message would follow only when the silence ends
    events = await read_events("agentwatch.agent.", ["agentwatch.agent.e2e-quiet-1"])
    assert [e.event for e in events][-1] == "agentwatch.agent.unhealthy"  # state events still flow


@pytest.mark.docker
async def test_failed_docker_agent_is_restarted_by_the_reconcile_deployment(
    fleet: Fleet, run_container: RunContainer
) -> None:
    # Fails once, then runs: the filesystem survives a restart, so the second start finds the mark.
    box = run_container("alert-dock", "[ -f /tmp/once ] && exec /bin/agent; touch /tmp/once; sleep 1; exit 3")
    first_start = wait_until(box, status_is("exited"))["StartedAt"]
    fleet.container = box.name
    fleet.write()
    serve = subprocess.Popen(
        [sys.executable, "-c", SERVE, str(fleet.path)],
        cwd=ROOT,
        env={**fleet.env, "PREFECT_RUNNER_POLL_FREQUENCY": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        async with get_client() as client:
            deployment = await _wait_deployment(client, "reconcile-fleet/reconcile")
            rows = await fleet.cycle()
            assert (rows["e2e-dock-1"]["state"], rows["e2e-dock-1"]["reason"]) == ("failed", "exited with code 3")
            run = await _wait_run(client, deployment, timeout=60)
        assert run.parameters["agent_ids"] == ["e2e-dock-1"]
        state = wait_until(box, lambda s: s["StartedAt"] != first_start and s["Status"] == "running", timeout=10)
        assert state["Running"]
    finally:
        serve.terminate()
        serve.wait(timeout=20)
    assert fleet.receiver.wait(lambda r: bool(r.on("/docker")), timeout=10)
    assert "e2e-dock-1 failed" in fleet.receiver.on("/docker")[0].text
    assert "exited with code 3" in fleet.receiver.on("/docker")[0].text
    rows = await fleet.cycle()
    assert rows["e2e-dock-1"]["state"] == "healthy"
    assert settle(fleet.receiver, {"/docker": 2}) == {"/docker": 2}
    assert "e2e-dock-1 recovered after" in fleet.receiver.on("/docker")[1].text


def test_monitor_stalled_when_no_cycle_for_three_intervals(fleet: Fleet) -> None:
    # Bootstrap ran with --interval 10: the proactive trigger fires 30 s (+ ~3.5 s) after the last cycle.
    assert fleet.receiver.wait(lambda r: bool(r.on("/watch")), timeout=60), "no 'monitor stalled' message"
    body = fleet.receiver.on("/watch")[0].json
    assert body["kind"] == "monitor-stalled"
    assert body["headline"].startswith("⚠️ agentwatch monitor stalled: no cycle for 30s")


async def _record_latency(fleet: Fleet, since: datetime, received: Received) -> None:
    events = await read_events("agentwatch.alert.down", ["agentwatch.agent.e2e-web-1"], since=since)
    for event in events[-1:]:
        fleet.latencies.append(received.at - event.occurred.timestamp())


async def _wait_deployment(client: Any, name: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await client.read_deployment_by_name(name)
        except Exception:
            if time.monotonic() > deadline:
                raise
            await _sleep(0.5)


async def _wait_run(client: Any, deployment: Any, timeout: float) -> Any:
    """The first run of `deployment` to finish; fails if none does in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = await client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
            flow_run_filter=FlowRunFilter(),
        )
        finished = [r for r in runs if r.state is not None and r.state.is_final()]
        if finished:
            assert finished[0].state.is_completed(), finished[0].state
            return finished[0]
        await _sleep(1.0)
    raise AssertionError(f"no run of {deployment.name} finished in {timeout}s")


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)
