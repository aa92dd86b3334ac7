"""The steps of a monitor cycle, shared by the one-run monitor (flows/monitor.py), a shard of a
sharded cycle and the sharded cycle's parent (flows/shard.py): each is written once.

    discover         the fleet with its Docker label agents (the engine listed once)
    check_agents     records, heartbeat round, due agents probed in batches, Docker rules, policy,
                     commit, departed agents forgotten: for the whole fleet or for one shard
    publish_and_alert  the outbox published, then alerts decided on the published rows
    drift_step       identity changes reported
    table_rows / post_cycle  the fleet table (with 24 h uptime) and the `agentwatch.monitor.cycle` event

A step whose Prefect API calls fail adds a line to `problems`; the flow fails at its end with all of
them (errors.MonitorIncomplete), after doing everything it could.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from agentwatch.cycle import FleetRow, apply_results, batched, departed, fleet_rows, select_due
from agentwatch.docker import BudgetRules, DockerEngine, RestartBudget
from agentwatch.docker.labels import label_memory, remembered_agents
from agentwatch.docker.rules import settle_results
from agentwatch.events import AGENT_LATE, MONITOR_CYCLE, EventSpec, agent_resource, monitor_resource
from agentwatch.heartbeat.watch import LateWarning, heartbeat_round, late_warnings
from agentwatch.models import AgentRecord, ProbeResult, Transition
from agentwatch.registry import AgentSpec, Registry
from agentwatch.render import fleet_summary
from agentwatch.settings import Settings
from agentwatch.shards import Shard
from agentwatch.store import CommitResult, StateStore
from agentwatch.uptime import WINDOWS, fleet_uptime, with_uptime
from tasks.alerting import AlertReport, raise_alerts
from tasks.containers import Observation, discover_docker_agents
from tasks.drift import report_drift
from tasks.params import unvisited
from tasks.probing import probe_batch
from tasks.publishing import PublishReport, post_events, publish_pending
from tasks.recording import write_fleet_table

__all__ = [
    "Checked",
    "alert_step",
    "check_agents",
    "cycle_payload",
    "discover",
    "drift_step",
    "late_events",
    "log_transitions",
    "post_cycle",
    "publish_and_alert",
    "publish_step",
    "table_rows",
]


WHOLE = Shard()  # the one-run monitor's "shard": every agent


@task(name="publish-transitions", cache_policy=NONE)
async def publish_step(store: StateStore, fleet: Registry, run_url: str | None, settings: Settings) -> PublishReport:
    """Publish the outbox: this cycle's transitions and any backlog, oldest first, bounded."""
    return await publish_pending(store, fleet, run_url=run_url, settings=settings)


@task(name="raise-alerts", cache_policy=NONE)
async def alert_step(store: StateStore, fleet: Registry, records: Any, run_url: str | None) -> AlertReport:
    """Decide alerts on the published transitions and open incidents; post their events."""
    return await raise_alerts(store, fleet, records, get_run_logger(), run_url)


async def discover(
    registry: Registry, engine: DockerEngine, store: StateStore, settings: Settings, logger: Any
) -> tuple[Registry, Observation]:
    """The fleet (registry + Docker label agents) and the engine's containers, listed once.

    Containers labelled agentwatch.agent=ID join the fleet (opt-in); never for a registry id. With
    the engine away, the label agents last seen come back (they show unknown instead of vanishing)."""
    # Large parameters go to tasks through unvisited(): Prefect would otherwise walk every nested field
    # of every agent looking for futures (27 s of a 10,000-agent cycle, measured in bench/).
    docker = await discover_docker_agents(unvisited(registry), unvisited(engine))
    fleet = docker.fleet
    if docker.error is None:
        await store.remember_label_agents(label_memory(fleet, docker.bound))
    elif settings.docker_labels:
        fleet, unreadable = remembered_agents(fleet, await store.remembered_label_agents())
        for problem in unreadable:
            logger.warning("%s", problem)
    return fleet, docker


@dataclass
class Checked:
    """What `check_agents` did. `fleet`, `records` and `budgets` are the checked agents' (a shard's
    own, or the whole fleet's); `records` as committed."""

    fleet: Registry
    records: dict[str, AgentRecord]
    budgets: dict[str, RestartBudget]
    due: list[AgentSpec]
    results: list[ProbeResult]
    woken: CommitResult
    commit: CommitResult

    @property
    def transitions(self) -> list[Transition]:
        return [*self.woken.transitions, *self.commit.transitions]

    def late(self) -> list[LateWarning]:
        return late_warnings(self.commit.transitions, self.results)


async def check_agents(
    fleet: Registry,
    docker: Observation,
    store: StateStore,
    engine: DockerEngine,
    settings: Settings,
    logger: Any,
    *,
    run_id: str,
    force: bool = False,
    shard: Shard = WHOLE,
) -> Checked:
    """Probe the agents of `shard` (all by default) that are due, fold the results through the
    policy, commit, and forget the agents of the shard that left the fleet.

    A shard reads, writes and forgets only the rows of agents it owns (`shard.owns`)."""
    own = shard.fleet(fleet)
    among = None if shard.whole else shard.owns
    records = await store.load()
    budgets = await store.load_restart_budgets()
    if among is not None:
        records = {k: v for k, v in records.items() if among(k)}
        budgets = {k: v for k, v in budgets.items() if among(k)}
    started = datetime.now(UTC)
    # Heartbeat agents: beats read once; paused agents that beat since are woken first.
    heartbeat = await heartbeat_round(store, own, records, started, run_id=run_id, among=among)
    records = {**records, **{r.agent_id: r for r in heartbeat.woken.saved}}
    due = select_due(own, records, started, force=force)
    batches = batched(due, settings.batch_size)
    # One semaphore for the cycle: its probe concurrency shared by all batches, so a batch waiting
    # on slow targets leaves its slots to the others (a split of 64 slots over 50 batches left one
    # slot each, and slow agents held up their batch: bench/monitor_cycle.py).
    slots = asyncio.Semaphore(settings.probe_concurrency)
    of = "" if shard.whole else f" ({shard})"
    logger.info("Probing %d of %d agents in %d batch(es)%s", len(due), len(own.agents), len(batches), of)
    results = await asyncio.gather(
        *(
            probe_batch(
                unvisited(batch),
                min(settings.batch_size, settings.probe_concurrency),
                settings.max_body_bytes,
                label=f"{i + 1}-of-{len(batches)}",
                beats=unvisited(heartbeat.snapshot),
                docker=unvisited(engine),
                slots=unvisited(slots),
            )
            for i, batch in enumerate(batches)
        )
    )
    now = datetime.now(UTC)
    flat = [r for batch in results for r in batch]
    # Docker: a stop agentwatch recorded stays a stop; a spent restart budget keeps an agent failed.
    flat = settle_results(flat, own, records, budgets, docker.bound, BudgetRules.from_settings(settings), now)
    commit = await store.commit(apply_results(own, records, flat, now), run_id=run_id)
    if commit.conflicts:
        logger.warning(
            "%d agent(s) were updated by an overlapping run; kept theirs: %s",
            len(commit.conflicts),
            ", ".join(commit.conflicts[:10]),
        )
    records = {**records, **{r.agent_id: r for r in commit.saved}}
    # An unreachable engine hides label-registered agents: forget nobody on its word.
    if docker.error is None:
        await _forget_departed(store, own, records, settings, logger, among)
    checked = Checked(own, records, budgets, due, flat, heartbeat.woken, commit)
    log_transitions(logger, checked.transitions, settings.log_transitions)
    return checked


async def _forget_departed(
    store: StateStore, fleet: Registry, records: dict[str, Any], settings: Settings, logger: Any, among: Any
) -> None:
    """Drop the records of agents that left the fleet, unless too many leave at once (see departed).
    `records` holds the stored agents of this run's shard only, and `among` keeps the delete there."""
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
    dropped = await store.drop_missing(fleet.ids, among=among)
    for agent_id in dropped:
        records.pop(agent_id, None)
    if dropped:
        logger.info("Forgot %d agent(s) that left the registry: %s", len(dropped), ", ".join(dropped[:10]))


def log_transitions(logger: Any, transitions: Sequence[Transition], shown: int) -> None:
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


async def publish_and_alert(
    store: StateStore,
    fleet: Registry,
    records: dict[str, AgentRecord],
    run_url: str | None,
    settings: Settings,
    logger: Any,
    problems: list[str],
) -> PublishReport:
    """Publish the outbox; then, unless the API failed that, alert on the published rows."""
    published = await publish_step(unvisited(store), unvisited(fleet), run_url, unvisited(settings))
    _log_publish(logger, published)
    if published.error:
        problems.append(f"publishing: {published.error}")
        return published
    # Before reconcile: a container that crashed is alerted as failed even when reconcile restarts it.
    try:
        await alert_step(unvisited(store), unvisited(fleet), unvisited(records), run_url)
    except Exception as exc:  # the API failed it: the rows stay unalerted for the next run
        problems.append(f"alerting: {type(exc).__name__}: {exc}")
        logger.error("Alerts not sent (kept for the next run): %s: %s", type(exc).__name__, exc)
    return published


async def drift_step(
    store: StateStore,
    fleet: Registry,
    results: Sequence[ProbeResult],
    run_url: str | None,
    settings: Settings,
    logger: Any,
    problems: list[str],
) -> None:
    """Report identity changes (a new name, version or protocol version)."""
    try:
        drifted = await report_drift(store, fleet, results, run_url, settings)
        if drifted:
            logger.info("%d agent(s) report a new name, version or protocol version", drifted)
    except Exception as exc:  # the API failed it: the old identities stay, the next run reports again
        problems.append(f"drift: {type(exc).__name__}: {exc}")


async def table_rows(store: StateStore, fleet: Registry, records: dict[str, AgentRecord]) -> list[FleetRow]:
    """The fleet table's rows, with the uptime column: the last 24 h of the log, one bounded read."""
    table_now = datetime.now(UTC)
    day = WINDOWS[:1]
    uptimes = fleet_uptime(await store.state_marks(table_now - day[0][1]), records, table_now, day)
    return with_uptime(fleet_rows(fleet, records), uptimes)


def late_events(warnings: Sequence[LateWarning], fleet: Registry) -> list[EventSpec]:
    return [
        EventSpec(AGENT_LATE, agent_resource(w.agent_id, fleet.get(w.agent_id)), w.payload(), occurred=w.at)
        for w in warnings
    ]


async def post_cycle(
    rows: list[FleetRow],
    late: Sequence[EventSpec],
    payload: dict[str, Any] | None,
    settings: Settings,
    problems: list[str],
) -> None:
    """Write the fleet table, then post `late` and the cycle event (`payload`; None: no cycle event,
    the cycle did not check the whole fleet), within `publish_timeout`."""
    try:
        async with asyncio.timeout(settings.publish_timeout.total_seconds()):
            await write_fleet_table(unvisited(rows))
            cycle = [] if payload is None else [EventSpec(MONITOR_CYCLE, monitor_resource(), payload)]
            await post_events([*late, *cycle])
    except Exception as exc:
        problems.append(f"fleet table and cycle event: {type(exc).__name__}: {exc}")


def cycle_payload(
    fleet: Registry, rows: list[FleetRow], probed: int, transitions: int, published: int
) -> dict[str, Any]:
    return {
        "agents": len(fleet.agents),
        "probed": probed,
        "transitions": transitions,
        "published": published,
        "summary": fleet_summary(rows),
    }


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
