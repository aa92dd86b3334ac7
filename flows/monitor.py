"""The scheduled monitor flow: one cycle, one pass.

1. Load the fleet once (registry file + label agents); open one state store and one Docker engine.
2. Probe the agents that are due, in batches (one task run per batch).
3. Fold the results through the health policy; commit new states and their transition rows in one
   transaction. A row is born unpublished: the transition log is the outbox.
4. Publish: claim unpublished rows (this cycle's, and any a dead API left behind, oldest first, at
   a bounded rate), post their events and artifact versions, mark them published.
5. Alert on the published rows; reconcile the Docker agents that need it with the same fleet,
   store, engine and container listing; write the fleet table; post `agentwatch.monitor.cycle`.

A Prefect API that fails a step fails the run at the end, within `publish_timeout` per step and
`monitor_timeout` in all; what it could not deliver stays in the store for the next run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE
from prefect.runtime import flow_run

from agentwatch.cycle import apply_results, batched, departed, fleet_rows, select_due
from agentwatch.docker import BudgetRules, DockerEngine
from agentwatch.docker.labels import label_memory, remembered_agents
from agentwatch.docker.rules import settle_results
from agentwatch.errors import MonitorIncomplete
from agentwatch.events import AGENT_LATE, MONITOR_CYCLE, EventSpec, agent_resource, monitor_resource
from agentwatch.heartbeat.watch import LateWarning, heartbeat_round, late_warnings
from agentwatch.models import Transition
from agentwatch.registry import Registry, load_registry
from agentwatch.render import fleet_summary
from agentwatch.settings import Settings, get_settings
from agentwatch.store import StateStore
from agentwatch.uptime import WINDOWS, fleet_uptime, with_uptime
from flows.reconcile import reconcile_in_cycle
from tasks.alerting import AlertReport, raise_alerts
from tasks.containers import discover_docker_agents
from tasks.drift import report_drift
from tasks.params import unvisited
from tasks.probing import probe_batch
from tasks.publishing import PublishReport, post_events, publish_pending
from tasks.recording import write_fleet_table


@task(name="publish-transitions", cache_policy=NONE)
async def publish_step(store: StateStore, fleet: Registry, run_url: str | None, settings: Settings) -> PublishReport:
    """Publish the outbox: this cycle's transitions and any backlog, oldest first, bounded."""
    return await publish_pending(store, fleet, run_url=run_url, settings=settings)


@task(name="raise-alerts", cache_policy=NONE)
async def alert_step(store: StateStore, fleet: Registry, records: Any, run_url: str | None) -> AlertReport:
    """Decide alerts on the published transitions and open incidents; post their events."""
    return await raise_alerts(store, fleet, records, get_run_logger(), run_url)


def _log_transitions(logger: Any, transitions: Sequence[Transition], shown: int) -> None:
    """A summary and the first few: at 10,000 agents a line each would drown the run's log."""
    if not transitions:
        return
    counts: dict[str, int] = {}
    for t in transitions:
        counts[t.to_state.value] = counts.get(t.to_state.value, 0) + 1
    logger.info("%d transition(s): %s", len(transitions), ", ".join(f"{n} to {s}" for s, n in sorted(counts.items())))
    for t in transitions[:shown]:
        because = f": {t.reason}" if t.reason else ""
        logger.info("%s: %s -> %s%s", t.agent_id, t.from_state.value, t.to_state.value, because)
    if len(transitions) > shown:
        logger.info(
            "... and %d more (in the transition log: `agentwatch status`, events, artifacts)", len(transitions) - shown
        )


def _late_events(warnings: Sequence[LateWarning], fleet: Registry) -> list[EventSpec]:
    return [
        EventSpec(AGENT_LATE, agent_resource(w.agent_id, fleet.get(w.agent_id)), w.payload(), occurred=w.at)
        for w in warnings
    ]


@flow(name="monitor-fleet", log_prints=False, timeout_seconds=get_settings().monitor_timeout.total_seconds())
async def monitor_fleet(registry_path: str = "fleet.yaml", force: bool = False) -> list[dict[str, Any]]:
    """One monitor cycle over the fleet in `registry_path`.

    Args:
        registry_path: The registry YAML file (agents, their probes and policies, alert routes).
        force: Probe every agent now, even those whose interval or backoff has not run out.

    Returns the fleet as rows (id, state, since, failures, latency_ms, reason).
    """
    # Large parameters go to tasks through unvisited(): Prefect would otherwise walk every nested field
    # of every agent looking for futures (27 s of a 10,000-agent cycle, measured in bench/).
    logger = get_run_logger()
    settings = get_settings()
    run_id, run_url = str(flow_run.id or ""), flow_run.ui_url
    registry = load_registry(registry_path)
    problems: list[str] = []
    async with DockerEngine.from_settings(settings) as engine, StateStore(settings.resolved_database_url()) as store:
        # Containers labelled agentwatch.agent=<id> join the fleet (opt-in); never for a registry id.
        docker = await discover_docker_agents(unvisited(registry), unvisited(engine))
        fleet = docker.fleet
        if docker.error is None:
            await store.remember_label_agents(label_memory(fleet, docker.bound))
        elif settings.docker_labels:  # the engine is away: its label agents show unknown, not vanish
            fleet, unreadable = remembered_agents(fleet, await store.remembered_label_agents())
            for problem in unreadable:
                logger.warning("%s", problem)
        records = await store.load()
        budgets = await store.load_restart_budgets()
        started = datetime.now(UTC)
        # Heartbeat agents: beats read once; paused agents that beat since are woken first.
        heartbeat = await heartbeat_round(store, fleet, records, started, run_id=run_id)
        records = {**records, **{r.agent_id: r for r in heartbeat.woken.saved}}
        due = select_due(fleet, records, started, force=force)
        batches = batched(due, settings.batch_size)
        per_batch = max(1, min(settings.batch_size, settings.probe_concurrency // max(1, len(batches))))
        logger.info("Probing %d of %d agents in %d batch(es)", len(due), len(fleet.agents), len(batches))
        results = await asyncio.gather(
            *(
                probe_batch(
                    unvisited(batch),
                    per_batch,
                    settings.max_body_bytes,
                    label=f"{i + 1}-of-{len(batches)}",
                    beats=unvisited(heartbeat.snapshot),
                    docker=unvisited(engine),
                )
                for i, batch in enumerate(batches)
            )
        )
        now = datetime.now(UTC)
        flat = [r for batch in results for r in batch]
        # Docker: a stop agentwatch recorded stays a stop; a spent restart budget keeps an agent failed.
        flat = settle_results(flat, fleet, records, budgets, docker.bound, BudgetRules.from_settings(settings), now)
        commit = await store.commit(apply_results(fleet, records, flat, now), run_id=run_id)
        if commit.conflicts:
            logger.warning(
                "%d agent(s) were updated by an overlapping run; kept theirs: %s",
                len(commit.conflicts),
                ", ".join(commit.conflicts[:10]),
            )
        records = {**records, **{r.agent_id: r for r in commit.saved}}
        # An unreachable engine hides label-registered agents: forget nobody on its word.
        if docker.error is None:
            await _forget_departed(store, fleet, records, settings, logger)
        _log_transitions(logger, [*heartbeat.woken.transitions, *commit.transitions], settings.log_transitions)

        published = await publish_step(unvisited(store), unvisited(fleet), run_url, unvisited(settings))
        _log_publish(logger, published)
        if published.error:
            problems.append(f"publishing: {published.error}")
        else:
            # Before reconcile: a container that crashed is alerted as failed even when reconcile restarts it.
            try:
                await alert_step(unvisited(store), unvisited(fleet), unvisited(records), run_url)
            except Exception as exc:  # the API failed it: the rows stay unalerted for the next run
                problems.append(f"alerting: {type(exc).__name__}: {exc}")
                logger.error("Alerts not sent (kept for the next run): %s: %s", type(exc).__name__, exc)
        try:
            drifted = 0 if published.error else await report_drift(store, fleet, flat, run_url, settings)
            if drifted:
                logger.info("%d agent(s) report a new name, version or protocol version", drifted)
        except Exception as exc:  # the API failed it: the old identities stay, the next run reports again
            problems.append(f"drift: {type(exc).__name__}: {exc}")
        if settings.reconcile_in_monitor:
            # The rows this run returns show what its checks found; what reconcile did next is in
            # its own transitions (published by it, or by the next run) and the log.
            await reconcile_in_cycle(fleet, store, engine, docker, records, budgets, flat, commit.transitions, run_url)
        # The fleet table's uptime column: the last 24 h of the log, one bounded read.
        table_now = datetime.now(UTC)
        day = WINDOWS[:1]
        uptimes = fleet_uptime(await store.state_marks(table_now - day[0][1]), records, table_now, day)

    rows = with_uptime(fleet_rows(fleet, records), uptimes)
    try:
        if published.error:  # the API just failed us: do not wait for it again
            raise MonitorIncomplete("skipped: the API failed the publish step")
        async with asyncio.timeout(settings.publish_timeout.total_seconds()):
            await write_fleet_table(unvisited(rows))
            cycle = EventSpec(
                MONITOR_CYCLE,
                monitor_resource(),
                {
                    "agents": len(fleet.agents),
                    "probed": len(due),
                    "transitions": len(heartbeat.woken.transitions) + len(commit.transitions),
                    "published": published.published,
                    "summary": fleet_summary(rows),
                },
            )
            await post_events([*_late_events(late_warnings(commit.transitions, flat), fleet), cycle])
    except MonitorIncomplete:
        pass
    except Exception as exc:
        problems.append(f"fleet table and cycle event: {type(exc).__name__}: {exc}")
    logger.info("Fleet: %s", fleet_summary(rows))
    if problems:
        raise MonitorIncomplete(
            "states committed, but the Prefect API failed: " + "; ".join(problems) + ". Kept for the next run."
        )
    return rows


async def _forget_departed(
    store: StateStore, fleet: Registry, records: dict[str, Any], settings: Settings, logger: Any
) -> None:
    """Drop the records of agents that left the fleet, unless too many leave at once (see departed)."""
    gone = departed(records, fleet.ids, settings.forget_max_fraction)
    if not gone.ids:
        return
    if gone.refused:
        logger.warning(
            "Not forgetting %d of %d stored agents (%.0f%%) that are not in the fleet: more than "
            "AGENTWATCH_FORGET_MAX_FRACTION=%g at once looks like a broken registry. Raise it to allow.",
            len(gone.ids),
            gone.stored,
            100 * gone.share,
            settings.forget_max_fraction,
        )
        return
    dropped = await store.drop_missing(fleet.ids)
    for agent_id in dropped:
        records.pop(agent_id, None)
    if dropped:
        logger.info("Forgot %d agent(s) that left the registry: %s", len(dropped), ", ".join(dropped[:10]))


def _log_publish(logger: Any, report: PublishReport) -> None:
    if report.claimed == 0:
        return
    folded = f" ({report.folded} first sights in one fleet event)" if report.folded else ""
    logger.info(
        "Published %d of %d transition(s)%s: %d event(s), %d artifact version(s)",
        report.published,
        report.claimed,
        folded,
        report.events,
        report.artifacts,
    )
    if report.error:
        logger.error(
            "Publishing stopped, %d transition(s) kept for the next run: %s",
            report.claimed - report.published,
            report.error,
        )


if __name__ == "__main__":
    import sys

    asyncio.run(monitor_fleet(sys.argv[1] if len(sys.argv) > 1 else "fleet.yaml"))  # type: ignore[arg-type]
