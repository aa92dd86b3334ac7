"""Threat (class 1 of tests/security/README.md): a container impersonates a registry agent.

Whoever can start a container writes its labels. A managed container labelled
`agentwatch.agent=web-1`, where web-1 is a healthy HTTP agent of the registry, exits 1. It must
not be bound to web-1: the monitor keeps web-1 healthy, reconcile records nothing for web-1 and
starts nothing under web-1's restart budget (nor removes the container on a label's word), shutdown
never records web-1 stopped, and a warning names the container. Real engine, real Prefect API,
real HTTP agent on 127.0.0.1.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agentwatch.demo import serve_in_thread
from agentwatch.docker import DockerEngine
from agentwatch.models import AgentState
from agentwatch.registry import load_registry
from agentwatch.settings import get_settings
from agentwatch.store import StateStore
from flows.monitor import monitor_fleet
from flows.reconcile import reconcile_fleet
from flows.shutdown import shutdown_fleet
from tasks.containers import list_fleet_containers

from ..integration.docker_support import RunContainer, status_is, wait_until, write_registry

pytestmark = [pytest.mark.integration, pytest.mark.docker]


async def test_a_label_never_stands_for_a_registry_agent(
    prefect_server: str, state_db: str, labels_on: None, run_container: RunContainer, tmp_path: Path
) -> None:
    with serve_in_thread() as agents:
        path = write_registry(
            tmp_path / "fleet.yaml", [{"id": "web-1", "probe": {"http": {"url": agents.url("ok-web")}}}]
        )
        impostor = run_container("impostor", "exit 1", agent="web-1")  # managed=true, exits with code 1
        started = wait_until(impostor, status_is("exited"))["StartedAt"]

        # The monitor: web-1 is probed over HTTP as the registry says, and stays healthy.
        rows = {row["id"]: row for row in await monitor_fleet(path, force=True)}
        assert (rows["web-1"]["probe"], rows["web-1"]["state"]) == ("http", "healthy")

        # A warning names the container and the agent it claims.
        async with DockerEngine.from_settings(get_settings()) as engine:
            seen = await list_fleet_containers(engine, load_registry(path), get_settings())
        assert [p.agent for p in seen.problems] == ["web-1"]
        assert impostor.name in seen.problems[0].message
        assert "web-1" not in seen.bound  # never web-1's container

        # Reconcile, for everything and for web-1 alone: the container is left alone, as nobody's.
        for agent_ids in (None, ["web-1"]):
            plan = await reconcile_fleet(path, agent_ids=agent_ids, orphan_min_age="0s")
            assert [(r["action"], r["agent"], r["container"]) for r in plan] == [("leave", "-", impostor.name)]
            assert "claims registry agent 'web-1'" in plan[0]["reason"]
        impostor.reload()
        assert impostor.attrs["State"]["StartedAt"] == started  # never started under web-1's budget

        # Shutdown for web-1 stops nothing; web-1's record and history never say failed or stopped.
        assert await shutdown_fleet(path, agent_ids=["web-1"], stop_timeout="1s") == []
        async with StateStore(get_settings().resolved_database_url()) as store:
            record = (await store.load(["web-1"]))["web-1"]
            history = await store.history("web-1")
            budgets = await store.load_restart_budgets(["web-1"])
        assert record.state is AgentState.HEALTHY
        assert [t.to_state for t in history] == [AgentState.HEALTHY]
        assert budgets == {}
    impostor.reload()  # and it is still there: removed on no label's word
