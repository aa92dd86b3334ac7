"""A monitor cycle split into shards, each its own flow run on a Prefect work pool.

The parent (`monitor-fleet` with `shards=N`, `sharded_cycle`):
1. Reads and validates the registry, and stores its text in a Prefect block (flows/registry_block.py):
   workers on other machines read the fleet from there.
2. Starts N runs of the `monitor-shard` deployment (`run_deployment`, linked to the parent as its
   subflows) and waits for them, at most `monitor_timeout` less two publish timeouts. A shard run
   still going then is cancelled; a shard that failed, crashed or timed out is reported.
3. Then, once for the whole fleet, as one unsharded run does: publishes the outbox (every shard's
   transitions), alerts, reconciles the Docker agents that went down (after alerting, as one run
   does), writes the fleet table and posts `agentwatch.monitor.cycle`. The cycle
   event says the whole fleet was checked: it is not posted when a shard did not complete, and the
   parent ends Failed (errors.MonitorIncomplete) after doing the rest.

A shard (`monitor_shard`): the same steps as the one-run monitor (flows/steps.py) for the agents it
owns (agentwatch.shards: SHA-256 of the id, modulo N), Docker label agents included: heartbeat
round, probes in batches, Docker rules, commit, departed agents forgotten among its own stored ids
only; then its drift. Its `late` warnings are its own events. Publishing, alerting and Docker
reconcile are the parent's.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.deployments.flow_runs import arun_deployment
from prefect.runtime import flow_run
from prefect.states import Cancelled, Cancelling, State

from agentwatch.docker import DockerEngine
from agentwatch.errors import MonitorIncomplete
from agentwatch.registry import parse_registry
from agentwatch.render import fleet_summary
from agentwatch.settings import Settings, get_settings
from agentwatch.shards import Shard
from agentwatch.store import StateStore
from flows.reconcile import reconcile_in_cycle
from flows.registry_block import load_fleet, read_text, snapshot
from flows.runtime import old_heap_frozen
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
from tasks.publishing import post_events

__all__ = ["SHARD_DEPLOYMENT", "monitor_shard", "shard_wait", "sharded_cycle"]

SHARD_FLOW = "monitor-shard"
SHARD_DEPLOYMENT = f"{SHARD_FLOW}/monitor-shard"  # deployments/definitions.py: SHARD
POLL_SECONDS = 1.0  # how often the parent reads its shard runs' states


@flow(name=SHARD_FLOW, log_prints=False, timeout_seconds=get_settings().monitor_timeout.total_seconds())
async def monitor_shard(
    registry_path: str = "fleet.yaml", shard: int = 0, shards: int = 1, force: bool = False
) -> dict[str, Any]:
    """One shard of a sharded monitor cycle: probe and commit the agents this shard owns.

    Args:
        registry_path: The registry: a YAML file, or block:NAME for the copy a sharded monitor stored in a Prefect block (what it passes its shards).
        shard: This shard's number, from 0 to shards - 1.
        shards: How many shards the cycle has. An agent belongs to the shard its id hashes to (SHA-256 of the id, modulo shards).
        force: Probe every agent of the shard now, even those whose interval or backoff has not run out.

    Returns what it did: shard, shards, agents, probed, transitions.
    """
    part = Shard(shard, shards)
    logger = get_run_logger()
    settings = get_settings()
    run_id, run_url = str(flow_run.id or ""), flow_run.ui_url
    registry = await load_fleet(registry_path)
    problems: list[str] = []
    with old_heap_frozen():  # flows/runtime.py: the collector walks only what the cycle makes
        async with (
            DockerEngine.from_settings(settings) as engine,
            StateStore(settings.resolved_database_url()) as store,
        ):
            fleet, docker = await discover(registry, engine, store, settings, logger)
            checked = await check_agents(
                fleet, docker, store, engine, settings, logger, run_id=run_id, force=force, shard=part
            )
            await drift_step(store, checked.fleet, checked.results, run_url, settings, logger, problems)
    late = late_events(checked.late(), fleet)
    if late:
        try:
            async with asyncio.timeout(settings.publish_timeout.total_seconds()):
                await post_events(late)
        except Exception as exc:
            problems.append(f"late events: {type(exc).__name__}: {exc}")
    if problems:
        raise MonitorIncomplete(
            f"{part}: states committed, but the Prefect API failed: " + "; ".join(problems) + ". Kept for the next run."
        )
    return {
        "shard": shard,
        "shards": shards,
        "agents": len(checked.fleet.agents),
        "probed": len(checked.due),
        "transitions": len(checked.transitions),
    }


def shard_wait(settings: Settings) -> float:
    """How long the parent waits for its shards: the monitor's timeout less two publish timeouts
    (its own publish and its table and cycle event come after), and at least half of it."""
    total = settings.monitor_timeout.total_seconds()
    return max(total / 2, total - 2 * settings.publish_timeout.total_seconds())


async def sharded_cycle(registry_path: str, force: bool, shards: int) -> list[dict[str, Any]]:
    """The parent of a sharded cycle (inside the `monitor-fleet` run): see the module's docstring."""
    logger = get_run_logger()
    settings = get_settings()
    run_url = flow_run.ui_url
    text, source = await read_text(registry_path)
    registry = parse_registry(text, source=source)  # a bad registry fails here, before any shard starts
    reference = await snapshot(text, source)
    started = datetime.now(UTC)
    logger.info(
        "Starting %d shard runs of %s over %d agents (%s)", shards, SHARD_DEPLOYMENT, len(registry.agents), reference
    )
    runs = await asyncio.gather(
        *(_run_shard(reference, i, shards, force, shard_wait(settings)) for i in range(shards)),
        return_exceptions=True,
    )
    failed = [p for i, run in enumerate(runs) if (p := await _shard_problem(Shard(i, shards), run, logger))]
    problems = list(failed)
    async with DockerEngine.from_settings(settings) as engine, StateStore(settings.resolved_database_url()) as store:
        fleet, docker = await discover(registry, engine, store, settings, logger)
        records = await store.load()
        # The shards' transitions of this cycle, read once: counted for the cycle event, and who went
        # down for reconcile. A shard commits at most one transition per agent, plus a wake.
        changes = await store.history(limit=2 * len(fleet.agents) + 1000, since=started)
        published = await publish_and_alert(store, fleet, records, run_url, settings, logger, problems)
        if settings.reconcile_in_monitor:
            # After alerting, as one run does: a container that crashed is alerted as failed even
            # when reconcile restarts it.
            budgets = await store.load_restart_budgets()
            await reconcile_in_cycle(fleet, store, engine, docker, records, budgets, [], changes, run_url)
        rows = await table_rows(store, fleet, records)
        # The shards' counts, from what they committed: every probe sets last_checked.
        probed = sum(1 for r in records.values() if r.last_checked is not None and r.last_checked >= started)
        changed = len(changes)
    if not published.error:  # the API just failed us: do not wait for it again
        # The cycle event says every agent was checked: not when a shard did not complete.
        payload = (
            None if failed else {**cycle_payload(fleet, rows, probed, changed, published.published), "shards": shards}
        )
        await post_cycle(rows, [], payload, settings, problems)
    logger.info("Fleet: %s", fleet_summary(rows))
    if problems:
        raise MonitorIncomplete(
            "the cycle is incomplete: " + "; ".join(problems) + ". What was committed is kept for the next run."
        )
    return rows


async def _run_shard(reference: str, index: int, shards: int, force: bool, wait: float) -> FlowRun:
    parent = flow_run.id
    return await arun_deployment(
        SHARD_DEPLOYMENT,
        parameters={"registry_path": reference, "shard": index, "shards": shards, "force": force},
        flow_run_name=f"shard-{index + 1}-of-{shards}",
        timeout=wait,
        poll_interval=POLL_SECONDS,
        idempotency_key=f"{parent}:shard-{index}-of-{shards}" if parent else None,
    )


async def _shard_problem(part: Shard, run: FlowRun | BaseException, logger: Any) -> str | None:
    """None when the shard run completed; else what went wrong, said once (a run still going is cancelled)."""
    if isinstance(run, BaseException):  # from creating the run, or from reading its state while it ran
        logger.error("%s was not started, or its run could not be followed: %s: %s", part, type(run).__name__, run)
        return f"{part} not started or not followed: {type(run).__name__}: {run}"
    state = run.state
    if state is not None and state.is_completed():
        return None
    if state is None or not state.is_final():
        name = state.name if state is not None else "no state"
        logger.error("%s (flow run %s) did not finish in time (%s): cancelling it", part, run.id, name)
        async with get_client() as client:
            try:
                stop: State[Any] = Cancelling() if state is not None and state.is_running() else Cancelled()
                await client.set_flow_run_state(run.id, stop, force=True)
            except Exception as exc:  # the API is away: the run's own timeout ends it
                logger.warning("%s: could not cancel flow run %s: %s", part, run.id, exc)
        return f"{part} did not finish in time ({name})"
    logger.error("%s (flow run %s) ended %s: %s", part, run.id, state.name, state.message or "")
    return f"{part} ended {state.name}"
