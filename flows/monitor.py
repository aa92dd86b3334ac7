"""The scheduled monitor flow: probe every agent that is due, apply the health policy, store the
new states, and publish each transition as an event and an artifact."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.events import emit_event
from prefect.runtime import flow_run

from agentwatch.cycle import apply_results, batched, fleet_rows, select_due
from agentwatch.registry import load_registry
from agentwatch.render import fleet_summary
from agentwatch.settings import get_settings
from agentwatch.store import StateStore
from tasks.probing import probe_batch
from tasks.recording import publish_transitions, write_fleet_table


@flow(name="monitor-fleet", log_prints=False)
async def monitor_fleet(registry_path: str = "fleet.yaml", force: bool = False) -> list[dict[str, Any]]:
    """One monitor cycle over the fleet in `registry_path`.

    Agents whose interval or backoff has not run out are skipped unless `force` is set. Returns the
    fleet as rows (id, state, since, failures, latency_ms, reason).
    """
    logger = get_run_logger()
    settings = get_settings()
    registry = load_registry(registry_path)
    async with StateStore(settings.resolved_database_url()) as store:
        records = await store.load()
        started = datetime.now(UTC)
        due = select_due(registry, records, started, force=force)
        batches = batched(due, settings.batch_size)
        per_batch = max(1, min(settings.batch_size, settings.probe_concurrency // max(1, len(batches))))
        logger.info("Probing %d of %d agents in %d batch(es)", len(due), len(registry.agents), len(batches))
        results = await asyncio.gather(
            *(
                probe_batch(batch, per_batch, settings.max_body_bytes, label=f"{i + 1}-of-{len(batches)}")
                for i, batch in enumerate(batches)
            )
        )
        now = datetime.now(UTC)
        changes = apply_results(registry, records, (r for batch in results for r in batch), now)
        commit = await store.commit(changes, run_id=str(flow_run.id or ""))
        if commit.conflicts:
            logger.warning(
                "%d agent(s) were updated by an overlapping run; kept theirs: %s",
                len(commit.conflicts),
                ", ".join(commit.conflicts[:10]),
            )
        dropped = await store.drop_missing(registry.ids)
        if dropped:
            logger.info("Forgot %d agent(s) that left the registry: %s", len(dropped), ", ".join(dropped[:10]))
        records = {**records, **{r.agent_id: r for r in commit.saved}}

    for t in commit.transitions:
        logger.info("%s: %s -> %s (%s)", t.agent_id, t.from_state.value, t.to_state.value, t.reason)
    run_url = flow_run.ui_url
    await publish_transitions(commit.transitions, registry, settings.artifact_concurrency, run_url)
    rows = fleet_rows(registry, records)
    await write_fleet_table(rows)
    emit_event(
        event="agentwatch.monitor.cycle",
        resource={"prefect.resource.id": "agentwatch.monitor", "prefect.resource.name": "agentwatch monitor"},
        payload={
            "agents": len(registry.agents),
            "probed": len(due),
            "transitions": len(commit.transitions),
            "summary": fleet_summary(rows),
        },
    )
    logger.info("Fleet: %s", fleet_summary(rows))
    return rows


if __name__ == "__main__":
    import sys

    asyncio.run(monitor_fleet(sys.argv[1] if len(sys.argv) > 1 else "fleet.yaml"))  # type: ignore[arg-type]
