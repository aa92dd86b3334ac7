"""The deployments on a real `prefect server start` of this module's own (SQLite, its own
PREFECT_HOME):

- `prefect deploy --all` (prefect.yaml) and `agentwatch bootstrap` (deployments/definitions.py)
  register the same deployments: bootstrap's own comparison finds nothing to change but the
  registry path it is given;
- `python -m deployments.serve` stopped by SIGTERM leaves its deployments and their schedules
  active (a worker or `prefect deploy` later finds nothing paused) and prints no "never awaited".
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import pytest
import yaml
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.responses import DeploymentResponse

from deployments.bootstrap import existing_fingerprint, wanted_fingerprint
from deployments.definitions import DEFAULT_REGISTRY, DEPLOYMENTS, WORK_POOL

from .watchdog_support import ROOT, PrefectServer, Serve, wait_until

pytestmark = pytest.mark.integration

T = TypeVar("T")
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    server = PrefectServer(tmp_path_factory.mktemp("serve-deploy") / "prefect")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def api(server: PrefectServer, call: Callable[[PrefectClient], Awaitable[T]]) -> T:
    async def go() -> T:
        async with PrefectClient(api=server.api_url) as client:
            return await call(client)

    return asyncio.run(go())


def deployments(server: PrefectServer) -> dict[str, DeploymentResponse]:
    async def read(client: PrefectClient) -> dict[str, DeploymentResponse]:
        return {d.full_name: await client.read_deployment_by_name(d.full_name) for d in DEPLOYMENTS}

    return api(server, read)


def test_prefect_deploy_registers_what_bootstrap_would(server: PrefectServer, monkeypatch: pytest.MonkeyPatch) -> None:
    env = server.client_env()
    for command in (["work-pool", "create", WORK_POOL, "--type", "process"], ["--no-prompt", "deploy", "--all"]):
        done = subprocess.run(
            [str(BIN / "prefect"), *command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stdout + done.stderr
    monkeypatch.chdir(ROOT)  # where `prefect deploy` ran: entrypoints are relative to it
    for definition in DEPLOYMENTS:
        existing = deployments(server)[definition.full_name]
        wanted = definition.runner(DEFAULT_REGISTRY)
        ours, theirs = wanted_fingerprint(wanted, WORK_POOL), existing_fingerprint(existing, WORK_POOL)
        # `path`: prefect deploy records this directory, a serve process "."; both run the flows from here.
        assert {**ours, "path": None} == {**theirs, "path": None}, definition.full_name
        assert not existing.paused


def test_serve_stopped_by_sigterm_leaves_the_schedules_active_and_no_warning(
    server: PrefectServer, tmp_path: Path
) -> None:
    registry = tmp_path / "fleet.yaml"
    agent = {"id": "s-1", "probe": {"tcp": {"host": "127.0.0.1", "port": 9}}}
    registry.write_text(yaml.safe_dump({"agents": [agent]}))
    env = {**server.client_env(), "AGENTWATCH_DATABASE_URL": f"sqlite:///{tmp_path}/state.db"}
    started = datetime.now(UTC)
    serve = Serve(registry, 30, env, tmp_path / "serve.log").start()
    try:
        wait_until(lambda: "serving " in serve.output() or serve.process.poll() is not None, 180, what="serving")  # type: ignore[union-attr]
        served = deployments(server)
        assert all(not d.paused for d in served.values()), serve.output()
        assert [s.active for d in served.values() for s in d.schedules] == [True, True]  # monitor, uptime-report
        # Once its runner polled, the runner's SIGTERM handler is in place (Runner.start installs it).
        wait_until(lambda: _polled_since(server, started), 60, what="the runner to poll")
        serve.signal(signal.SIGTERM)
        assert serve.wait(timeout=90) == 0, serve.output()[-3000:]
    finally:
        serve.stop()
    output = serve.output()
    assert "never awaited" not in output, output[-3000:]
    assert "stopped" in output.splitlines(), output[-3000:]
    after = deployments(server)
    assert [name for name, d in after.items() if d.paused] == [], output[-3000:]
    assert [(name, s.active) for name, d in after.items() for s in d.schedules] == [
        ("monitor-fleet/monitor", True),
        ("uptime-report/uptime-report", True),
    ]


def _polled_since(server: PrefectServer, since: datetime) -> bool:
    """Whether a runner polled for the monitor's runs since `since` (the server records the poll)."""
    polled = deployments(server)["monitor-fleet/monitor"].last_polled
    return polled is not None and polled >= since
