"""Read back what the flows wrote to a real Prefect API: events (which become readable a few
seconds after emission) and artifacts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.sorting import ArtifactSort
from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventResourceFilter


async def read_events(prefix: str, resource_ids: list[str] | None = None, since: datetime | None = None) -> list[Any]:
    """All events whose name starts with `prefix` (on `resource_ids` when given), oldest first."""
    async with get_client() as client:
        event_filter = EventFilter(
            occurred=EventOccurredFilter(
                since=since or datetime.now(UTC) - timedelta(hours=1), until=datetime.now(UTC) + timedelta(minutes=1)
            ),
            event=EventNameFilter(prefix=[prefix]),
            resource=EventResourceFilter(id=resource_ids) if resource_ids else None,
        )
        page = await client.read_events(filter=event_filter, limit=50)
        events = list(page.events)
        while page.next_page and len(events) < 1000:
            page = await client.read_events_page(page.next_page)
            events.extend(page.events)
    return sorted(events, key=lambda e: e.occurred)


async def wait_for_events(
    prefix: str,
    resource_ids: list[str] | None = None,
    *,
    since: datetime | None = None,
    until: Callable[[list[Any]], bool] = bool,
    timeout: float = 45.0,
) -> list[Any]:
    """Poll until `until(events)` holds or `timeout` passes; return the last read."""
    deadline = time.monotonic() + timeout
    while True:
        events = await read_events(prefix, resource_ids, since)
        if until(events) or time.monotonic() > deadline:
            return events
        await asyncio.sleep(1.0)


async def artifact_versions(key: str) -> list[Any]:
    """Every version of the keyed artifact, oldest first."""
    async with get_client() as client:
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])), sort=ArtifactSort.CREATED_DESC
        )
    return list(reversed(artifacts))
