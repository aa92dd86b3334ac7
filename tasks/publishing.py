"""Publish the transition log to Prefect: the outbox's delivery side.

`publish_pending` claims unpublished rows from the state store (compare-and-swap, a lease), posts
their events in a few acknowledged requests (`POST /api/events`, each event's id derived from its
row, so a retry is one event on the server), writes each row's artifact version in order per
agent, and marks the rows published. What it cannot deliver now (API down, a timeout) it gives
back, and the next run publishes it; a run killed while holding rows leaves them to its lease.

`post_events` is the one way agentwatch sends events it must not lose: bounded by a timeout,
acknowledged by the server, never fire-and-forget.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prefect.artifacts import acreate_markdown_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.sorting import ArtifactSort
from prefect.events import Event
from prefect.runtime import flow_run

from agentwatch.events import EventSpec
from agentwatch.outbox import ArtifactVersion, plan_publish
from agentwatch.registry import Registry
from agentwatch.settings import Settings, get_settings
from agentwatch.store import StateStore

__all__ = ["PublishReport", "post_events", "publish_pending", "run_related"]

log = logging.getLogger("agentwatch.publish")

EVENTS_PER_REQUEST = 200  # ~1 KB each: a request stays far below the server's size limits


@dataclass(frozen=True, slots=True)
class PublishReport:
    """What one publish step did. `error` set: the API failed it; the rest waits for the next run."""

    claimed: int = 0
    published: int = 0  # rows marked published (events + artifact versions, or folded)
    folded: int = 0  # of those, first sights folded into one fleet event
    events: int = 0  # events posted
    artifacts: int = 0  # artifact versions written
    error: str | None = None


def run_related() -> list[dict[str, str]]:
    """The current flow run as a related resource, as `emit_event` adds it inside a run."""
    run_id = flow_run.id
    if not run_id:
        return []
    return [
        {
            "prefect.resource.id": f"prefect.flow-run.{run_id}",
            "prefect.resource.role": "flow-run",
            "prefect.resource.name": str(flow_run.name or run_id),
        }
    ]


def _event(spec: EventSpec, related: Sequence[Mapping[str, str]]) -> Event:
    data: dict[str, Any] = {
        "event": spec.event,
        "resource": dict(spec.resource),
        "related": [dict(r) for r in related],
        "payload": dict(spec.payload),
    }
    if spec.occurred is not None:
        data["occurred"] = spec.occurred
    if spec.id is not None:
        data["id"] = spec.id
    return Event.model_validate(data)


async def post_events(specs: Sequence[EventSpec], related: Sequence[Mapping[str, str]] | None = None) -> int:
    """Post events to the Prefect API and wait for it to accept them. Raises on failure.

    Callers bound the time with `asyncio.timeout`: the client retries some failures by itself."""
    if not specs:
        return 0
    related = run_related() if related is None else related
    events = [_event(s, related) for s in specs]
    async with get_client() as client:
        for start in range(0, len(events), EVENTS_PER_REQUEST):
            chunk = events[start : start + EVENTS_PER_REQUEST]
            response = await client._client.post("/events", json=[e.model_dump(mode="json") for e in chunk])
            response.raise_for_status()
    return len(events)


async def _already_written(version: ArtifactVersion) -> bool:
    """Whether a previous, interrupted publish already wrote this version (its marker is in the
    description). Asked only for rows claimed more than once."""
    async with get_client() as client:
        found = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[version.key])),
            sort=ArtifactSort.CREATED_DESC,
            limit=20,
        )
    return any(version.marker in (a.description or "") for a in found)


async def _write_artifacts(
    versions: Sequence[ArtifactVersion], retried: set[int], concurrency: int
) -> tuple[list[int], int, str | None]:
    """Write versions in order per agent, agents side by side. An agent's first failure stops its
    later versions (its history stays in order). Returns (row ids done, written, first error)."""
    by_key: dict[str, list[ArtifactVersion]] = {}
    for version in versions:
        by_key.setdefault(version.key, []).append(version)
    semaphore = asyncio.Semaphore(concurrency)
    done: list[int] = []
    written = 0
    errors: list[str] = []

    async def one_agent(chain: list[ArtifactVersion]) -> None:
        nonlocal written
        for version in chain:
            async with semaphore:
                try:
                    if version.row_id in retried and await _already_written(version):
                        done.append(version.row_id)
                        continue
                    await acreate_markdown_artifact(
                        key=version.key, markdown=version.markdown, description=version.description
                    )
                except Exception as exc:  # the API's failure, whatever its type: the row waits
                    errors.append(f"{type(exc).__name__}: {exc}")
                    return
            done.append(version.row_id)
            written += 1

    await asyncio.gather(*(one_agent(chain) for chain in by_key.values()))
    return done, written, errors[0] if errors else None


async def publish_pending(
    store: StateStore,
    fleet: Registry,
    *,
    run_url: str | None = None,
    settings: Settings | None = None,
    claimer: str | None = None,
) -> PublishReport:
    """Publish the oldest unpublished rows of the transition log (at most `publish_max` that need
    an event and an artifact each, per call). Never raises for an API failure: it is reported in
    the result and the rows stay for the next run. Store errors do raise."""
    settings = settings or get_settings()
    claimer = claimer or f"{flow_run.id or 'local'}/{uuid.uuid4().hex[:12]}"
    now = datetime.now(UTC)
    rows = await store.claim_unpublished(
        claimer, now=now, lease=settings.publish_lease, max_costly=settings.publish_max
    )
    if not rows:
        return PublishReport()
    plan = plan_publish(rows, fleet, run_url, settings.first_seen_fold)
    done: list[int] = []
    events = written = 0
    error: str | None = None
    try:
        async with asyncio.timeout(settings.publish_timeout.total_seconds()):
            events = await post_events(plan.events)
            done.extend(r.id for r in plan.folded)
            retried = {r.id for r in rows if r.attempts > 1}
            ids, written, error = await _write_artifacts(plan.artifacts, retried, settings.artifact_concurrency)
            done.extend(ids)
    except TimeoutError:
        error = f"the Prefect API did not answer within {settings.publish_timeout.total_seconds():g}s"
    except Exception as exc:  # an API failure of any kind: keep the rows for the next run
        error = f"{type(exc).__name__}: {exc}"
    finally:
        marked = await store.mark_published(claimer, done, datetime.now(UTC))
        left = {r.id for r in rows} - set(done)
        if left:
            await store.release_claims(claimer, left)
    return PublishReport(
        claimed=len(rows), published=marked, folded=len(plan.folded), events=events, artifacts=written, error=error
    )
