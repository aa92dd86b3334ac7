"""Reconcile, shutdown and the monitor's Docker hook as Prefect flows, on a real Prefect test server,
a real Docker engine and a real SQLite state store. No mock of the engine anywhere."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker as docker_py
import pytest
import yaml

from agentwatch.errors import EngineUnavailable
from agentwatch.models import AgentState
from agentwatch.settings import get_settings
from agentwatch.store import StateStore
from cli import main
from flows.monitor import monitor_fleet
from flows.reconcile import reconcile_fleet
from flows.shutdown import shutdown_fleet

from .docker_support import RunContainer, health, health_is, status_is, wait_until
from .prefect_reads import artifact_versions, wait_for_events

pytestmark = [pytest.mark.integration, pytest.mark.docker]


def registry_file(tmp_path: Path, docker_agents: dict[str, str] | None = None) -> str:
    """A registry with one docker-probed agent per (agent id -> container name)."""
    agents = [{"id": a, "probe": {"docker": {"container": c}}} for a, c in (docker_agents or {}).items()]
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump({"agents": agents}))
    return str(path)


async def stored(*agent_ids: str) -> dict[str, Any]:
    async with StateStore(get_settings().resolved_database_url()) as store:
        return await store.load(agent_ids)


def actions(rows: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(r["action"], r["agent"], r["outcome"]) for r in rows]


def restarted(box: Any, started_at: str) -> dict[str, Any]:
    """Wait until the container has been started again since `started_at` and exited."""
    return wait_until(box, lambda s: s["StartedAt"] != started_at and s["Status"] == "exited")


async def test_monitor_records_exits_and_reconciles_failed_agents(
    prefect_server: str,
    state_db: str,
    labels_on: None,
    run_container: RunContainer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AGENTWATCH_RESTART_BACKOFF", "0s")
    run_container("label-ok", "exec /bin/agent", agent="label-ok", labels={"agentwatch.failure_threshold": "2"})
    clean = run_container("clean", "exit 0")
    crash = run_container("crash", "exit 3")
    first_start = wait_until(crash, status_is("exited"))["StartedAt"]
    wait_until(clean, status_is("exited"))
    registry = registry_file(tmp_path, {"clean-exit": clean.name, "crasher": crash.name})

    rows = {row["id"]: row for row in await monitor_fleet(registry, force=True)}

    assert rows["label-ok"]["state"] == "healthy"  # registered by its container's labels
    assert (rows["clean-exit"]["state"], rows["clean-exit"]["reason"]) == ("stopped", "exited with code 0")
    assert (rows["crasher"]["state"], rows["crasher"]["reason"]) == ("failed", "exited with code 3")
    # The monitor's reconcile sub-flow started the crashed container again, within its budget.
    restarted(crash, first_start)
    records = await stored("crasher", "clean-exit")
    assert records["crasher"].state is AgentState.STARTING
    assert records["crasher"].reason.startswith("restarted: exited with code 3; restart 1 of 3")
    assert records["clean-exit"].state is AgentState.STOPPED  # a clean exit is never restarted


async def test_reconcile_removes_old_orphans_only(
    prefect_server: str, state_db: str, run_container: RunContainer, docker: docker_py.DockerClient, tmp_path: Path
) -> None:
    orphan = run_container("orphan", "exec /bin/agent")  # managed, no agent: an orphan
    bystander = run_container("bystander", "exec /bin/agent", managed=False)  # no agentwatch labels
    registry = registry_file(tmp_path)

    plan = await reconcile_fleet(registry, dry_run=True, orphan_min_age="0s")
    assert actions(plan) == [("remove", "-", "planned")]
    young = await reconcile_fleet(registry, orphan_min_age="1h")
    assert actions(young) == [("leave", "-", "-")] and "young orphan" in young[0]["reason"]
    orphan.reload()  # still there after the dry run and as a young orphan

    removed = await reconcile_fleet(registry, orphan_min_age="0s")
    assert actions(removed) == [("remove", "-", "done")]
    with pytest.raises(docker_py.errors.NotFound):
        docker.containers.get(orphan.id)
    bystander.reload()
    assert bystander.status == "running"  # an unlabelled container is never touched

    events = await wait_for_events("agentwatch.container.removed", [f"agentwatch.container.{orphan.id}"])
    assert len(events) == 1 and events[0].payload["container"] == orphan.name
    markdown = [a.data for a in await artifact_versions("agentwatch-reconcile")]
    assert any("dry run" in m and "remove" in m for m in markdown)


async def test_restart_budget_then_exhausted(
    prefect_server: str, state_db: str, run_container: RunContainer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTWATCH_RESTART_MAX", "2")
    monkeypatch.setenv("AGENTWATCH_RESTART_BACKOFF", "0s")
    since = datetime.now(UTC)
    crash = run_container("crash", "exit 3")
    started = wait_until(crash, status_is("exited"))["StartedAt"]
    registry = registry_file(tmp_path, {"crasher": crash.name})

    for n in (1, 2):
        rows = await reconcile_fleet(registry, agent_ids=["crasher"])
        assert actions(rows) == [("record", "crasher", "done"), ("start", "crasher", "done")]
        assert f"restart {n} of 2" in rows[1]["reason"]
        started = restarted(crash, started)["StartedAt"]

    spent = await reconcile_fleet(registry, agent_ids=["crasher"])
    assert actions(spent) == [("exhausted", "crasher", "done")]
    record = (await stored("crasher"))["crasher"]
    assert record.state is AgentState.FAILED
    assert record.reason.startswith("restart budget exhausted: 2 of 2 restarts in 10m; last: exited with code 3")
    again = await reconcile_fleet(registry, agent_ids=["crasher"])
    assert actions(again) == [("exhausted", "crasher", "done")]
    crash.reload()
    assert crash.attrs["State"]["StartedAt"] == started  # not started a third time

    # The monitor keeps the agent failed with that reason and does not call reconcile again.
    rows = {row["id"]: row for row in await monitor_fleet(registry, force=True)}
    assert rows["crasher"]["state"] == "failed"
    assert rows["crasher"]["reason"].startswith("restart budget exhausted")

    def complete(events: list[Any]) -> bool:
        return sum(e.event.endswith(".started") for e in events) == 2 and any("exhausted" in e.event for e in events)

    events = await wait_for_events("agentwatch.container.", ["agentwatch.agent.crasher"], since=since, until=complete)
    names = [e.event for e in events]
    assert names.count("agentwatch.container.started") == 2
    assert names.count("agentwatch.container.restart-budget-exhausted") == 1  # once, not per run


async def test_unhealthy_container_is_restarted(
    prefect_server: str, state_db: str, run_container: RunContainer, tmp_path: Path
) -> None:
    sick = run_container("sick", "exec /bin/agent", healthcheck=health(0.5, "echo stuck; exit 1"))
    started = wait_until(sick, health_is("unhealthy"))["StartedAt"]
    rows = await reconcile_fleet(registry_file(tmp_path, {"sick": sick.name}))
    assert actions(rows) == [("restart", "sick", "done")]
    assert rows[0]["reason"].startswith("stuck; restart 1 of 3")
    wait_until(sick, lambda s: s["StartedAt"] != started and s["Status"] == "running")


async def test_shutdown_stops_managed_containers_and_records_them_stopped(
    prefect_server: str, state_db: str, labels_on: None, run_container: RunContainer, tmp_path: Path
) -> None:
    gentle = run_container("gentle", "exec /bin/agent", agent="gentle")  # exits 0 on SIGTERM
    stubborn = run_container("stubborn", "exec sleep 3600", agent="stubborn")  # PID 1 ignores SIGTERM
    outsider = run_container("outsider", "exec /bin/agent", agent="outsider", managed=False)
    for box in (gentle, stubborn, outsider):
        wait_until(box, status_is("running"))
    registry = registry_file(tmp_path)

    rows = await shutdown_fleet(registry, stop_timeout="1s")

    assert sorted((r["agent"], r["outcome"]) for r in rows) == [("gentle", "stopped"), ("stubborn", "stopped")]
    assert wait_until(gentle, status_is("exited"))["ExitCode"] == 0
    assert wait_until(stubborn, status_is("exited"))["ExitCode"] == 137  # SIGKILL after the timeout
    outsider.reload()
    assert outsider.status == "running"  # not managed: never stopped
    records = await stored("gentle", "stubborn")
    assert {r.state for r in records.values()} == {AgentState.STOPPED}
    assert records["stubborn"].reason == "stopped by shutdown (SIGTERM, SIGKILL after 1s)"

    # The next monitor cycle keeps both stopped: exit 137 after a recorded stop is not a crash.
    after = {row["id"]: row for row in await monitor_fleet(registry, force=True)}
    assert (after["gentle"]["state"], after["stubborn"]["state"], after["outsider"]["state"]) == (
        "stopped",
        "stopped",
        "healthy",
    )


@pytest.mark.parametrize("by", ["parameter", "environment"])
async def test_shutdown_leave_running(
    prefect_server: str,
    state_db: str,
    labels_on: None,
    run_container: RunContainer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    by: str,
) -> None:
    if by == "environment":
        monkeypatch.setenv("AGENTWATCH_SHUTDOWN_LEAVE_RUNNING", "true")
    box = run_container("keeper", "exec /bin/agent", agent="keeper")
    wait_until(box, status_is("running"))
    rows = await shutdown_fleet(registry_file(tmp_path), leave_running=by == "parameter", stop_timeout="1s")
    assert [(r["agent"], r["outcome"]) for r in rows] == [("keeper", "left running")]
    box.reload()
    assert box.status == "running"
    assert await stored("keeper") == {}  # nothing recorded as stopped


async def test_dead_engine_is_unknown_never_failed(
    prefect_server: str, state_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///tmp/agentwatch-no-engine.sock")
    registry = registry_file(tmp_path, {"one": "c1", "two": "c2"})
    rows = await monitor_fleet(registry, force=True)
    assert {(r["state"], r["reason"]) for r in rows} == {("unknown", "docker engine unreachable")}
    with pytest.raises(EngineUnavailable, match="docker engine unreachable"):
        await reconcile_fleet(registry)


def test_cli_reconcile_and_shutdown(
    prefect_server: str,
    state_db: str,
    run_container: RunContainer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    orphan = run_container("cli-orphan", "exec /bin/agent")
    registry = registry_file(tmp_path)
    assert main(["reconcile", registry, "--dry-run", "--orphan-min-age", "0s", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert [(r["action"], r["container"], r["outcome"]) for r in plan] == [("remove", orphan.name, "planned")]
    assert main(["shutdown", registry, "--leave-running", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["outcome"] == "left running"
    monkeypatch.setenv("DOCKER_HOST", "unix:///tmp/agentwatch-no-engine.sock")
    assert main(["reconcile", registry]) == 2
    assert "docker engine unreachable" in capsys.readouterr().err
