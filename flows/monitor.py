"""The scheduled monitor flow: one cycle, one pass.

1. Load the fleet once (registry file + label agents); open one state store and one Docker engine.
2. Probe the agents that are due, in batches (one task run per batch).
3. Fold the results through the health policy; commit new states and their transition rows in one
   transaction. A row is born unpublished: the transition log is the outbox.
4. Publish: claim unpublished rows (this cycle's, and any a dead API left behind, oldest first, at
   a bounded rate), post their events and artifact versions, mark them published.
5. Alert on the published rows; reconcile the Docker agents that need it with the same fleet,
   store, engine and container listing; write the fleet table; post `agentwatch.monitor.cycle`.

The steps are flows/steps.py's. With `shards` > 1 the same cycle is split: steps 1-3 (and drift and
reconcile) run in `monitor-shard` runs on the work pool, one per shard, and this run does 4-5 once
for the whole fleet (flows/shard.py).

A Prefect API that fails a step fails the run at the end, within `publish_timeout` per step and
`monitor_timeout` in all; what it could not deliver stays in the store for the next run.
"""

from __future__ import annotations

import asyncio
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from agentwatch.cycle import FleetRows
from agentwatch.docker import DockerEngine
from agentwatch.errors import MonitorIncomplete
from agentwatch.registry import Registry
from agentwatch.render import fleet_summary
from agentwatch.settings import Settings, get_settings
from agentwatch.store import StateStore
from flows.reconcile import reconcile_in_cycle
from flows.registry_block import load_fleet
from flows.runtime import old_heap_frozen
from flows.shard import sharded_cycle
from flows.steps import (
    check_agents,
    cycle_payload,
    discover,
    drift_step,
    late_events,
    post_cycle,
    publish_and_alert,
    table_rows,
)

__all__ = ["monitor_fleet"]


# persist_result=False: the cycle's record is the state store and the fleet table artifact; the
# rows it returns (FleetRows, not JSON-serialisable as they are) are for a caller in the process.
@flow(
    name="monitor-fleet",
    log_prints=False,
    timeout_seconds=get_settings().monitor_timeout.total_seconds(),
    persist_result=False,
)
async def monitor_fleet(registry_path: str = "fleet.yaml", force: bool = False, shards: int = 1) -> FleetRows:
    """One monitor cycle over the fleet in `registry_path`.

    Args:
        registry_path: The registry YAML file (agents, their probes and policies, alert routes), or block:NAME for a registry stored in a Prefect block.
        force: Probe every agent now, even those whose interval or backoff has not run out.
        shards: Split the cycle into this many monitor-shard runs on the work pool (workers on any machines), each probing the agents whose id hashes to it; 1 runs the whole cycle in this run.

    Returns the fleet as rows (id, state, since, failures, latency_ms, reason): a list in all but
    type (agentwatch.cycle.FleetRows).
    """
    if shards < 1:
        raise ValueError(f"shards must be at least 1, not {shards}")
    if shards > 1:
        with old_heap_frozen():
            return FleetRows(await sharded_cycle(registry_path, force, shards))
    logger = get_run_logger()
    settings = get_settings()
    run_id, run_url = str(flow_run.id or ""), flow_run.ui_url
    registry = await load_fleet(registry_path)
    with old_heap_frozen():
        return await _cycle(registry, force, settings, logger, run_id, run_url)


async def _cycle(
    registry: Registry,
    force: bool,
    settings: Settings,
    logger: Any,
    run_id: str,
    run_url: str | None,
) -> FleetRows:
    """The cycle after the registry is loaded (the numbered steps of the module's docstring)."""
    problems: list[str] = []
    async with DockerEngine.from_settings(settings) as engine, StateStore(settings.resolved_database_url()) as store:
        fleet, docker = await discover(registry, engine, store, settings, logger)
        checked = await check_agents(fleet, docker, store, engine, settings, logger, run_id=run_id, force=force)
        records = checked.records
        published = await publish_and_alert(store, fleet, records, run_url, settings, logger, problems)
        if not published.error:
            await drift_step(store, fleet, checked.results, run_url, settings, logger, problems)
        if settings.reconcile_in_monitor:
            # The rows this run returns show what its checks found; what reconcile did next is in
            # its own transitions (published by it, or by the next run) and the log.
            await reconcile_in_cycle(
                fleet,
                store,
                engine,
                docker,
                records,
                checked.budgets,
                checked.results,
                checked.commit.transitions,
                run_url,
            )
        rows = await table_rows(store, fleet, records)

    if not published.error:  # the API just failed us: do not wait for it again
        payload = cycle_payload(fleet, rows, len(checked.due), len(checked.transitions), published.published)
        await post_cycle(rows, late_events(checked.late(), fleet), payload, settings, problems)
    logger.info("Fleet: %s", fleet_summary(rows))
    if problems:
        raise MonitorIncomplete(
            "states committed, but the Prefect API failed: " + "; ".join(problems) + ". Kept for the next run."
        )
    return FleetRows(rows)


if __name__ == "__main__":
    import sys

    asyncio.run(monitor_fleet(sys.argv[1] if len(sys.argv) > 1 else "fleet.yaml"))  # type: ignore[arg-type]
