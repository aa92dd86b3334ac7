"""`agentwatch bootstrap REGISTRY`: put agentwatch on the Prefect server in PREFECT_API_URL, idempotently.

1. Deployments: every one of deployments/definitions.py, the same ones `python -m deployments.serve`
   serves and prefect.yaml holds, registered with `RunnerDeployment.apply()`: no work pool (a serve
   process runs them), or a work pool with `--work-pool` (a worker runs them). `--no-deployments`
   leaves deployments alone (e.g. after `prefect deploy --all`) and only looks up `reconcile`.
2. Notification blocks: one per route (deployments/notifications.py).
3. Automations: deployments/automations.py. Those tagged `agentwatch` with an agentwatch name that
   the registry no longer asks for (a removed route) are deleted, as are their blocks.
4. Arming: one `agentwatch.monitor.armed` event, posted (and acknowledged, 204) after the
   automations are in place, starts the "monitor stalled" window now: a monitor that never
   completes a cycle after bootstrap is reported. When that automation was just created or
   updated, the event is posted once more after the server's automation reload period, in case its
   trigger service runs in another process and had not loaded it yet.

Each object is compared with what the server has: created, updated, removed or unchanged. A second
run with the same registry changes nothing and says so. No URL or secret is ever printed.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect.blocks.notifications import CustomWebhookNotificationBlock
from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.responses import DeploymentResponse
from prefect.deployments.runner import RunnerDeployment
from prefect.events import AutomationCore, Event
from prefect.exceptions import ObjectNotFound

from agentwatch.events import MONITOR_ARMED, monitor_resource
from agentwatch.registry import Registry, load_registry
from agentwatch.settings import get_settings
from deployments.automations import MONITOR_STALLED_NAME, TAG, configured_heartbeat, wanted_automations
from deployments.definitions import DEFAULT_INTERVAL, RECONCILE, runner_deployments
from deployments.notifications import block_fingerprint, block_name, resolve_url, route_block

__all__ = ["Applied", "arm_monitor", "bootstrap", "existing_fingerprint", "wanted_fingerprint"]

# A Prefect trigger service in another process than the API reloads automations every 5 s
# (prefect.server.events.triggers.consumer): re-arm after that when the automation just changed.
REARM_AFTER = 6.0
_OURS = re.compile(r"^agentwatch: [a-z0-9-]+: agent (down|recovered)$")


@dataclass(frozen=True)
class Applied:
    """What bootstrap did to one object: created, updated, removed or unchanged."""

    kind: str  # deployment, block, automation
    name: str
    action: str

    def line(self) -> str:
        return f"{self.kind:<11} {self.name:<48} {self.action}"


async def bootstrap(
    registry_path: str,
    interval: float = DEFAULT_INTERVAL,
    work_pool: str | None = None,
    deployments: bool = True,
    echo: Callable[[str], None] = print,
    heartbeat_seconds: int | None = None,
) -> list[Applied]:
    """Create or update everything the registry asks for; print one line per object and a summary.

    `heartbeat_seconds`: the flow-run heartbeat of the processes that run the deployments, which
    sets the zombie guard's window (default: PREFECT_FLOWS_HEARTBEAT_FREQUENCY when set, else 30,
    what `python -m deployments.serve` gives its runs).
    """
    heartbeat = heartbeat_seconds if heartbeat_seconds is not None else configured_heartbeat()
    path = str(Path(registry_path).resolve())
    registry = load_registry(path)
    changes: list[Applied] = []

    def done(change: Applied) -> None:
        changes.append(change)
        echo(change.line())

    async with get_client() as client:
        if deployments:
            for change in await _apply_deployments(client, path, interval, work_pool):
                done(change)
        # One actor per failed Docker agent: the monitor reconciles it in its own run by default;
        # the automation is the opt-in alternative (AGENTWATCH_RECONCILE_IN_MONITOR=false).
        reconcile_id = None
        if not get_settings().reconcile_in_monitor:
            reconcile_id = await _deployment_id(client, RECONCILE.full_name)
            if reconcile_id is None:
                echo(f"note: no {RECONCILE.full_name} deployment: the Docker reconcile automation is left out")
        blocks = await _apply_blocks(registry, done)
        wanted = wanted_automations(registry, blocks, reconcile_id, timedelta(seconds=interval), heartbeat)
        await _apply_automations(client, wanted, done)
        await _prune_blocks(client, registry, done)
        await arm_monitor(client)
        if any(c.name == MONITOR_STALLED_NAME and c.action != "unchanged" for c in changes):
            await asyncio.sleep(REARM_AFTER)
            await arm_monitor(client)
    touched = [c for c in changes if c.action != "unchanged"]
    echo("nothing to change" if not touched else _summary(touched))
    return changes


async def arm_monitor(client: PrefectClient, by: str = "bootstrap") -> None:
    """Start the "monitor stalled" window now: post `agentwatch.monitor.armed` and wait for the
    server's acknowledgement (204), unlike `emit_event`, which queues and may drop it."""
    event = Event(event=MONITOR_ARMED, resource=monitor_resource(), payload={"by": by})
    response = await client._client.post("/events", json=[event.model_dump(mode="json")])
    response.raise_for_status()


async def _apply_deployments(client: PrefectClient, path: str, interval: float, pool: str | None) -> list[Applied]:
    out = []
    # `to_deployment` answers a coroutine when called on an event loop: build them off the loop.
    for deployment in await asyncio.to_thread(runner_deployments, path, interval):
        if pool is not None:
            # A worker runs a flow from its entrypoint, which is relative to the directory the
            # deployment was built in (this one); without a working_dir a process worker would
            # look in a temporary directory and not find it.
            deployment.job_variables = {**deployment.job_variables, "working_dir": str(Path.cwd().resolve())}
        full = deployment.full_name
        try:
            existing = await client.read_deployment_by_name(full)
        except ObjectNotFound:
            existing = None
        if existing is not None and existing_fingerprint(existing, pool) == wanted_fingerprint(deployment, pool):
            out.append(Applied("deployment", full, "unchanged"))
            continue
        await deployment.aapply(work_pool_name=pool)
        out.append(Applied("deployment", full, "created" if existing is None else "updated"))
    return out


def wanted_fingerprint(deployment: RunnerDeployment, pool: str | None) -> dict[str, Any]:
    """What bootstrap compares of a deployment it would register (see existing_fingerprint)."""
    options = deployment.concurrency_options
    return {
        "entrypoint": deployment.entrypoint,
        "path": str(deployment._path) if deployment._path else None,
        "description": deployment.description,
        "tags": sorted(deployment.tags),
        "parameters": deployment.model_dump(mode="json", include={"parameters"})["parameters"],
        # The form of a custom run: the parameters' types, defaults and descriptions (flow docstrings).
        "parameter_schema": deployment._parameter_openapi_schema.model_dump(exclude_unset=True),
        "schedules": sorted(_schedule(s.schedule) for s in deployment.schedules or []),
        "concurrency": _concurrency(deployment.concurrency_limit, options),
        "work_pool": pool,
        "job_variables": deployment.job_variables if pool else None,
    }


def existing_fingerprint(existing: DeploymentResponse, pool: str | None) -> dict[str, Any]:
    """What bootstrap compares of a deployment on the server: equal to the wanted one's, it is left
    as it is."""
    limit = existing.global_concurrency_limit.limit if existing.global_concurrency_limit else None
    options = existing.concurrency_options
    return {
        "entrypoint": existing.entrypoint,
        "path": existing.path,
        "description": existing.description,
        "tags": sorted(existing.tags),
        "parameters": existing.parameters,
        "parameter_schema": existing.parameter_openapi_schema,
        "schedules": sorted(_schedule(s.schedule) for s in existing.schedules),
        "concurrency": _concurrency(limit, options),
        # Without --work-pool an update leaves the server's pool as it is: compare it only when given.
        "work_pool": existing.work_pool_name if pool else None,
        "job_variables": existing.job_variables if pool else None,
    }


def _concurrency(limit: int | None, options: Any) -> tuple[Any, ...]:
    if options is None:
        return (limit, None, None)
    return (limit, options.collision_strategy.value, options.grace_period_seconds)


def _schedule(schedule: Any) -> tuple[str, ...]:
    if getattr(schedule, "interval", None):
        return ("interval", f"{schedule.interval.total_seconds():g}")
    if getattr(schedule, "cron", None):
        return ("cron", schedule.cron, str(schedule.timezone))
    return ("other", repr(schedule))


async def _deployment_id(client: PrefectClient, name: str) -> UUID | None:
    try:
        return (await client.read_deployment_by_name(name)).id
    except ObjectNotFound:
        return None


async def _apply_blocks(registry: Registry, done: Callable[[Applied], None]) -> dict[str, UUID]:
    ids: dict[str, UUID] = {}
    for route in registry.alerts.routes if registry.alerts else []:
        name = block_name(route)
        wanted = route_block(route, await resolve_url(route))
        try:
            existing: CustomWebhookNotificationBlock | None = await CustomWebhookNotificationBlock.aload(name)
        except ValueError:
            existing = None
        if existing is not None and block_fingerprint(existing) == block_fingerprint(wanted):
            ids[route.name] = existing._block_document_id  # type: ignore[assignment]
            done(Applied("block", name, "unchanged"))
            continue
        ids[route.name] = await wanted.asave(name, overwrite=True)
        done(Applied("block", name, "created" if existing is None else "updated"))
    return ids


async def _apply_automations(
    client: PrefectClient, wanted: Sequence[AutomationCore], done: Callable[[Applied], None]
) -> None:
    names = {a.name for a in wanted}
    for automation in wanted:
        existing = await client.read_automations_by_name(automation.name)
        if not existing:
            await client.create_automation(automation)
            done(Applied("automation", automation.name, "created"))
            continue
        first, *extra = existing
        for duplicate in extra:  # two bootstraps raced, or someone copied one: keep one
            await client.delete_automation(duplicate.id)
        if _automation_fingerprint(first) == _automation_fingerprint(automation) and not extra:
            done(Applied("automation", automation.name, "unchanged"))
        else:
            await client.update_automation(first.id, automation)
            done(Applied("automation", automation.name, "updated"))
    for stale in await client.read_automations():
        if TAG in stale.tags and _OURS.match(stale.name) and stale.name not in names:
            await client.delete_automation(stale.id)
            done(Applied("automation", stale.name, "removed"))


def _automation_fingerprint(automation: AutomationCore) -> str:
    data = AutomationCore.model_validate(automation.model_dump(include=set(AutomationCore.model_fields)))
    dumped = data.model_dump(mode="json", exclude={"owner_resource"})
    for key in ("after", "expect", "for_each"):
        dumped["trigger"][key] = sorted(dumped["trigger"].get(key) or [])
    return json.dumps(dumped, sort_keys=True)


async def _prune_blocks(client: PrefectClient, registry: Registry, done: Callable[[Applied], None]) -> None:
    """Delete the notification blocks of routes the registry no longer has."""
    keep = {block_name(r) for r in (registry.alerts.routes if registry.alerts else [])}
    try:
        documents = await client.read_block_documents_by_type("custom-webhook", include_secrets=False)
    except ObjectNotFound:  # the block type is not registered yet: nothing of ours exists
        return
    for document in documents:
        if document.name and document.name.startswith("agentwatch-") and document.name not in keep:
            await client.delete_block_document(document.id)
            done(Applied("block", document.name, "removed"))


def _summary(changes: Sequence[Applied]) -> str:
    counts: dict[str, int] = {}
    for change in changes:
        counts[change.action] = counts.get(change.action, 0) + 1
    return ", ".join(f"{n} {action}" for action, n in sorted(counts.items()))
