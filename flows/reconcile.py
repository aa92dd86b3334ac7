"""Reconcile: bring Docker-backed agents back in line with the fleet.

Two entry points, one body (`reconcile_step`, a task):
- `reconcile_fleet`, a flow: its own deployment `reconcile` (deployments/definitions.py; started by
  hand from the Prefect UI, or by an automation with `agent_ids` from an event) and
  `agentwatch reconcile`. It loads the registry, lists the engine and reads the store itself.
- `reconcile_in_cycle`, the monitor's hook: tasks inside the monitor's run, with the monitor's
  fleet, store session, engine connection, container listing and records; it re-reads none of them.
  Not a sub-flow: a sub-flow's parameters are validated and sent to the API, and a store session
  or an engine connection cannot travel that way.

The plan is made by agentwatch.docker.reconcile and carried out by agentwatch.docker.reconcile_apply
(budgets claimed, exits recorded, containers acted on, restarts recorded); this module observes,
runs them with the run's engine and store, publishes and reports.
An engine that cannot be reached is said once: the standalone flow ends Failed with that message
and an artifact saying why; the monitor's hook reconciles nothing (those agents were recorded
unknown, not failed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, cast

from prefect import flow, get_run_logger, task
from prefect.artifacts import acreate_markdown_artifact
from prefect.cache_policies import NONE
from prefect.runtime import flow_run

from agentwatch.docker import BudgetRules, DockerEngine, RestartBudget
from agentwatch.docker.reconcile import Action, ReconcileOptions, plan_reconcile
from agentwatch.docker.reconcile_apply import ReconcileResult, apply_reconcile, planned
from agentwatch.docker.report import reconcile_markdown
from agentwatch.docker.rules import reconcile_candidates
from agentwatch.durations import format_duration, parse_duration
from agentwatch.errors import EngineUnavailable
from agentwatch.models import AgentRecord, AgentState, Asserted, Cause, ProbeResult, Transition
from agentwatch.registry import Registry
from agentwatch.settings import get_settings
from agentwatch.store import StateStore
from flows.registry_block import load_fleet
from tasks.containers import Observation, ReconcileWatcher, not_run, observe_containers, quietly, refresh_for
from tasks.params import unvisited
from tasks.publishing import publish_pending

__all__ = ["reconcile_fleet", "reconcile_in_cycle", "reconcile_step"]

ARTIFACT_KEY = "agentwatch-reconcile"
PLAN_LINES = 50  # plan steps logged one per line; the artifact has them all


@flow(name="reconcile-fleet", log_prints=False)
async def reconcile_fleet(
    registry_path: str = "fleet.yaml",
    agent_ids: list[str] | None = None,
    dry_run: bool = False,
    remove_orphans: bool = True,
    restart_unhealthy: bool = True,
    orphan_min_age: str = "60s",
) -> list[dict[str, Any]]:
    """Record how Docker agents' containers exited, remove orphans, restart unhealthy agents.

    Args:
        registry_path: The registry YAML file. With AGENTWATCH_DOCKER_LABELS on, containers labelled agentwatch.agent=AGENT_ID join the fleet too.
        agent_ids: Only these agents (a list of agent ids); orphans follow remove_orphans either way. Leave it unset (null) for every Docker agent. An empty list is refused: it would select no agent.
        dry_run: Only plan: write the plan as an artifact and change nothing.
        remove_orphans: Remove containers labelled agentwatch.managed=true that no agent owns.
        restart_unhealthy: Restart failed or unhealthy agent containers, within the restart budget.
        orphan_min_age: Leave orphans younger than this alone (e.g. 60s, 5m): they may be starting.
    """
    if agent_ids == []:  # in a form, an emptied list reads as "all": it would remove orphans and restart nobody
        raise ValueError("agent_ids is an empty list: leave it unset (null) for every Docker agent, or list agent ids")
    settings = get_settings()
    options = ReconcileOptions(
        agent_ids=frozenset(agent_ids) if agent_ids is not None else None,
        remove_orphans=remove_orphans,
        restart_unhealthy=restart_unhealthy,
        orphan_min_age=parse_duration(orphan_min_age),
        rules=BudgetRules.from_settings(settings),
    )
    registry = await load_fleet(registry_path)
    async with DockerEngine.from_settings(settings) as engine:
        seen = await observe_containers(unvisited(engine), unvisited(registry), options.agent_ids)
        if seen.error is not None:
            # A returned state is the run's final state (a direct caller gets its EngineUnavailable).
            return cast(list[dict[str, Any]], await not_run("Reconcile", seen.error, ARTIFACT_KEY, _shown(options)))
        async with StateStore(settings.resolved_database_url()) as store:
            records = await store.load()
            budgets = await store.load_restart_budgets()
            result = await reconcile_step(
                unvisited(store),
                unvisited(engine),
                unvisited(seen),
                unvisited(records),
                unvisited(budgets),
                options,
                dry_run=dry_run,
                run_url=flow_run.ui_url,
            )
    return result.rows()


async def reconcile_in_cycle(
    fleet: Registry,
    store: StateStore,
    engine: DockerEngine,
    observation: Observation,
    records: Mapping[str, AgentRecord],
    budgets: Mapping[str, RestartBudget],
    results: Sequence[ProbeResult],
    transitions: Sequence[Transition],
    run_url: str | None = None,
) -> list[Transition]:
    """The monitor's hook, after it committed (and published) its cycle: reconcile the Docker
    agents that just turned failed or unhealthy (a vanished container turns failed), and those
    whose deferred restart is due, with what the monitor already holds. Returns the transitions
    reconcile committed (already published, or left in the outbox for the next run).

    Reads from the engine only a fresh inspect of the candidates' containers; from the store
    nothing but the budgets it writes with compare-and-swap. An unreachable engine is said once,
    and nothing is reconciled: the agents it hides were recorded unknown, not failed.
    A sharded cycle runs it in the parent, after its alert step, with the shards' transitions."""
    logger = get_run_logger()
    engine_away = Asserted(AgentState.UNKNOWN, Cause.ENGINE_UNREACHABLE)
    unreachable = [r.agent_id for r in results if r.override == engine_away]
    if unreachable and observation.error is None:  # else discovery said so already: once per run
        logger.warning(
            "Docker engine unreachable: %d Docker agent(s) recorded unknown (not failed); reconcile skipped",
            len(unreachable),
        )
    if unreachable or observation.error:
        return []
    settings = get_settings()
    ids = reconcile_candidates(fleet, transitions, records, budgets, datetime.now(UTC))
    if not ids:
        return []
    logger.info("Reconciling %d Docker agent(s): %s", len(ids), ", ".join(ids[:10]))
    options = ReconcileOptions(agent_ids=frozenset(ids), remove_orphans=True, rules=BudgetRules.from_settings(settings))
    try:
        seen = await refresh_for(engine, replace(observation, fleet=fleet), ids)
    except EngineUnavailable as exc:
        logger.warning("Reconcile skipped: %s", exc)
        return []
    result = await reconcile_step(
        unvisited(store),
        unvisited(engine),
        unvisited(seen),
        unvisited(records),
        unvisited(budgets),
        options,
        dry_run=False,
        run_url=run_url,
    )
    return result.transitions


@task(name="reconcile-docker-agents", cache_policy=NONE)
async def reconcile_step(
    store: StateStore,
    engine: DockerEngine,
    seen: Observation,
    records: Mapping[str, AgentRecord],
    budgets: Mapping[str, RestartBudget],
    options: ReconcileOptions,
    dry_run: bool = False,
    run_url: str | None = None,
) -> ReconcileResult:
    """Plan, then (unless `dry_run`) carry the plan out (agentwatch.docker.reconcile_apply), publish
    the transitions and write the `agentwatch-reconcile` artifact."""
    logger = get_run_logger()
    fleet = seen.fleet
    now = datetime.now(UTC)
    actions = plan_reconcile(fleet, seen.listed, seen.inspected, records, budgets, options, now)
    for action in actions[:PLAN_LINES]:
        logger.info("plan: %s %s %s: %s", action.kind.value, action.agent_id or "-", _name(action), action.reason)
    if len(actions) > PLAN_LINES:
        logger.info("plan: ... and %d more step(s) (the artifact has them all)", len(actions) - PLAN_LINES)
    if dry_run:
        result = planned(actions)
        await _report(result, options)
        return result

    watcher = ReconcileWatcher(fleet)
    result = await apply_reconcile(
        actions,
        fleet=fleet,
        records=records,
        engine=engine,
        store=store,
        stop_timeout=get_settings().docker_stop_timeout.total_seconds(),
        now=now,
        run_id=str(flow_run.id or ""),
        watcher=watcher,
    )
    for action in result.lost:
        logger.info("%s: another reconcile run changed its restart budget; skipped", action.agent_id)
    watcher.exhausted(result.newly_exhausted)
    if result.conflicts:
        logger.warning("Records changed meanwhile by another run, kept theirs: %s", ", ".join(result.conflicts[:10]))
    published = await publish_pending(store, fleet, run_url=run_url)
    if published.error:
        logger.warning("Reconcile's state changes are stored; the next run publishes them (%s)", published.error)
    await _report(result, options)
    logger.info("Reconcile: %d action(s) planned, %d container action(s) done", len(result.actions), result.done)
    return result


def _shown(options: ReconcileOptions) -> dict[str, Any]:
    return {
        "agent_ids": sorted(options.agent_ids) if options.agent_ids is not None else "all",
        "remove_orphans": options.remove_orphans,
        "restart_unhealthy": options.restart_unhealthy,
        "orphan_min_age": format_duration(options.orphan_min_age),
        "restart budget": f"{options.rules.max_restarts} per {format_duration(options.rules.window)}",
    }


async def _report(result: ReconcileResult, options: ReconcileOptions) -> None:
    rows, dry_run = result.rows(), result.dry_run
    await quietly(
        acreate_markdown_artifact(
            key=ARTIFACT_KEY,
            markdown=reconcile_markdown(rows, dry_run=dry_run, settings=_shown(options)),
            description=("Reconcile plan (dry run)" if dry_run else "Reconcile actions") + f": {len(rows)} step(s)",
        ),
        "the reconcile artifact",
    )


def _name(action: Action) -> str:
    return (action.container.name or action.container.short_id) if action.container else "-"
