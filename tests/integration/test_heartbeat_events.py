"""The Prefect-native heartbeat option on a real Prefect server: an agent emits
`agentwatch.agent.heartbeat` events itself, stops, and the proactive automation fires for it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.events import emit_event
from prefect.settings import PREFECT_API_URL, temporary_settings

from agentwatch.heartbeat.server import ServerConfig
from agentwatch.registry import parse_registry
from deployments.automations_heartbeat import HEARTBEAT_EVENT, heartbeat_automation
from deployments.heartbeat_server import PrefectBatchSink

from .heartbeat_support import free_port, running_server
from .prefect_reads import wait_for_events

pytestmark = pytest.mark.integration


async def test_beats_become_batched_events(prefect_server: str, state_db: str) -> None:
    registry = parse_registry("agents: [{id: ev-1, probe: {heartbeat: {}}}, {id: ev-2, probe: {heartbeat: {}}}]")
    server_id = f"test-{uuid.uuid4().hex[:8]}"
    sink = PrefectBatchSink(server_id)
    started = datetime.now(UTC)
    config = ServerConfig(rate=0, flush_interval=0.05, event_interval=60)  # one event, then the shutdown's
    with running_server(registry, state_db, config=config, sink=sink) as srv:
        async with httpx.AsyncClient(base_url=srv.url) as http:
            for _ in range(30):
                for agent in ("ev-1", "ev-2"):
                    assert (await http.post(f"/ping/{agent}")).status_code == 200
    resource = f"agentwatch.heartbeat-server.{server_id}"
    events = await wait_for_events(
        "agentwatch.heartbeat.batch",
        [resource],
        since=started,
        until=lambda evs: sum(e.payload["pings"] for e in evs) >= 60,
        timeout=30,
    )
    assert sum(e.payload["pings"] for e in events) == 60
    assert len(events) == sink.emitted <= 3  # 60 pings, a handful of events
    assert {a for e in events for a in e.payload["by_agent"]} == {"ev-1", "ev-2"}


async def test_an_unreachable_prefect_api_only_skips_batch_events() -> None:
    with temporary_settings({PREFECT_API_URL: f"http://127.0.0.1:{free_port()}/api"}):
        sink = PrefectBatchSink("down")
        await sink({"a": 1}, datetime.now(UTC))  # no exception, nothing queued
    assert (sink.skipped, sink.emitted) == (1, 0)


def test_within_must_suit_a_proactive_trigger() -> None:
    with pytest.raises(ValueError, match="at least 10s"):
        heartbeat_automation(within=timedelta(seconds=5))


async def test_automation_fires_when_an_agent_stops_beating(prefect_server: str) -> None:
    agent = f"native-{uuid.uuid4().hex[:8]}"  # an agent id no other test emits for
    automation = heartbeat_automation(within=timedelta(seconds=10), agent_ids=[agent], name=f"hb-missing-{agent}")
    started = datetime.now(UTC)
    async with get_client() as client:
        automation_id = await client.create_automation(automation)
    try:
        stored = await _read(automation_id)
        assert stored.trigger.posture == "Proactive" and stored.trigger.for_each == {"prefect.resource.id"}
        emit_event(HEARTBEAT_EVENT, resource={"prefect.resource.id": f"agentwatch.agent.{agent}"})
        # docs/decisions.md: a proactive trigger fires about `within` + 3.5 s after the last event.
        events = await wait_for_events(
            "prefect.automation.triggered", [f"prefect.automation.{automation_id}"], since=started, timeout=45
        )
        assert events, "the automation did not fire for the silent agent"
        assert (events[0].occurred - started).total_seconds() >= 10
    finally:
        async with get_client() as client:
            await client.delete_automation(automation_id)


async def _read(automation_id: uuid.UUID):  # type: ignore[no-untyped-def]
    async with get_client() as client:
        return await client.read_automation(automation_id)
