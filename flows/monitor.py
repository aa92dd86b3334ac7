"""The scheduled monitor flow: probe every agent that is due, apply the health policy, store the
new states, and publish each transition as an event and an artifact."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from prefect import flow, get_run_logger
from prefect.events import emit_event
from prefect.runtime import flow_run
from prefect.utilities.annotations import quote

from agentwatch.cycle import apply_results, batched, fleet_rows, select_due
from agentwatch.docker import BudgetRules
from agentwatch.docker.fleet import settle_results
from agentwatch.heartbeat.watch import heartbeat_round, late_warnings
from agentwatch.registry import load_registry
from agentwatch.render import fleet_summary
from agentwatch.settings import get_settings
from agentwatch.store import StateStore
from flows.reconcile import reconcile_after_cycle
from tasks.alerting import raise_alerts
from tasks.containers import discover_docker_agents
from tasks.heartbeats import emit_late_warnings
from tasks.probing import probe_batch
from tasks.recording import publish_transitions, write_fleet_table

T = TypeVar("T")


def unvisited(value: T) -> T:
    """Hand `value` to a task without Prefect walking it for futures (prefect's `quote`; the task
    receives the value itself). Typed as the value, which is what the task sees."""
    return cast(T, quote(value))


@flow(name="monitor-fleet", log_prints=False)
async def monitor_fleet(registry_path: str = "fleet.yaml", force: bool = False) -> list[dict[str, Any]]:
    """One monitor cycle over the fleet in `registry_path`.

    Agents whose interval or backoff has not run out are skipped unless `force` is set. Returns the
    fleet as rows (id, state, since, failures, latency_ms, reason).
    """
    # Large parameters go to tasks through unvisited(): Prefect would otherwise walk every nested field
    # of every agent looking for futures (27 s of a 10,000-agent cycle, measured in bench/).
    logger = get_run_logger()
    settings = get_settings()
    registry = load_registry(registry_path)
    # Containers labelled agentwatch.agent=<id> join the fleet; a registry entry wins on its id.
    docker = await discover_docker_agents(unvisited(registry))
    registry = docker.fleet
    async with StateStore(settings.resolved_database_url()) as store:
        records = await store.load()
        budgets = await store.load_restart_budgets()
        started = datetime.now(UTC)
        # Heartbeat agents: beats read once; paused agents that beat since are woken first.
        heartbeat = await heartbeat_round(store, registry, records, started, run_id=str(flow_run.id or ""))
        records = {**records, **{r.agent_id: r for r in heartbeat.woken.saved}}
        due = select_due(registry, records, started, force=force)
        batches = batched(due, settings.batch_size)
        per_batch = max(1, min(settings.batch_size, settings.probe_concurrency // max(1, len(batches))))
        logger.info("Probing %d of %d agents in %d batch(es)", len(due), len(registry.agents), len(batches))
        results = await asyncio.gather(
            *(
                probe_batch(
                    unvisited(batch),
                    per_batch,
                    settings.max_body_bytes,
                    label=f"{i + 1}-of-{len(batches)}",
                    beats=unvisited(heartbeat.snapshot),
                )
                for i, batch in enumerate(batches)
            )
        )
        now = datetime.now(UTC)
        flat = [r for batch in results for r in batch]
        # Docker: a stop agentwatch recorded stays a stop; a spent restart budget keeps an agent failed.
        flat = settle_results(flat, registry, records, budgets, docker.bound, BudgetRules.from_settings(settings), now)
        changes = apply_results(registry, records, flat, now)
        commit = await store.commit(changes, run_id=str(flow_run.id or ""))
        if commit.conflicts:
            logger.warning(
                "%d agent(s) were updated by an overlapping run; kept theirs: %s",
                len(commit.conflicts),
                ", ".join(commit.conflicts[:10]),
            )
        # An unreachable engine hides label-registered agents: forget nobody on its word.
        dropped = await store.drop_missing(registry.ids) if docker.error is None else []
        if dropped:
            logger.info("Forgot %d agent(s) that left the registry: %s", len(dropped), ", ".join(dropped[:10]))
        records = {**records, **{r.agent_id: r for r in commit.saved}}

    transitions = [*heartbeat.woken.transitions, *commit.transitions]
    for t in transitions:
        because = f": {t.reason}" if t.reason else ""
        logger.info("%s: %s -> %s%s", t.agent_id, t.from_state.value, t.to_state.value, because)
    run_url = flow_run.ui_url
    await publish_transitions(unvisited(transitions), unvisited(registry), settings.artifact_concurrency, run_url)
    # Before reconcile: a container that crashed is alerted as failed even when reconcile restarts it.
    if registry.alerts is not None:  # no `alerts:` section, no task run
        await raise_alerts(unvisited(registry), run_url)
    if settings.reconcile_in_monitor:
        await reconcile_after_cycle(registry_path, registry, docker.error, flat, commit.transitions, records, budgets)
    emit_late_warnings(late_warnings(commit.transitions, flat), registry)
    rows = fleet_rows(registry, records)
    await write_fleet_table(unvisited(rows))
    emit_event(
        event="agentwatch.monitor.cycle",
        resource={"prefect.resource.id": "agentwatch.monitor", "prefect.resource.name": "agentwatch monitor"},
        payload={
            "agents": len(registry.agents),
            "probed": len(due),
            "transitions": len(transitions),
            "summary": fleet_summary(rows),
        },
    )
    logger.info("Fleet: %s", fleet_summary(rows))
    return rows


if __name__ == "__main__":
    import sys

    asyncio.run(monitor_fleet(sys.argv[1] if len(sys.argv) > 1 else "fleet.yaml"))  # type: ignore[arg-type]
