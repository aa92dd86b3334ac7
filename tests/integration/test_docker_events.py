"""What shutdown and reconcile say, read back from a real Prefect test server after they acted on
real containers: the `agentwatch.container.<action>` event of each start, stop, restart and
removal (on the agent's resource, or the container's for an orphan), the agents' state events
and `agent-<id>` artifact versions, `agentwatch.fleet.shutdown`, the `agentwatch-shutdown` and
`agentwatch-reconcile` artifacts and the progress artifact. Everything is read by the flow run
that wrote it, or since the test began, so other tests' writes never count."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

from flows.reconcile import reconcile_fleet
from flows.shutdown import shutdown_fleet

from .docker_support import RunContainer, health, health_is, status_is, wait_until
from .prefect_reads import read_events, wait_for_events

pytestmark = [pytest.mark.integration, pytest.mark.docker]


def registry_file(tmp_path: Path, docker_agents: dict[str, str] | None = None) -> str:
    agents = [{"id": a, "probe": {"docker": {"container": c}}} for a, c in (docker_agents or {}).items()]
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump({"agents": agents}))
    return str(path)


async def run_artifacts(flow_run_id: UUID) -> Counter[str]:
    """The artifacts one flow run wrote, counted by key (or `progress=<value>` for a progress bar)."""
    async with get_client() as client:
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return Counter(a.key or f"{a.type}={float(str(a.data)):g}" for a in artifacts)


async def artifact_data(flow_run_id: UUID, key: str) -> str:
    async with get_client() as client:
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    [artifact] = [a for a in artifacts if a.key == key]
    return str(artifact.data)


async def events_on(resource: str, since: datetime, count: int) -> list[Any]:
    """The agentwatch events on `resource` since `since`, once there are `count` (and a read later)."""
    return await wait_for_events("agentwatch.", [resource], since=since, until=lambda evs: len(evs) >= count)


def by_name(events: list[Any]) -> dict[str, Any]:
    names = [e.event for e in events]
    assert len(names) == len(set(names)), names
    return {e.event: e for e in events}


async def test_shutdown_emits_its_events_and_writes_its_artifacts(
    prefect_server: str, state_db: str, labels_on: None, run_container: RunContainer, tmp_path: Path
) -> None:
    box = run_container("sd-events", "exec /bin/agent", agent="sd-events")
    wait_until(box, status_is("running"))
    since = datetime.now(UTC) - timedelta(seconds=1)

    state = await shutdown_fleet(registry_file(tmp_path), stop_timeout="5s", return_state=True)
    rows = await state.aresult()
    run = state.state_details.flow_run_id
    assert [(r["agent"], r["outcome"]) for r in rows] == [("sd-events", "stopped")]

    events = by_name(await events_on("agentwatch.agent.sd-events", since, 2))
    assert sorted(events) == ["agentwatch.agent.stopped", "agentwatch.container.stopped"]
    stopped = events["agentwatch.container.stopped"]
    assert (stopped.payload["container"], stopped.payload["agent"], stopped.payload["reason"]) == (
        box.name,
        "sd-events",
        "shutdown",
    )
    assert stopped.resource.get("agentwatch.container.id") == box.id
    state_event = events["agentwatch.agent.stopped"]
    assert state_event.payload["to"] == "stopped"
    assert state_event.payload["reason"] == "stopped by shutdown (SIGTERM, SIGKILL after 5s)"

    [fleet] = await shutdown_events(run, since)
    assert fleet.payload == {"leave_running": False, "managed": 1, "stopped": 1, "agent_ids": None}
    assert await run_artifacts(run) == Counter({"agentwatch-shutdown": 1, "agent-sd-events": 1, "progress=100": 1})
    markdown = await artifact_data(run, "agentwatch-shutdown")
    assert box.name in markdown and "stopped" in markdown
    assert "stopped" in await artifact_data(run, "agent-sd-events")


async def test_shutdown_leave_running_says_so_and_stops_nothing(
    prefect_server: str, state_db: str, labels_on: None, run_container: RunContainer, tmp_path: Path
) -> None:
    box = run_container("sd-keep", "exec /bin/agent", agent="sd-keep")
    wait_until(box, status_is("running"))
    since = datetime.now(UTC) - timedelta(seconds=1)
    state = await shutdown_fleet(registry_file(tmp_path), leave_running=True, return_state=True)
    run = state.state_details.flow_run_id
    [fleet] = await shutdown_events(run, since)
    assert fleet.payload == {"leave_running": True, "managed": 1, "stopped": 0, "agent_ids": None}
    assert await run_artifacts(run) == Counter({"agentwatch-shutdown": 1})  # no stop, no progress, no state
    assert "leave_running" in await artifact_data(run, "agentwatch-shutdown")
    # Posted before the fleet event, which is in: nothing about the agent.
    assert await read_events("agentwatch.", ["agentwatch.agent.sd-keep"], since=since) == []


async def shutdown_events(run: UUID, since: datetime) -> list[Any]:
    """The `agentwatch.fleet.shutdown` events the run emitted (the fleet resource is shared)."""

    def of_run(events: list[Any]) -> list[Any]:
        return [e for e in events if any(r.id == f"prefect.flow-run.{run}" for r in e.related)]

    events = await wait_for_events(
        "agentwatch.fleet.", ["agentwatch.fleet"], since=since, until=lambda evs: bool(of_run(evs))
    )
    ours = of_run(events)
    assert [e.event for e in ours] == ["agentwatch.fleet.shutdown"]  # that name exactly: automations match it
    return ours


async def test_reconcile_emits_an_event_per_container_action_and_writes_its_artifacts(
    prefect_server: str,
    state_db: str,
    run_container: RunContainer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AGENTWATCH_RESTART_BACKOFF", "0s")
    crash = run_container("rc-crash", "exit 3")
    sick = run_container("rc-sick", "exec /bin/agent", healthcheck=health(0.5, "echo stuck; exit 1"))
    orphan = run_container("rc-orphan", "exec /bin/agent")  # managed, no agent
    wait_until(crash, status_is("exited"))
    wait_until(sick, health_is("unhealthy"))
    wait_until(orphan, status_is("running"))
    registry = registry_file(tmp_path, {"rc-crash": crash.name, "rc-sick": sick.name})
    since = datetime.now(UTC) - timedelta(seconds=1)

    state = await reconcile_fleet(registry, orphan_min_age="0s", return_state=True)
    rows = await state.aresult()
    run = state.state_details.flow_run_id
    assert sorted((r["action"], r["agent"], r["outcome"]) for r in rows) == [
        ("record", "rc-crash", "done"),
        ("remove", "-", "done"),
        ("restart", "rc-sick", "done"),
        ("start", "rc-crash", "done"),
    ]

    crashed = by_name(await events_on("agentwatch.agent.rc-crash", since, 3))
    assert sorted(crashed) == ["agentwatch.agent.failed", "agentwatch.agent.starting", "agentwatch.container.started"]
    assert crashed["agentwatch.agent.failed"].payload["reason"] == "exited with code 3"
    assert crashed["agentwatch.container.started"].payload["container"] == crash.name
    restarted = by_name(await events_on("agentwatch.agent.rc-sick", since, 2))
    assert sorted(restarted) == ["agentwatch.agent.starting", "agentwatch.container.restarted"]
    assert restarted["agentwatch.container.restarted"].payload["reason"].startswith("stuck; restart 1 of 3")
    removed = by_name(await events_on(f"agentwatch.container.{orphan.id}", since, 2))
    assert sorted(removed) == ["agentwatch.container.removed", "agentwatch.container.stopped"]
    assert removed["agentwatch.container.stopped"].payload["reason"] == "orphan removal"
    assert removed["agentwatch.container.removed"].payload["container"] == orphan.name

    assert await run_artifacts(run) == Counter(
        {"agentwatch-reconcile": 1, "agent-rc-crash": 2, "agent-rc-sick": 1, "progress=100": 1}
    )
    markdown = await artifact_data(run, "agentwatch-reconcile")
    assert all(name in markdown for name in (crash.name, sick.name, orphan.name)), markdown
    assert "dry run" not in markdown
