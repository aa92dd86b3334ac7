"""Alerts end to end on a real Prefect server (the session's test server runs the triggers and
actions services): `agentwatch bootstrap` creates blocks, automations and deployments; the monitor
runs against real HTTP agents on 127.0.0.1; a webhook receiver on 127.0.0.1 stands in for Slack,
Teams, Discord and a plain webhook, each route pointed at its own path (tests/integration/alert_fleet.py).

Each test starts from a state store of its own with every agent healthy, and reads only the
messages that arrived during it: any one of them runs alone, or in any order. Counts are exact,
read after a settle period."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterExpectedStartTime,
    LogFilter,
    LogFilterTimestamp,
)
from prefect.events.filters import EventFilter, EventOccurredFilter
from prefect.settings import PREFECT_SERVER_DATABASE_CONNECTION_URL

from agentwatch.models import AgentState
from agentwatch.store import StateStore

from .alert_fleet import BULK, CHATS, ROOT, Fleet, bootstrap, settle
from .alert_support import Received
from .docker_support import RunContainer, status_is, wait_until
from .prefect_reads import read_events, wait_for_events

pytestmark = pytest.mark.integration

SERVE = "import sys; from prefect import serve; from deployments.definitions import RECONCILE; serve(RECONCILE.runner(sys.argv[1]))"


@pytest.fixture(autouse=True)
def fresh(alerting: Fleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Fleet:
    """A state store of the test's own, every agent healthy, no message received yet."""
    url = f"sqlite:///{tmp_path}/state.db"
    monkeypatch.setenv("AGENTWATCH_DATABASE_URL", url)
    monkeypatch.setitem(alerting.env, "AGENTWATCH_DATABASE_URL", url)
    alerting.down, alerting.container, alerting.flap = set(), None, False
    alerting.write()
    return alerting


def test_bootstrap_creates_everything_and_a_second_run_changes_nothing(fleet: Fleet) -> None:
    assert fleet.first is not None
    first = fleet.first.stdout
    assert "automation  agentwatch: e2e-slack: agent down" in first
    assert "agentwatch: restart failed docker agents" in first and "agentwatch: monitor stalled" in first
    # The fixture began with none of them on the server: every block and automation is new.
    made = [line for line in first.splitlines() if line.startswith(("block", "automation"))]
    assert made and all(line.endswith(" created") for line in made), first
    done = bootstrap(fleet)
    second = done.stdout
    lines = second.strip().splitlines()
    assert lines[-1] == "nothing to change", second
    assert all(line.endswith("unchanged") for line in lines[:-1]), second
    assert fleet.token not in first + second  # no webhook URL is ever printed
    assert fleet.token not in fleet.first.stderr + done.stderr


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
        assert "unhealthy after 2 consecutive failed health checks: HTTP 500" in message.text
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
    await fleet.cycle()
    fleet.down = set(BULK)
    await fleet.cycle()  # degraded
    rows = await fleet.cycle()  # all twenty unhealthy in this cycle
    assert {rows[a]["state"] for a in BULK} == {"unhealthy"}
    assert settle(fleet.receiver, {"/bulk": 1}) == {"/bulk": 1}
    [grouped] = fleet.receiver.on("/bulk")
    body = grouped.json
    assert (body["kind"], body["count"], body["states"]) == ("down", 20, {"unhealthy": 20})
    assert body["agents"] == BULK[:10] and body["more"] == 10
    assert body["headline"] == "🔴 20 agents are down"


async def test_silenced_agent_is_recorded_but_never_announced(fleet: Fleet) -> None:
    await fleet.cycle()
    started = datetime.now(UTC)
    fleet.down = {"e2e-web-1", "e2e-quiet-1"}  # the same route: web-1's message shows alerts flow
    await fleet.cycle()
    rows = await fleet.cycle()
    assert rows["e2e-quiet-1"]["state"] == rows["e2e-web-1"]["state"] == "unhealthy"
    assert settle(fleet.receiver, {"/slack": 1}) == {"/slack": 1}
    assert "e2e-web-1 is unhealthy" in fleet.receiver.on("/slack")[0].text
    assert not [r for r in fleet.receiver.received if "e2e-quiet-1" in r.text]
    async with StateStore(fleet.env["AGENTWATCH_DATABASE_URL"]) as store:
        record = (await store.load(["e2e-quiet-1"]))["e2e-quiet-1"]
        incident = (await store.load_incidents())["e2e-quiet-1"]
    assert record.state is AgentState.UNHEALTHY
    assert incident.notified_at is None  # held back: a message would follow only when the silence ends
    events = await wait_for_events(
        "agentwatch.agent.", ["agentwatch.agent.e2e-quiet-1"], since=started, until=lambda evs: len(evs) >= 2
    )
    assert [e.event for e in events] == ["agentwatch.agent.degraded", "agentwatch.agent.unhealthy"]  # state events flow


async def test_flapping_agent_reaches_the_webhook_once(fleet: Fleet) -> None:
    # e2e-flap-1: failure_threshold 1, flap_threshold 1 in flap_window 1m: its second change flaps.
    fleet.flap = True
    started = datetime.now(UTC)
    rows = await fleet.cycle()  # change 1: first sight, healthy
    assert rows["e2e-flap-1"]["state"] == "healthy"
    fleet.down = {"e2e-flap-1"}
    rows = await fleet.cycle()  # change 2: unhealthy, and flapping
    assert rows["e2e-flap-1"]["state"] == "unhealthy"
    fleet.down = set()
    rows = await fleet.cycle()  # change 3: healthy; its recovery is held like its down was
    assert rows["e2e-flap-1"]["state"] == "healthy"
    assert settle(fleet.receiver, {"/flap": 1}) == {"/flap": 1}
    [message] = fleet.receiver.on("/flap")
    body = message.json
    assert (body["kind"], body["agent"], body["route"]) == ("flapping", "e2e-flap-1", "e2e-flap")
    assert body["headline"] == "🔁 e2e-flap-1 is flapping: 2 state changes within 1m"
    events = await read_events("agentwatch.alert.", ["agentwatch.agent.e2e-flap-1"], since=started)
    assert [e.event for e in events] == ["agentwatch.alert.flapping"]


async def test_webhook_urls_never_reach_the_store_events_artifacts_logs_or_output(
    fleet: Fleet, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Each route's URL carries the fleet's secret token. Once bootstrap stored the URLs in the
    blocks and the automations used them (the messages arrived on the token's URLs), the token is
    nowhere else: not in either store's files, events, artifacts, logs, blocks as the API shows
    them, nor any output."""
    started = datetime.now(UTC) - timedelta(seconds=1)
    await fleet.cycle()
    fleet.down = {"e2e-web-1"}
    await fleet.cycle()
    await fleet.cycle()
    expected = dict.fromkeys(CHATS.values(), 1)
    assert settle(fleet.receiver, expected) == expected
    for kind in CHATS:  # the messages went to the secret URLs
        [message] = fleet.on(f"e2e-{kind}")
        assert message.path.endswith(f"?token={fleet.token}-e2e-{kind}")
    token = fleet.token
    assert fleet.first is not None

    # Bootstrap's output (a run that changes nothing: the bootstrap test), and this process's.
    outputs = [fleet.first.stdout, fleet.first.stderr, *capfd.readouterr()]
    assert not [text for text in outputs if token in text]
    async with get_client() as client:
        events = await _all_events(client, started)
        logs = await _pages(client.read_logs, log_filter=LogFilter(timestamp=LogFilterTimestamp(after_=started)))
        artifacts = await _pages(client.read_artifacts)
        blocks = await client.read_block_documents_by_type("custom-webhook", include_secrets=False)
        automations = await client.read_automations()
    assert {"agentwatch.alert.down", "agentwatch.agent.unhealthy"} <= {e.event for e in events}
    assert any(block.name == "agentwatch-e2e-slack" for block in blocks)
    for what, items in [
        ("event", events),
        ("log", logs),
        ("artifact", artifacts),
        ("block", blocks),
        ("automation", automations),
    ]:
        leaks = [item for item in items if token in json.dumps(item.model_dump(mode="json"))]
        assert not leaks, f"{what} carries a webhook URL: {leaks[0]}"

    # The files themselves: agentwatch's state store, and Prefect's database (the blocks' data,
    # events, logs and artifacts at rest, and whatever the API does not show).
    agentwatch_db = sorted(tmp_path.glob("state.db*"))
    url = PREFECT_SERVER_DATABASE_CONNECTION_URL.value()
    prefect_db = sorted(Path(url.split(":///", 1)[1]).parent.glob("*.db*"))
    assert agentwatch_db and prefect_db
    assert [f.name for f in agentwatch_db + prefect_db if token.encode() in f.read_bytes()] == []


@pytest.mark.docker
async def test_failed_docker_agent_is_restarted_by_the_reconcile_deployment(
    fleet: Fleet, run_container: RunContainer
) -> None:
    # Fails once, then runs: the filesystem survives a restart, so the second start finds the mark.
    box = run_container("alert-dock", "[ -f /tmp/once ] && exec /bin/agent; touch /tmp/once; sleep 1; exit 3")
    first_start = wait_until(box, status_is("exited"))["StartedAt"]
    fleet.container = box.name
    fleet.write()
    since = datetime.now(UTC) - timedelta(seconds=1)
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
            run = await _wait_run(client, deployment, since, timeout=60)
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


async def test_monitor_stalled_when_no_cycle_for_three_intervals(fleet: Fleet) -> None:
    # Bootstrap ran with --interval 10: the proactive trigger fires 30 s (+ ~3.5 s) after the last cycle.
    await fleet.cycle()
    cycled = time.time()
    assert fleet.receiver.wait(lambda r: bool(r.on("/watch")), timeout=60), "no 'monitor stalled' message"
    [message] = fleet.receiver.on("/watch")
    assert message.at - cycled >= 27  # a whole window after this test's cycle (its event is posted just before)
    body = message.json
    assert body["kind"] == "monitor-stalled"
    assert body["headline"].startswith("⚠️ agentwatch monitor stalled: no cycle for 30s")


async def _record_latency(fleet: Fleet, since: datetime, received: Received) -> None:
    events = await read_events("agentwatch.alert.down", ["agentwatch.agent.e2e-web-1"], since=since)
    for event in events[-1:]:
        fleet.latencies.append(received.at - event.occurred.timestamp())


async def _all_events(client: Any, since: datetime) -> list[Any]:
    """Every event the server has since `since`, whatever its name."""
    window = EventOccurredFilter(since=since, until=datetime.now(UTC) + timedelta(minutes=1))
    page = await client.read_events(filter=EventFilter(occurred=window), limit=50)
    events = list(page.events)
    while page.next_page and len(events) < 20_000:
        page = await client.read_events_page(page.next_page)
        events.extend(page.events)
    return events


async def _pages(read: Any, **filters: Any) -> list[Any]:
    """Every item a paged read of the API answers (the API gives at most 200 at a time)."""
    items: list[Any] = []
    while True:
        page = await read(**filters, limit=200, offset=len(items))
        items.extend(page)
        if len(page) < 200:
            return items


async def _wait_deployment(client: Any, name: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await client.read_deployment_by_name(name)
        except Exception:
            if time.monotonic() > deadline:
                raise
            await _sleep(0.5)


async def _wait_run(client: Any, deployment: Any, since: datetime, timeout: float) -> Any:
    """The first run of `deployment` created since `since` to finish; fails if none does in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = await client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
            flow_run_filter=FlowRunFilter(expected_start_time=FlowRunFilterExpectedStartTime(after_=since)),
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
