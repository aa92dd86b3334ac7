"""The monitor is watched, on a real `prefect server start` of this module's own (SQLite, its own
PREFECT_HOME) with real `python -m deployments.serve` processes, an HTTP agent on 127.0.0.1 and a
webhook receiver standing in for chat:

- bootstrap arms "monitor stalled": a monitor that never completes a cycle is reported;
- a serve process group SIGKILLed while a monitor run is Pending, then while one is Running: the
  orphan ends Crashed, the concurrency slot comes back and a restarted serve completes monitor runs
  again with no hand on the API; "monitor stalled" reports the outage;
- SIGTERM to serve, and Ctrl-C to its process group: in-flight runs are settled (final state, slot
  free), serve exits 0 without "never awaited" noise.

The tests share one server, fleet and receiver and run in file order (each leaves serve stopped).
Bounds are liveness timeouts, never performance assertions.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from uuid import UUID

import pytest
import yaml
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.sorting import FlowRunSort

from agentwatch.demo import AgentServer, serve_in_thread

from .alert_support import WebhookReceiver, receiving
from .watchdog_support import ROOT, PrefectServer, Serve, wait_until

pytestmark = pytest.mark.integration

T = TypeVar("T")
INTERVAL = 10  # the monitor's schedule; "monitor stalled" after 3 of them (30 s)
STALL = 30
ZOMBIE = 75  # the zombie guard's window for the 30 s heartbeat serve sets
MONITOR = "monitor-fleet/monitor"
# Liveness bounds: an orphan is settled within the zombie window, plus the guard's or sweep's
# latency and a loaded 2-core machine's slack; a run starts within a few schedule ticks.
SETTLED_WITHIN = ZOMBIE + 60
RUN_WITHIN = 90


@dataclass
class Watch:
    """This module's server, fleet and receiver; `serves` are stopped at teardown."""

    server: PrefectServer
    agents: AgentServer
    receiver: WebhookReceiver
    base: Path
    serves: list[Serve] = field(default_factory=list)

    @property
    def registry(self) -> Path:
        return self.base / "fleet.yaml"

    @property
    def env(self) -> dict[str, str]:
        return {
            **self.server.client_env(),
            "AW_WATCH": f"{self.receiver.url}/watch",
            "AGENTWATCH_DATABASE_URL": f"sqlite:///{self.base}/state.db",
        }

    def write(self, mode: str) -> None:
        """The fleet: one HTTP agent, answering (`ok`) or hanging for its 45 s timeout (`hang`)."""
        agent = {"id": "w-1", "probe": {"http": {"url": self.agents.url(f"{mode}-w1")}}, "interval": "0s"}
        agent["timeout"] = "45s"
        route = {"name": "watch", "kind": "webhook", "url_env": "AW_WATCH"}
        self.registry.write_text(yaml.safe_dump({"agents": [agent], "alerts": {"routes": [route]}}))

    def serve(self, *extra: str) -> Serve:
        serve = Serve(self.registry, INTERVAL, self.env, self.base / "serve.log", extra).start()
        self.serves.append(serve)
        return serve

    def check_serving(self) -> None:
        """Fail at once, with its output, when the newest serve process exited on its own."""
        serve = self.serves[-1] if self.serves else None
        if serve is not None and serve.process is not None and serve.process.poll() is not None and not serve.stopped:
            raise AssertionError(f"serve exited ({serve.process.returncode}):\n{serve.output()[-4000:]}")

    def stalled(self) -> int:
        return sum(1 for r in self.receiver.on("/watch") if r.json.get("kind") == "monitor-stalled")

    def api(self, call: Callable[[PrefectClient], Awaitable[T]]) -> T:
        async def go() -> T:
            async with PrefectClient(api=self.server.api_url) as client:
                return await call(client)

        return asyncio.run(go())

    def runs(self) -> list[FlowRun]:
        """The monitor deployment's runs, newest first ([] before it exists)."""

        self.check_serving()

        async def read(client: PrefectClient) -> list[FlowRun]:
            try:
                deployment = await client.read_deployment_by_name(MONITOR)
            except Exception:
                return []
            return await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[deployment.id])),
                sort=FlowRunSort.START_TIME_DESC,
                limit=200,
            )

        return self.api(read)

    def run(self, run_id: UUID) -> FlowRun:
        return self.api(lambda c: c.read_flow_run(run_id))

    def active_slots(self) -> int:
        deployment = self.api(lambda c: c.read_deployment_by_name(MONITOR))
        assert deployment.global_concurrency_limit is not None
        return deployment.global_concurrency_limit.active_slots

    def first_run(self, state: str, timeout: float = RUN_WITHIN, interval: float = 0.1) -> FlowRun:
        """The first monitor run seen in `state` (a state type: PENDING, RUNNING)."""
        found = wait_until(
            lambda: [r for r in self.runs() if r.state and r.state.type.value == state],
            timeout,
            interval,
            what=f"a monitor run in {state}",
        )
        return found[0]

    def completed_after(self, since: float, timeout: float = RUN_WITHIN) -> FlowRun:
        """A monitor run that completed after `since` (time.time())."""

        def done() -> list[FlowRun]:
            return [
                r
                for r in self.runs()
                if r.state and r.state.is_completed() and r.state.timestamp and r.state.timestamp.timestamp() > since
            ]

        return wait_until(done, timeout, 1.0, what="a monitor run to complete")[0]


@pytest.fixture(scope="module")
def watch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Watch]:
    base = tmp_path_factory.mktemp("watchdog")
    # The demo's server setting (scripts/demo.sh): a Pending run's slot lease for deployments
    # without their own (the monitor's is MONITOR_LEASE_SECONDS).
    server = PrefectServer(
        base / "prefect", env={"PREFECT_SERVER_CONCURRENCY_INITIAL_DEPLOYMENT_LEASE_DURATION": "120"}
    )
    server.start()
    try:
        with receiving() as receiver, serve_in_thread() as agents:
            state = Watch(server, agents, receiver, base)
            state.write("ok")
            yield state
            for serve in state.serves:
                serve.stop()
            print(f"\nserve log: {state.base / 'serve.log'}")
    finally:
        server.stop()


def test_bootstrap_arms_monitor_stalled_on_a_server_where_the_monitor_never_ran(watch: Watch) -> None:
    command = [str(Path(sys.executable).parent / "agentwatch"), "bootstrap", str(watch.registry)]
    done = subprocess.run(
        [*command, "--interval", str(INTERVAL)], capture_output=True, text=True, timeout=180, env=watch.env, cwd=ROOT
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "agentwatch: crash zombie runs" in done.stdout
    # Nothing serves the deployment: its runs stay Scheduled, no cycle ever completes.
    assert all(r.state is not None and r.state.is_scheduled() for r in watch.runs())
    assert watch.receiver.wait(lambda r: watch.stalled() >= 1, timeout=STALL + 45), "no 'monitor stalled'"
    [message] = watch.receiver.on("/watch")
    assert message.json["headline"].startswith("⚠️ agentwatch monitor stalled: no cycle for 30s")


def test_serve_killed_while_a_run_is_pending_recovers_then_ctrl_c_settles(watch: Watch) -> None:
    stalled = watch.stalled()
    first = watch.serve()
    run = watch.first_run("PENDING")
    first.kill()
    orphan = watch.run(run.id)
    assert orphan.state is not None and orphan.state.is_pending(), orphan.state  # killed while submitting
    assert watch.active_slots() == 1  # the orphan holds the monitor's only slot

    restarted = time.time()
    second = watch.serve()
    settled = wait_until(lambda: _final(watch.run(run.id)), SETTLED_WITHIN, 1.0, what="the orphan to be settled")
    assert settled.state is not None and settled.state.is_crashed(), settled.state
    watch.completed_after(restarted)  # the schedule resumed by itself
    assert watch.receiver.wait(lambda r: watch.stalled() > stalled, timeout=30), "no 'monitor stalled' for the outage"

    # Ctrl-C in serve's terminal (SIGINT to its whole process group) while the next run is Pending.
    pending = watch.first_run("PENDING")
    second.ctrl_c()
    assert second.wait(timeout=60) == 0, second.output()[-3000:]
    ended = watch.run(pending.id)
    assert ended.state is not None and ended.state.is_final(), ended.state
    assert watch.active_slots() == 0
    _assert_group_gone(second)
    assert "never awaited" not in second.output()


def test_serve_killed_while_a_run_is_running_recovers_then_sigterm_settles(watch: Watch) -> None:
    stalled = watch.stalled()
    watch.write("hang")  # the next run probes an agent that never answers: it stays Running 45 s
    first = watch.serve()
    run = watch.first_run("RUNNING", interval=0.5)
    time.sleep(2)  # its first heartbeat is out
    first.kill()
    orphan = watch.run(run.id)
    assert orphan.state is not None and orphan.state.is_running(), orphan.state
    watch.write("ok")

    restarted = time.time()
    second = watch.serve()
    settled = wait_until(lambda: _final(watch.run(run.id)), SETTLED_WITHIN, 1.0, what="the orphan to be settled")
    assert settled.state is not None and settled.state.is_crashed(), settled.state
    assert "zombie guard" in (settled.state.message or "")  # the automation, on missing heartbeats
    watch.completed_after(restarted)
    assert watch.receiver.wait(lambda r: watch.stalled() > stalled, timeout=30), "no 'monitor stalled' for the outage"

    # SIGTERM to serve alone (`kill PID`, a supervisor) while a run is Running.
    watch.write("hang")
    running = wait_until(
        lambda: [r for r in watch.runs() if r.id != run.id and r.state and r.state.is_running()],
        RUN_WITHIN,
        0.5,
        what="another running monitor run",
    )[0]
    second.signal(signal.SIGTERM)
    assert second.wait(timeout=60) == 0, second.output()[-3000:]
    ended = watch.run(running.id)
    assert ended.state is not None and ended.state.is_cancelled(), ended.state
    assert "serve process stopped (SIGTERM)" in (ended.state.message or "")
    assert watch.active_slots() == 0
    _assert_group_gone(second)
    assert "never awaited" not in second.output()
    watch.write("ok")


def _final(run: FlowRun) -> FlowRun | None:
    return run if run.state is not None and run.state.is_final() else None


def _assert_group_gone(serve: Serve) -> None:
    """No process of the serve's group is left (its flow-run processes were stopped)."""
    assert serve.process is not None

    def gone() -> bool:
        try:
            os.killpg(serve.process.pid, 0)  # type: ignore[union-attr]
        except ProcessLookupError:
            return True
        return False

    wait_until(gone, 15, 0.2, what="the serve process group to be gone")
