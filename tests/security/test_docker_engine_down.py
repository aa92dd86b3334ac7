"""Threat (class 9 of tests/security/README.md): the Docker engine goes away.

- Reconcile and shutdown without an engine end with one clear line, a Failed state whose message
  says why, and an artifact saying why; no traceback in the run's logs.
- Label-registered agents last seen do not vanish: brought back from what the monitor remembered of
  them, each is probed through its last container and reads `unknown` ("docker engine
  unreachable"), never failed. (The monitor stores that memory; see agentwatch.docker.labels.)
Real engine (then a socket with no engine behind it), real Prefect API.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

from agentwatch.docker import DockerEngine
from agentwatch.docker.labels import label_memory, remembered_agents
from agentwatch.errors import EngineUnavailable
from agentwatch.models import AgentState
from agentwatch.probes import probe_many
from agentwatch.registry import parse_registry
from agentwatch.settings import get_settings
from flows.reconcile import reconcile_fleet
from flows.shutdown import shutdown_fleet
from tasks.containers import list_fleet_containers

from ..integration.docker_support import RunContainer, flow_run_logs, status_is, wait_until, write_registry

pytestmark = [pytest.mark.integration, pytest.mark.docker]

NO_ENGINE = "unix:///tmp/agentwatch-no-engine.sock"


@pytest.fixture
def no_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", NO_ENGINE)
    monkeypatch.delenv("AGENTWATCH_DOCKER_HOST", raising=False)


@pytest.mark.parametrize(
    ("run", "key", "flow"),
    [
        pytest.param(
            lambda path: reconcile_fleet(path, return_state=True), "agentwatch-reconcile", "Reconcile", id="reconcile"
        ),
        pytest.param(
            lambda path: shutdown_fleet(path, stop_timeout="1s", return_state=True),
            "agentwatch-shutdown",
            "Shutdown",
            id="shutdown",
        ),
    ],
)
async def test_without_an_engine_a_run_ends_failed_with_one_clear_message(
    prefect_server: str, state_db: str, no_engine: None, tmp_path: Path, run: object, key: str, flow: str
) -> None:
    path = write_registry(tmp_path / "fleet.yaml", [{"id": "one", "probe": {"docker": {"container": "c1"}}}])
    state = await run(path)  # type: ignore[operator]

    assert state.is_failed()
    assert state.message.startswith(f"{flow} cannot run: docker engine unreachable at {NO_ENGINE}")
    with pytest.raises(EngineUnavailable, match="docker engine unreachable"):
        await state.result()  # what a direct caller (the CLI) gets: exit code 2 and this message

    run_id = state.state_details.flow_run_id
    async with get_client() as client:
        (artifact,) = await client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[key]), flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])
            )
        )
    assert f"{flow} did not run" in str(artifact.data) and "docker engine unreachable" in str(artifact.data)

    logs = await flow_run_logs(run_id, until="Finished in state Failed")
    assert not [log.message for log in logs if "Traceback" in log.message]
    # The one clear line, then Prefect's own "Finished in state Failed(<that line>)"; nothing else.
    errors = [log.message for log in logs if log.level >= logging.WARNING]
    assert errors == [state.message, f"Finished in state Failed({state.message!r})"]


async def test_label_agents_last_seen_read_unknown_when_the_engine_is_gone(
    labels_on: None, run_container: RunContainer, monkeypatch: pytest.MonkeyPatch
) -> None:
    box = run_container(
        "session",
        "exec /bin/agent",
        agent="session-9",
        labels={
            "agentwatch.name": "Session nine",
            "agentwatch.label.team": "infra",
            "agentwatch.failure_threshold": "5",
        },
    )
    wait_until(box, status_is("running"))
    registry = parse_registry("agents:\n  - id: editor\n    transport: stdio\n")
    async with DockerEngine.from_settings(get_settings()) as engine:
        seen = await list_fleet_containers(engine, registry, get_settings())
    memory = label_memory(seen.fleet, seen.bound)  # what the monitor stores after a run that saw the engine
    assert set(memory) == {"session-9"}

    monkeypatch.setenv("DOCKER_HOST", NO_ENGINE)
    monkeypatch.delenv("AGENTWATCH_DOCKER_HOST", raising=False)
    fleet, problems = remembered_agents(registry, memory)
    assert problems == [] and fleet.ids == ["editor", "session-9"]
    agent = fleet.get("session-9")
    assert agent is not None and (agent.display_name, agent.labels, agent.source) == (
        "Session nine",
        {"team": "infra"},
        "docker",
    )
    assert agent.policy.failure_threshold == 5
    async with DockerEngine.from_settings(get_settings()) as engine:
        results = {r.agent_id: r for r in await probe_many(fleet.agents, docker=engine)}
    assert (results["session-9"].asserted, results["session-9"].reason) == (
        AgentState.UNKNOWN,
        "docker engine unreachable",
    )
