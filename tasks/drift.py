"""Report drift: an agent's reported name, version or protocol version changed. One
`agentwatch.agent.changed` event (payload: what changed, from, to) and one version of the agent's
`agent-<id>` artifact per change; the agent's state is left as it is.

The new identity is saved only after both went out, so a report the API refused is made again by
the next run; the event's id derives from the change itself, so that retry is still one event.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

from prefect.artifacts import acreate_markdown_artifact

from agentwatch.drift import IDENTITY_KEY, Drift, describe_changes, plan_drift
from agentwatch.events import AGENT_CHANGED, EventSpec, agent_resource, derived_event_id
from agentwatch.models import ProbeResult
from agentwatch.registry import Registry
from agentwatch.settings import Settings
from agentwatch.store import StateStore
from tasks.publishing import post_events

__all__ = ["report_drift"]


def _event(drift: Drift, fleet: Registry, run_url: str | None) -> EventSpec:
    key = json.dumps([drift.agent_id, drift.before, drift.after], sort_keys=True)
    return EventSpec(
        AGENT_CHANGED,
        agent_resource(drift.agent_id, fleet.get(drift.agent_id)),
        {"agent": drift.agent_id, "changes": [c.payload() for c in drift.changes], "run_url": run_url},
        id=derived_event_id(key, "changed"),
    )


def _markdown(drift: Drift) -> str:
    rows = "\n".join(f"| {c.field} | {c.before or '-'} | {c.after or '-'} |" for c in drift.changes)
    return f"## {drift.agent_id}: identity changed\n\n| field | from | to |\n|---|---|---|\n{rows}\n"


async def report_drift(
    store: StateStore, fleet: Registry, results: Sequence[ProbeResult], run_url: str | None, settings: Settings
) -> int:
    """Report and remember the identity changes in `results`. Returns how many were reported;
    raises when the API failed them (nothing changed is remembered then)."""
    reporting = [r for r in results if r.details and isinstance(r.details.get(IDENTITY_KEY), dict)]
    if not reporting:
        return 0
    drifts = plan_drift(reporting, await store.load_identities(r.agent_id for r in reporting))
    changed = [d for d in drifts if d.changes]
    first = {d.agent_id: d.after for d in drifts if not d.changes}
    await store.save_identities(first)
    if not changed:
        return 0
    async with asyncio.timeout(settings.publish_timeout.total_seconds()):
        await post_events([_event(d, fleet, run_url) for d in changed])
        for drift in changed:
            await acreate_markdown_artifact(
                key=f"agent-{drift.agent_id}",
                markdown=_markdown(drift),
                description=f"{drift.agent_id}: {describe_changes(drift.changes)}",
            )
    await store.save_identities({d.agent_id: d.after for d in changed})
    return len(changed)
