"""The scale stack (scripts/scale-stack.sh: a Prefect server on PostgreSQL with the Redis broker) is
what it claims: the server's rows are in PostgreSQL, events and automation actions go through Redis
streams, and a burst of 20,000 events is stored whole (the in-memory broker drops past 10,000
queued: docs/decisions.md). Timings are printed (-s), never asserted."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis

from .scale_stack import ScaleStack

pytestmark = pytest.mark.integration

BURST_EVENTS = 20_000
PER_POST = 500
POSTS_IN_FLIGHT = 4


def event(name: str, resource: str, **payload: Any) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "occurred": datetime.now(UTC).isoformat(),
        "event": name,
        "resource": {"prefect.resource.id": resource},
        "payload": payload,
    }


async def stored_count(api: httpx.AsyncClient, name: str) -> int:
    """How many events named `name` the server has stored (its events table, through the API)."""
    since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    answer = await api.post(
        "/events/filter", json={"filter": {"event": {"name": [name]}, "occurred": {"since": since}}}
    )
    answer.raise_for_status()
    return int(answer.json()["total"])


async def sql(stack: ScaleStack, query: str, *args: Any) -> list[Any]:
    """Rows of `query` run on the Prefect database itself, not through the server."""
    connection = await asyncpg.connect(stack.database_url)
    try:
        return list(await connection.fetch(query, *args))
    finally:
        await connection.close()


async def test_the_server_keeps_its_rows_in_postgresql(scale_stack: ScaleStack) -> None:
    async with httpx.AsyncClient(base_url=scale_stack.api_url, timeout=30) as api:
        settings = (await api.get("/admin/settings")).raise_for_status().json()["server"]
        assert settings["events"]["messaging_broker"] == "prefect_redis.messaging"
        assert settings["events"]["messaging_cache"] == "prefect_redis.messaging"
        assert settings["events"]["causal_ordering"] == "prefect_redis.ordering"
        assert settings["concurrency"]["lease_storage"] == "prefect_redis.lease_storage"
        name = f"scale-stack-{uuid.uuid4().hex[:8]}"
        created = (await api.post("/flows/", json={"name": name})).raise_for_status().json()

    rows = await sql(scale_stack, "SELECT id::text, name FROM flow WHERE name = $1", name)
    assert [(row["id"], row["name"]) for row in rows] == [(created["id"], name)]
    version = await sql(scale_stack, "SELECT version()")
    assert version[0][0].startswith("PostgreSQL")


async def test_events_and_automation_actions_go_through_redis(scale_stack: ScaleStack) -> None:
    tag = uuid.uuid4().hex[:8]
    name, resource = f"agentwatch.test.scale.{tag}", f"agentwatch.test.scale.{tag}"
    async with httpx.AsyncClient(base_url=scale_stack.api_url, timeout=30) as api:
        trigger: dict[str, Any] = {"type": "event", "posture": "Reactive", "match": {"prefect.resource.id": resource}}
        trigger |= {"expect": [name], "threshold": 1, "within": 0}
        body = {"name": f"scale-stack-{tag}", "trigger": trigger, "actions": [{"type": "do-nothing"}]}
        automation = (await api.post("/automations/", json=body)).raise_for_status().json()
        executed = f"prefect.automation.{automation['id']}"
        since = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
        started = time.monotonic()
        fired: list[Any] = []
        # A new automation reaches the triggers service a moment after it is created (PostgreSQL
        # NOTIFY): post until one of the events has made it act.
        while not fired and time.monotonic() - started < 60:
            (await api.post("/events", json=[event(name, resource)])).raise_for_status()
            await asyncio.sleep(2)
            page = await api.post(
                "/events/filter",
                json={
                    "filter": {
                        "event": {"name": ["prefect.automation.action.executed"]},
                        "resource": {"id": [executed]},
                        "occurred": {"since": since},
                    }
                },
            )
            fired = page.raise_for_status().json()["events"]
        print(f"\nscale stack: event -> automation -> action executed within {time.monotonic() - started:.1f}s")
        assert fired, "the automation never acted on the event"

    client = aioredis.from_url(scale_stack.redis_url)
    try:
        groups = {group["name"].decode(): group for group in await client.xinfo_groups("events")}
        assert {"event-persister", "reactive-triggers"} <= set(groups)
        assert groups["event-persister"]["entries-read"] > 0
        actions = {group["name"].decode(): group for group in await client.xinfo_groups("actions")}
        assert actions and all(group["entries-read"] > 0 for group in actions.values())
    finally:
        await client.aclose()


async def test_a_burst_of_twenty_thousand_events_is_stored_whole(scale_stack: ScaleStack) -> None:
    name = f"agentwatch.test.burst.{uuid.uuid4().hex[:8]}"
    posts = asyncio.Semaphore(POSTS_IN_FLIGHT)

    async def post(api: httpx.AsyncClient, first: int) -> None:
        batch = [event(name, f"agentwatch.test.burst.{i % 100}", i=i) for i in range(first, first + PER_POST)]
        async with posts:
            (await api.post("/events", json=batch)).raise_for_status()

    async with httpx.AsyncClient(base_url=scale_stack.api_url, timeout=120) as api:
        started = time.monotonic()
        await asyncio.gather(*(post(api, first) for first in range(0, BURST_EVENTS, PER_POST)))
        posted = time.monotonic()
        stored = 0
        while time.monotonic() - posted < 120:
            stored = await stored_count(api, name)
            if stored >= BURST_EVENTS:
                break
            await asyncio.sleep(1)
        done = time.monotonic()
    print(
        f"\nscale stack: {BURST_EVENTS} events posted in {posted - started:.1f}s "
        f"({BURST_EVENTS / (posted - started):.0f}/s, {PER_POST} per POST, {POSTS_IN_FLIGHT} in flight); "
        f"{stored} stored {done - posted:.1f}s after the last POST (stack started in {scale_stack.started_in:.1f}s)"
    )
    assert stored == BURST_EVENTS
    rows = await sql(scale_stack, "SELECT count(*) FROM events WHERE event = $1", name)
    assert rows[0][0] == BURST_EVENTS
    dropped = [line for line in scale_stack.log("server", 10_000).splitlines() if "dropping" in line.lower()]
    assert not dropped, "\n".join(dropped[:5])


async def test_a_sharded_monitor_over_two_workers_on_the_scale_stack(
    scale_stack: ScaleStack, postgres_databases: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue's stack end to end: a sharded cycle (2 shards) on two `prefect worker start`
    processes against the PostgreSQL + Redis Prefect server, with agentwatch's own state store on
    PostgreSQL shared by the parent and both workers (the scenario and its checks: shard_support.py)."""
    from .shard_support import sharded_cycle_scenario

    store_url = postgres_databases.create()
    try:
        with scale_stack.settings():
            times = await sharded_cycle_scenario(scale_stack.api_url, store_url, tmp_path / "sharded", monkeypatch)
    finally:
        postgres_databases.drop(store_url)
    print("timings:", ", ".join(f"{phase} {seconds:.1f}s" for phase, seconds in times.items()))
