"""The local all-in-one entry point: serve agentwatch's deployments from this process.

    python -m deployments.serve REGISTRY [--interval 30] [--no-bootstrap]

Serving needs no work pool or worker: this process polls the Prefect server (PREFECT_API_URL) for
scheduled and manual runs of its deployments and runs each in a subprocess. It is watched out of
the box:

- First it runs `agentwatch bootstrap` (deployments/bootstrap.py; `--no-bootstrap` skips it): the
  zombie guard and "monitor stalled" are in place, and "monitor stalled" is armed at once.
- Its runs send a flow-run heartbeat every 30 s (PREFECT_FLOWS_HEARTBEAT_FREQUENCY, unless set):
  when this process is killed, the zombie guard marks its orphaned runs Crashed, which frees the
  monitor's concurrency slot, and the next serve process picks the schedule up by itself.
- While serving it sweeps its deployments' orphans the guard may not see in time: a run left
  Pending or Cancelling by a serve process that is gone (Prefect 3.8 holds the state events of a
  run scheduled less than 5 minutes earlier for up to 15 minutes before automations see them, as
  they wait for a Scheduled event the scheduler never emits; heartbeats are not held).
- On SIGTERM or Ctrl-C it settles its own in-flight runs before it exits: it stops polling, stops
  their processes and gives every run that is not final yet a final state (Cancelled, "the serve
  process stopped"), so no run is left Pending or Running holding the concurrency slot; then it
  pauses the deployments (Prefect's serve does too; serving again resumes them).
- When the Prefect API goes away for longer than the runner tolerates (a few minutes), it waits
  for the API and serves again.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any
from uuid import UUID

from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterDeploymentId,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy, StateType
from prefect.client.schemas.responses import SetStateStatus
from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventResourceFilter
from prefect.exceptions import ObjectNotFound
from prefect.runner import Runner
from prefect.states import Cancelled, Crashed, State

from agentwatch.errors import AgentwatchError
from agentwatch.registry import load_registry
from deployments.automations import HEARTBEAT_SECONDS, configured_heartbeat, zombie_within
from deployments.bootstrap import arm_monitor, bootstrap
from flows.monitor import monitor_fleet
from flows.operator import pause_deployment, resume_deployment, status_deployment
from flows.reconcile import reconcile_deployment
from flows.shutdown import shutdown_deployment
from flows.uptime import uptime_deployment

# The lease a Pending monitor run holds on the slot before its engine starts renewing it: longer
# than the zombie guard's window, so the guard (Crashed: the slot comes back at once) rather than
# the server's lease reaper frees the slot of a run killed while Pending. A run the reaper freed
# first and the guard crashed later would release the slot a second time, which Prefect 3.8 does
# (it falls back to decrementing the limit), letting two monitor runs overlap.
MONITOR_LEASE_SECONDS = 120
MONITOR_CONCURRENCY = ConcurrencyLimitConfig(
    limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW, grace_period_seconds=MONITOR_LEASE_SECONDS
)
POLL_SECONDS = 2.0  # PREFECT_RUNNER_POLL_FREQUENCY unless set: a manual run starts within 2 s
API_RETRY_SECONDS = 5.0  # how often serve looks for a Prefect API that went away
SWEEP_SECONDS = 10.0  # how often serve looks for its deployments' orphaned Pending / Cancelling runs


def monitor_deployment(registry: str, interval: float):
    """The monitor on an interval schedule; overlapping runs are cancelled, never queued."""
    return monitor_fleet.to_deployment(
        name="monitor",
        interval=interval,
        parameters={"registry_path": registry, "force": False},
        concurrency_limit=MONITOR_CONCURRENCY,
        tags=["agentwatch"],
        description="Probe every agent that is due, apply the health policy, record transitions.",
    )


# Other modules append factories here (reconcile, shutdown, operator flows): each takes
# (registry path) and returns a deployment.
EXTRA_DEPLOYMENTS: list = []
EXTRA_DEPLOYMENTS.extend([reconcile_deployment, shutdown_deployment])
EXTRA_DEPLOYMENTS.extend([pause_deployment, resume_deployment, status_deployment, uptime_deployment])


def build_deployments(registry: str, interval: float) -> list:
    return [monitor_deployment(registry, interval), *(make(registry) for make in EXTRA_DEPLOYMENTS)]


def heartbeat_for_runs() -> int:
    """The heartbeat the served runs send: the user's PREFECT_FLOWS_HEARTBEAT_FREQUENCY, else 30 s
    (Prefect's default of 180 s would leave the zombie guard blind for minutes). Set in this
    process's environment, so every child, whichever way the runner starts it, inherits it."""
    seconds = configured_heartbeat()
    os.environ["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] = str(seconds)
    return seconds


def _poll_seconds() -> float:
    from prefect.settings import get_current_settings

    runner = get_current_settings().runner
    return float(runner.poll_frequency) if "poll_frequency" in runner.model_fields_set else POLL_SECONDS


class ServeProcess:
    """Prefect `Runner`s serving the deployments, stopped on SIGTERM / SIGINT after settling.

    Prefect's own SIGTERM handler (`Runner.handle_sigterm`) calls `Runner.stop()` from inside the
    event loop, where it only creates a coroutine nobody awaits ("coroutine 'Runner.astop' was
    never awaited"), then exits: in-flight runs stay Pending or Running and keep the deployment's
    concurrency slot. Here a signal only sets an event; the settling happens on the loop.

    A runner gives up after a few minutes without the Prefect API (its poll loop's error
    threshold); serve then waits for the API and starts a new one, so the schedule resumes by
    itself after a Prefect restart or outage.
    """

    def __init__(self, deployments: Iterable[Any], heartbeat_seconds: int, echo: Callable[[str], None] = print):
        self.deployments = list(deployments)
        self.echo = echo
        self.heartbeat_seconds = heartbeat_seconds
        self.orphan_age = zombie_within(heartbeat_seconds)
        self.deployment_ids: list[UUID] = []
        self.runner = self._new_runner()
        self.signal_name: str | None = None
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _new_runner(self) -> Runner:
        # pause_on_shutdown=False: Runner.__aexit__ pauses first and, with the API gone, raises
        # before it stops its processes; serve pauses the deployments itself on a signal stop.
        runner = Runner(
            heartbeat_seconds=self.heartbeat_seconds, query_seconds=_poll_seconds(), pause_on_shutdown=False, limit=None
        )
        # Runner.start() installs `runner.handle_sigterm` for SIGTERM: make that ours too.
        runner.handle_sigterm = self._on_signal  # type: ignore[method-assign]
        return runner

    def _on_signal(self, signum: int, frame: FrameType | None = None) -> None:
        # A plain signal handler runs on the main thread between bytecodes: hand over to the loop.
        name = signal.Signals(signum).name
        if self.signal_name is None:
            self.signal_name = name
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    async def run(self) -> int:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        signal.signal(signal.SIGTERM, self._on_signal)
        # A shell starts background jobs with SIGINT ignored (scripts/demo.sh): Ctrl-C is then the
        # script's to handle (it sends SIGTERM), and this process's runs keep ignoring it too.
        if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            signal.signal(signal.SIGINT, self._on_signal)
        while True:
            code = await self._serve_once()
            if code is not None:
                return code
            self.echo("the Prefect API is unreachable: waiting for it, then serving again (Ctrl-C or SIGTERM stops)")
            if not await self._wait_for_api():
                self.echo("stopped")
                return 0
            self.echo("the Prefect API answers again: serving, and 'monitor stalled' armed again")
            self.runner = self._new_runner()
            # The server dropped the stall timer if it was down past it: start the window again.
            with contextlib.suppress(Exception):
                async with get_client() as client:
                    await arm_monitor(client, by="serve")

    async def _serve_once(self) -> int | None:
        """Serve until a signal (then settle: 0) or the runner stops (an error: 1; the API is
        unreachable: None, serve again once it answers)."""
        assert self._stop is not None
        self.deployment_ids = [await self.runner.aadd_deployment(d) for d in self.deployments]
        names = ", ".join(f"{d.flow_name}/{d.name}" for d in self.deployments)
        self.echo(f"serving {names}; Ctrl-C or SIGTERM stops (in-flight runs are settled first)")
        serving = asyncio.create_task(self.runner.start(), name="runner")
        stopping = asyncio.create_task(self._stop.wait(), name="stop-signal")
        sweeping = asyncio.create_task(self._sweep_forever(), name="orphan-sweep")
        done, _ = await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        sweeping.cancel()
        if serving in done:
            stopping.cancel()
            error = serving.exception()
            if error is None:
                return 0
            if await _api_answers():
                self.echo(f"error: the runner stopped: {error!r}")
                return 1
            self.echo(f"warning: the runner stopped: {error!r}")
            return None
        await self._settle_and_stop(serving)
        return 0

    async def _settle_and_stop(self, serving: asyncio.Task[None]) -> None:
        reason = self.signal_name or "a stop request"
        message = f"The agentwatch serve process stopped ({reason}) before this run finished."
        self.echo(f"{reason} received: settling in-flight flow runs, then stopping")
        touched: set[UUID] = set()
        for _ in range(2):  # again after polling stopped: a poll in flight may have submitted one more
            for run_id, line in (await settle(self.runner, message, skip=touched)).items():
                touched.add(run_id)
                self.echo(line)
            stop_polling(self.runner)
        try:
            await serving
        except Exception as exc:  # the runner's own teardown failing must not hide the settle above
            self.echo(f"warning: runner shutdown: {exc!r}")
        # Last look, with the runner gone: nothing it ran may be left Pending or Running. Then pause
        # the schedules, as Prefect's serve does: nothing runs them until serve starts again.
        touched |= set().union(*in_flight(self.runner))
        try:
            async with get_client() as client:
                for run_id in sorted(touched, key=str):
                    line = await _cancel(client, run_id, message)
                    if line.endswith("-> Cancelled"):
                        self.echo(f"{line} (after the runner stopped)")
                for deployment_id in self.deployment_ids:
                    await client.pause_deployment(deployment_id)
            self.echo(f"paused {len(self.deployment_ids)} deployment(s); serve again to resume them")
        except Exception as exc:
            self.echo(f"warning: could not pause the deployments: {exc!r}")
        self.echo("stopped")

    async def _wait_for_api(self) -> bool:
        """Poll the API until it answers (True) or a stop signal arrives (False)."""
        assert self._stop is not None
        while not self._stop.is_set():
            if await _api_answers():
                return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), API_RETRY_SECONDS)
        return False

    async def _sweep_forever(self) -> None:
        failing = False
        async with get_client() as client:
            while True:
                await asyncio.sleep(SWEEP_SECONDS)
                try:
                    own = set().union(*in_flight(self.runner))
                    for line in await sweep_orphans(client, self.deployment_ids, own, self.orphan_age):
                        self.echo(line)
                except Exception as exc:  # the API is away: try again at the next sweep, say so once
                    if not failing:
                        self.echo(f"warning: orphan sweep failed, retrying every {SWEEP_SECONDS:g}s: {exc!r}")
                    failing = True
                else:
                    failing = False


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
            event=EventNameFilter(name=["prefect.flow-run.heartbeat"]),
            resource=EventResourceFilter(id=[f"prefect.flow-run.{run_id}"]),
        ),
        limit=1,
    )
    return bool(page.events)


def format_age(age: timedelta) -> str:
    return f"{age.total_seconds():.0f}s"


async def _api_answers() -> bool:
    try:
        async with get_client() as client:
            return await client.api_healthcheck() is None
    except Exception:
        return False


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
    lines = {run_id: await _cancel(client, run_id, message) for run_id in sorted(submitting, key=str)}
    manager = getattr(runner, "_cancellation_manager", None)

    async def stop(run_id: UUID) -> str:
        try:
            run = await client.read_flow_run(run_id)
            before = run.state.name if run.state else "no state"
            if run.state is not None and run.state.is_final():
                return f"run {run.name}: {before}"
            if manager is not None:
                await manager.cancel(run, state_msg=message)
            return await _cancel(client, run_id, message, before)  # reports it, or settles what is left
        except Exception as exc:  # the API is gone: the zombie guard will settle it
            return f"run {run_id}: could not be settled ({exc!r}); left to the zombie guard"

    ordered = sorted(with_process, key=str)
    lines.update(zip(ordered, await asyncio.gather(*(stop(run_id) for run_id in ordered)), strict=True))
    return lines


async def _cancel(client: Any, run_id: UUID, message: str, before: str | None = None) -> str:
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("registry", help="registry YAML file")
    parser.add_argument("--interval", type=float, default=30.0, help="monitor schedule, seconds (default 30)")
    parser.add_argument(
        "--no-bootstrap",
        action="store_true",
        help="do not run `agentwatch bootstrap` first (no zombie guard or stalled alert changes)",
    )
    args = parser.parse_args(argv)
    registry = str(Path(args.registry).resolve())
    try:
        load_registry(registry)  # reject a bad registry before anything is served
    except AgentwatchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    heartbeat = heartbeat_for_runs()
    if not args.no_bootstrap:
        try:
            asyncio.run(bootstrap(registry, interval=args.interval, heartbeat_seconds=heartbeat))
        except KeyboardInterrupt:
            return 130
        except Exception as exc:
            from prefect.settings import PREFECT_API_URL

            where = PREFECT_API_URL.value() or "no PREFECT_API_URL"
            print(f"error: bootstrap failed ({where}), nothing is served: {exc}", file=sys.stderr)
            print("(fix the cause, or pass --no-bootstrap to serve without it)", file=sys.stderr)
            return 1
    print(
        f"flow-run heartbeat every {heartbeat}s; a run silent for {zombie_within(heartbeat).total_seconds():g}s "
        f"is marked Crashed by the zombie guard" + ("" if heartbeat == HEARTBEAT_SECONDS else " (custom heartbeat)"),
        flush=True,
    )
    serve = ServeProcess(build_deployments(registry, args.interval), heartbeat, echo=lambda s: print(s, flush=True))
    return asyncio.run(serve.run())


if __name__ == "__main__":
    sys.exit(main())
