"""The local all-in-one entry point: serve agentwatch's deployments from this process.

    python -m deployments.serve REGISTRY [--interval 30] [--no-bootstrap]

Serving needs no work pool or worker: this process polls the Prefect server (PREFECT_API_URL) for
scheduled and manual runs of its deployments (deployments/definitions.py) and runs each in a
subprocess. It is watched out of the box:

- First it runs `agentwatch bootstrap` (deployments/bootstrap.py; `--no-bootstrap` skips it): the
  zombie guard and "monitor stalled" are in place, and "monitor stalled" is armed at once.
- Its runs send a flow-run heartbeat every 30 s (PREFECT_FLOWS_HEARTBEAT_FREQUENCY, unless set):
  when this process is killed, the zombie guard marks its orphaned runs Crashed, which frees the
  monitor's concurrency slot, and the next serve process picks the schedule up by itself.
- While serving it sweeps its deployments' orphans the guard may not see in time: a run left
  Pending or Cancelling by a serve process that is gone (Prefect 3.8 holds the state events of a
  run scheduled less than 5 minutes earlier for up to 15 minutes before automations see them, as
  they wait for a Scheduled event the scheduler never emits; heartbeats are not held).
- On SIGTERM or Ctrl-C it settles its own in-flight runs before it exits (deployments/settle.py):
  it stops polling, stops their processes and gives every run that is not final yet a final state
  (Cancelled, "the serve process stopped"), so no run is left Pending or Running holding the
  concurrency slot. It leaves the deployments and their schedules as they are (Prefect's own serve
  pauses them): a worker, `prefect deploy` or the next serve process finds them active.
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
from pathlib import Path
from types import FrameType
from typing import Any
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.deployments.runner import RunnerDeployment
from prefect.runner import Runner

from agentwatch.errors import AgentwatchError
from agentwatch.registry import load_registry
from deployments.automations import HEARTBEAT_SECONDS, configured_heartbeat, zombie_within
from deployments.bootstrap import arm_monitor, bootstrap
from deployments.definitions import DEFAULT_INTERVAL, runner_deployments
from deployments.settle import cancel_run, in_flight, settle, stop_polling, sweep_orphans

POLL_SECONDS = 2.0  # PREFECT_RUNNER_POLL_FREQUENCY unless set: a manual run starts within 2 s
API_RETRY_SECONDS = 5.0  # how often serve looks for a Prefect API that went away
SWEEP_SECONDS = 10.0  # how often serve looks for its deployments' orphaned Pending / Cancelling runs


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


class SignalledRunner(Runner):
    """Prefect's `Runner`, its SIGTERM handler handing over to the serve process.

    `Runner.start()` installs `handle_sigterm` for SIGTERM. Prefect's calls `Runner.stop()` from
    inside the event loop, where it only creates a coroutine nobody awaits ("coroutine
    'Runner.astop' was never awaited"), then exits at once: in-flight runs stay Pending or Running
    and keep the deployment's concurrency slot. This one only tells the serve process, which
    settles its runs on the loop.
    """

    def __init__(self, on_sigterm: Callable[[int], None], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._on_sigterm = on_sigterm

    def handle_sigterm(self, *args: Any, **kwargs: Any) -> None:
        self._on_sigterm(signal.SIGTERM)


class ServeProcess:
    """Prefect `Runner`s serving the deployments, stopped on SIGTERM / SIGINT after settling.

    A signal only sets an event (SignalledRunner); the settling happens on the loop.

    A runner gives up after a few minutes without the Prefect API (its poll loop's error
    threshold); serve then waits for the API and starts a new one, so the schedule resumes by
    itself after a Prefect restart or outage.
    """

    def __init__(
        self, deployments: Iterable[RunnerDeployment], heartbeat_seconds: int, echo: Callable[[str], None] = print
    ):
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
        # pause_on_shutdown=False: the deployments stay active for whoever runs them next (a
        # worker, `prefect deploy`, the next serve). Runner.__aexit__ would pause them, and with
        # the API gone it would raise there, before stopping its processes.
        return SignalledRunner(
            self._on_signal,
            heartbeat_seconds=self.heartbeat_seconds,
            query_seconds=_poll_seconds(),
            pause_on_shutdown=False,
            limit=None,
        )

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
        # Last look, with the runner gone: nothing it ran may be left Pending or Running.
        touched |= set().union(*in_flight(self.runner))
        try:
            async with get_client() as client:
                for run_id in sorted(touched, key=str):
                    line = await cancel_run(client, run_id, message)
                    if line.endswith("-> Cancelled"):
                        self.echo(f"{line} (after the runner stopped)")
        except Exception as exc:  # the API is gone: the zombie guard settles what is left
            self.echo(f"warning: could not look at the runs after the runner stopped: {exc!r}")
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


async def _api_answers() -> bool:
    try:
        async with get_client() as client:
            return await client.api_healthcheck() is None
    except Exception:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("registry", help="registry YAML file")
    parser.add_argument(
        "--interval",
        type=float,
        default=DEFAULT_INTERVAL,
        help=f"monitor schedule, seconds (default {DEFAULT_INTERVAL:g})",
    )
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
    deployments = runner_deployments(registry, args.interval)
    serve = ServeProcess(deployments, heartbeat, echo=lambda s: print(s, flush=True))
    return asyncio.run(serve.run())


if __name__ == "__main__":
    sys.exit(main())
