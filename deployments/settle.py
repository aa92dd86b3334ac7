"""Settling flow runs, for `python -m deployments.serve`: its own in-flight runs when it stops, and
the orphans of its deployments that a serve process that is gone left behind.

A run that is not final holds its deployment's concurrency slot (the monitor has only one): each
of these gives such a run a final state, so the slot comes back. Serve's own runs end Cancelled
after their processes were stopped; an orphan is proposed Crashed or Cancelled, never forced, so a
run that moved on meanwhile keeps its state.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterDeploymentId,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.responses import SetStateStatus
from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventResourceFilter
from prefect.exceptions import ObjectNotFound
from prefect.runner import Runner
from prefect.states import Cancelled, Crashed, State

__all__ = ["cancel_run", "format_age", "in_flight", "settle", "stop_polling", "sweep_orphans"]

# Prefect's own event (not agentwatch's): the flow engine sends it while a run lives.
FLOW_RUN_HEARTBEAT = "prefect.flow-run.heartbeat"


async def sweep_orphans(
    client: PrefectClient, deployment_ids: list[UUID], own: set[UUID], older_than: timedelta
) -> list[str]:
    """Settle the runs of these deployments that a gone process left Pending, Running or Cancelling.

    A run that is not this process's own, has been in its state for `older_than` (the zombie
    guard's window; twice that for Running, which the guard settles first when it can) and sent no
    flow-run heartbeat for as long has nobody left to move it on. The
    zombie guard (an automation) would crash it too, but it cannot see every orphan in time: not a
    Pending run scheduled minutes before (Prefect holds its state events), nor one whose heartbeats
    stopped while the Prefect server was down (its timer was dropped). Pending or Running ->
    Crashed, Cancelling -> Cancelled (what was asked for); proposed, never forced, so a run that
    moved on meanwhile keeps its state. The final state releases the run's concurrency slot.
    """
    if not deployment_ids:
        return []
    in_flight_types = [StateType.PENDING, StateType.RUNNING, StateType.CANCELLING]
    runs = await client.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            deployment_id=FlowRunFilterDeploymentId(any_=deployment_ids),
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=in_flight_types)),
        ),
        limit=50,
    )
    now = datetime.now(UTC)
    lines = []
    for run in runs:
        state = run.state
        if run.id in own or state is None or state.timestamp is None:
            continue
        # A Running orphan is the guard's to crash, within the window: this is the backstop.
        wait = older_than * 2 if state.type == StateType.RUNNING else older_than
        if now - state.timestamp < wait:
            continue
        if state.type != StateType.PENDING and await _beat_since(client, run.id, now - wait):
            continue  # alive, somewhere else
        age = format_age(now - state.timestamp)
        final: State[Any]
        if state.type == StateType.CANCELLING:
            final = Cancelled(
                message=f"agentwatch serve: cancelled; nothing was left running it ({state.name} for {age})."
            )
        else:
            final = Crashed(
                message=f"agentwatch serve: {state.name} for {age} with no heartbeat; the process that ran it is gone. "
                "Marked Crashed to free its concurrency slot."
            )
        result = await client.set_flow_run_state(run.id, final)
        if result.status == SetStateStatus.ACCEPT:
            lines.append(f"orphan run {run.name}: {state.name} for {age} -> {final.name}")
    return lines


async def _beat_since(client: PrefectClient, run_id: UUID, since: datetime) -> bool:
    """Whether the run sent a flow-run heartbeat since `since` (events are readable a few seconds
    after they are sent: negligible against the window)."""
    page = await client.read_events(
        filter=EventFilter(
            occurred=EventOccurredFilter(since=since, until=datetime.now(UTC) + timedelta(minutes=1)),
            event=EventNameFilter(name=[FLOW_RUN_HEARTBEAT]),
            resource=EventResourceFilter(id=[f"prefect.flow-run.{run_id}"]),
        ),
        limit=1,
    )
    return bool(page.events)


def format_age(age: timedelta) -> str:
    return f"{age.total_seconds():.0f}s"


def in_flight(runner: Runner) -> tuple[set[UUID], set[UUID]]:
    """The runner's own runs: (those with a process, those still being submitted: Pending, no
    process yet). Prefect 3.8 keeps both privately; read defensively, the integration tests
    (tests/integration/test_watchdog.py) pin the behaviour."""
    manager = getattr(runner, "_process_manager", None)
    with_process = set(manager.flow_run_ids()) if manager is not None else set()
    poller = getattr(runner, "_scheduled_run_poller", None)
    submitting = set(getattr(poller, "_submitting_flow_run_ids", set())) - with_process
    return with_process, submitting


def stop_polling(runner: Runner) -> None:
    """`Runner.astop()` without its `cancel_all()`, which would cancel the settled runs a second time
    with its own message ("Runner is shutting down."): stop submitting and cancel the poll loop."""
    runner.stopping = True
    runner.started = False
    poller = getattr(runner, "_scheduled_run_poller", None)
    if poller is not None:
        poller.stopping = True
    loops = getattr(runner, "_loops_task_group", None)
    if loops is not None:
        loops.cancel_scope.cancel()


async def settle(runner: Runner, message: str, skip: set[UUID] | None = None) -> dict[UUID, str]:
    """Give every in-flight run of `runner` a final state, stopping its process; a line per run.

    New submissions stop first. A run with a process goes through Prefect's own cancellation
    (`CancellationManager.cancel`: cancel intent to the child, SIGTERM, SIGKILL after 30 s, then a
    forced Cancelled with `message`); forcing matters, as a child's engine that sees a bare SIGTERM
    forces Crashed itself. A run still being submitted (Pending, no process yet) is set Cancelled
    with `message`. A final state releases the deployment concurrency slot the run held; a run
    that finished meanwhile keeps its state. Runs in `skip` were settled already.
    """
    runner.stopping = True
    poller = getattr(runner, "_scheduled_run_poller", None)
    if poller is not None:
        poller.stopping = True
    with_process, submitting = (ids - (skip or set()) for ids in in_flight(runner))
    client = runner._client
    lines = {run_id: await cancel_run(client, run_id, message) for run_id in sorted(submitting, key=str)}
    manager = getattr(runner, "_cancellation_manager", None)

    async def stop(run_id: UUID) -> str:
        try:
            run = await client.read_flow_run(run_id)
            before = run.state.name if run.state else "no state"
            if run.state is not None and run.state.is_final():
                return f"run {run.name}: {before}"
            if manager is not None:
                await manager.cancel(run, state_msg=message)
            return await cancel_run(client, run_id, message, before)  # reports it, or settles what is left
        except Exception as exc:  # the API is gone: the zombie guard will settle it
            return f"run {run_id}: could not be settled ({exc!r}); left to the zombie guard"

    ordered = sorted(with_process, key=str)
    lines.update(zip(ordered, await asyncio.gather(*(stop(run_id) for run_id in ordered)), strict=True))
    return lines


async def cancel_run(client: Any, run_id: UUID, message: str, before: str | None = None) -> str:
    """Set one run Cancelled with `message` unless it is final; `before`: its state name earlier."""
    try:
        run = await client.read_flow_run(run_id)
        was = before or (run.state.name if run.state else "no state")
        if run.state is not None and run.state.is_final():
            return (
                f"run {run.name}: {was} -> {run.state.name}"
                if before and before != run.state.name
                else f"run {run.name}: {was}"
            )
        result = await client.set_flow_run_state(run_id, Cancelled(message=message))
        if result.status != SetStateStatus.ACCEPT:
            now = (await client.read_flow_run(run_id)).state
            if now is not None and now.is_final():
                return f"run {run.name}: {was} -> {now.name}"
            await client.set_flow_run_state(run_id, Cancelled(message=message), force=True)
        return f"run {run.name}: {was} -> Cancelled"
    except ObjectNotFound:
        return f"run {run_id}: deleted"
    except Exception as exc:  # the API is gone: nothing can be settled now; the zombie guard will
        return f"run {run_id}: could not be settled ({exc!r}); left to the zombie guard"
