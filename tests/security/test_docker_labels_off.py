"""Threat (class 2 of tests/security/README.md): `AGENTWATCH_DOCKER_LABELS=false` ignored by reconcile.

With label registration off, a label registers nothing anywhere: not in the monitor, not in
reconcile, not in shutdown. A managed container that names an agent the registry lacks is then an
orphan like any other, and reconcile removes it. Real engine, real Prefect API.
"""

from __future__ import annotations

from pathlib import Path

import docker as docker_py
import pytest

from flows.monitor import monitor_fleet
from flows.reconcile import reconcile_fleet
from flows.shutdown import shutdown_fleet

from ..integration.docker_support import RunContainer, status_is, wait_until, write_registry

pytestmark = [pytest.mark.integration, pytest.mark.docker]


async def test_labels_off_register_nothing_and_their_containers_are_orphans(
    prefect_server: str,
    state_db: str,
    run_container: RunContainer,
    docker: docker_py.DockerClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AGENTWATCH_DOCKER_LABELS", "false")
    ghost = run_container("ghost", "exec /bin/agent", agent="ghost")  # managed; no agent "ghost" in the registry
    wait_until(ghost, status_is("running"))
    path = write_registry(tmp_path / "fleet.yaml", [{"id": "editor", "transport": "stdio"}])

    rows = await monitor_fleet(path, force=True)
    assert [r["id"] for r in rows] == ["editor"]  # the monitor registered nothing
    left = await shutdown_fleet(path, leave_running=True)
    assert [(r["agent"], r["container"]) for r in left] == [("-", ghost.name)]  # shutdown: serves no agent

    removed = await reconcile_fleet(path, orphan_min_age="0s")
    assert [(r["action"], r["agent"], r["outcome"]) for r in removed] == [("remove", "-", "done")]
    assert "agent 'ghost' is not in the fleet" in removed[0]["reason"]
    with pytest.raises(docker_py.errors.NotFound):
        docker.containers.get(ghost.id)
