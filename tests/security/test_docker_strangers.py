"""Threat (class 3 of tests/security/README.md): the demo (and any default) adopts containers it does not own.

Other fleets, other test runs and people share the engine; their containers carry agentwatch
labels too. Defaults and the demo touch only what they own:
- by default label registration is off, so no container joins a fleet by its labels, and a fleet
  without Docker agents never talks to the engine at all;
- with a scope (the demo sets its own, `AGENTWATCH_DOCKER_SCOPE`), a stranger's containers outside
  it are never registered, restarted, stopped or removed, even with label registration on.
Real engine, real Prefect API, the demo's own fleet on 127.0.0.1.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from prefect import flow

from agentwatch.demo import demo_registry, serve_in_thread
from agentwatch.registry import Registry, load_registry
from flows.monitor import monitor_fleet
from flows.reconcile import reconcile_fleet
from flows.shutdown import shutdown_fleet
from tasks.containers import Observation, discover_docker_agents

from ..integration.docker_support import RunContainer, status_is, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.docker]


@flow(name="discover-only")
async def discover(registry: Registry) -> Observation:
    return await discover_docker_agents(registry)


async def test_by_default_no_container_joins_and_an_http_fleet_never_asks_the_engine(
    prefect_server: str, state_db: str, run_container: RunContainer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AGENTWATCH_DOCKER_LABELS", raising=False)
    box = run_container("would-join", "exec /bin/agent", agent="would-join")  # in our own scope, even
    wait_until(box, status_is("running"))
    with serve_in_thread() as agents:
        path = tmp_path / "demo-fleet.yaml"
        path.write_text(yaml.safe_dump(demo_registry(agents), sort_keys=False))
        rows = await monitor_fleet(str(path), force=True)
        assert "would-join" not in {r["id"] for r in rows}
        # With no Docker agent and labels off, the engine is not even asked: a dead one changes nothing.
        monkeypatch.setenv("DOCKER_HOST", "unix:///tmp/agentwatch-no-engine.sock")
        seen = await discover(load_registry(path))
        assert (seen.error, seen.listed, seen.fleet.ids) == (None, [], load_registry(path).ids)


async def test_a_scoped_fleet_never_touches_a_strangers_containers(
    prefect_server: str, state_db: str, run_container: RunContainer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo's situation: its own scope set, strangers' labelled containers on the engine, and
    label registration on (the worst case)."""
    monkeypatch.setenv("AGENTWATCH_DOCKER_LABELS", "true")
    crashed = run_container("stranger-crashed", "exit 3", agent="stranger-1", scoped=False)
    orphan = run_container("stranger-orphan", "exec /bin/agent", scoped=False)  # managed, no agent
    worker = run_container("stranger-worker", "exec /bin/agent", agent="stranger-2", scoped=False)
    started = wait_until(crashed, status_is("exited"))["StartedAt"]
    for box in (orphan, worker):
        wait_until(box, status_is("running"))
    with serve_in_thread() as agents:
        path = tmp_path / "demo-fleet.yaml"
        path.write_text(yaml.safe_dump(demo_registry(agents), sort_keys=False))

        rows = await monitor_fleet(str(path), force=True)
        assert not {"stranger-1", "stranger-2"} & {r["id"] for r in rows}
        assert await reconcile_fleet(str(path), orphan_min_age="0s") == []
        assert await shutdown_fleet(str(path), stop_timeout="1s") == []

    crashed.reload()
    assert crashed.attrs["State"]["StartedAt"] == started  # never restarted
    for box in (orphan, worker):
        box.reload()
        assert box.status == "running"  # never stopped, never removed
