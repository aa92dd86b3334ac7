"""The docker probe and label registration against a real Docker engine: real HEALTHCHECKs, real
exit codes, a real OOM kill under a memory limit, and an engine that is not there."""

from __future__ import annotations

from typing import Any

import docker as docker_py
import httpx
import pytest

from agentwatch.docker import DockerEngine, with_label_agents
from agentwatch.docker.state import AGENT_LABEL
from agentwatch.models import AgentState, ProbeResult
from agentwatch.probes import probe_many, run_probe
from agentwatch.registry import parse_registry
from agentwatch.settings import get_settings

from .docker_support import RunContainer, health, health_is, status_is, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.docker]


async def probe(container: Any | str, **policy: Any) -> ProbeResult:
    ref = container if isinstance(container, str) else container.name
    fields = "".join(f"\n    {k}: {v}" for k, v in policy.items())
    registry = parse_registry(f"agents:\n  - id: agent-1\n    probe: {{docker: {{container: {ref}}}}}{fields}\n")
    async with httpx.AsyncClient() as http, DockerEngine.from_settings(get_settings()) as engine:
        return await run_probe(registry.agents[0], http=http, docker=engine)


async def test_running_and_healthy(run_container: RunContainer) -> None:
    box = run_container("healthy", "exec /bin/agent", healthcheck=health(0.5))
    wait_until(box, health_is("healthy"))
    result = await probe(box)
    assert (result.ok, result.asserted, result.reason) == (True, None, "running, healthy")
    assert result.details["health"] == "healthy"


async def test_running_without_healthcheck_is_healthy(run_container: RunContainer) -> None:
    box = run_container("plain", "exec /bin/agent")
    wait_until(box, status_is("running"))
    result = await probe(box)
    assert result.ok and result.reason == "running (no healthcheck)"


async def test_unhealthy_by_its_healthcheck(run_container: RunContainer) -> None:
    box = run_container("sick", "exec /bin/agent", healthcheck=health(0.5, "echo model backend down; exit 1"))
    wait_until(box, health_is("unhealthy"))
    result = await probe(box)
    assert not result.ok and result.asserted is None  # a counted failure: degraded, then unhealthy
    assert result.reason == "model backend down"


async def test_starting_inside_start_period(run_container: RunContainer) -> None:
    box = run_container("warming", "exec /bin/agent", healthcheck=health(0.5, "exit 1", start_period=60))
    wait_until(box, status_is("running"))
    result = await probe(box)
    assert result.asserted is AgentState.STARTING


@pytest.mark.parametrize(
    ("command", "state", "reason"),
    [
        pytest.param("exit 0", AgentState.STOPPED, "exited with code 0", id="exit-0"),
        pytest.param("exit 3", AgentState.FAILED, "exited with code 3", id="exit-3"),
    ],
)
async def test_exit_codes(run_container: RunContainer, command: str, state: AgentState, reason: str) -> None:
    box = run_container("exits", command)
    wait_until(box, status_is("exited"))
    result = await probe(box)
    assert (result.asserted, result.reason) == (state, reason)
    assert result.details["exit_code"] == int(command.split()[-1])


async def test_oom_killed_under_a_memory_limit(run_container: RunContainer) -> None:
    box = run_container("hungry", "head -c 200m /dev/zero | tail", mem_limit="16m", memswap_limit="16m")
    state = wait_until(box, status_is("exited"))
    assert state["OOMKilled"] is True
    result = await probe(box)
    assert result.asserted is AgentState.FAILED
    assert "out of memory" in result.reason
    assert result.details["oom_killed"] is True


async def test_missing_container(docker: docker_py.DockerClient) -> None:
    result = await probe("aw-no-such-container")
    assert result.asserted is AgentState.FAILED
    assert "not found" in result.reason


async def test_restarting_is_a_counted_failure(run_container: RunContainer) -> None:
    box = run_container("flapping", "exit 1", restart_policy={"Name": "always"})
    # The engine's restart delay doubles from 100 ms: after a few restarts the container spends
    # nearly all its time "restarting", so the probe's own inspect sees it there too.
    wait_until(box, lambda s: s.get("Restarting") and box.attrs["RestartCount"] >= 4)
    result = await probe(box)
    assert not result.ok and result.asserted is None
    assert result.reason.startswith("restarting")


async def test_dead_engine_is_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///tmp/agentwatch-no-engine.sock")
    monkeypatch.delenv("AGENTWATCH_DOCKER_HOST", raising=False)
    registry = parse_registry(
        "agents:\n" + "".join(f"  - id: a-{i}\n    probe: {{docker: {{container: c{i}}}}}\n" for i in range(3))
    )
    async with DockerEngine.from_settings(get_settings()) as engine:
        results = await probe_many(registry.agents, docker=engine)
    assert {(r.asserted, r.reason) for r in results} == {(AgentState.UNKNOWN, "docker engine unreachable")}
    assert "agentwatch-no-engine.sock" in results[0].details["error"]


async def test_label_registration(run_container: RunContainer, docker_scope: str) -> None:
    run_container("s1", "exec /bin/agent", agent="session-1", labels={"agentwatch.failure_threshold": "5"})
    run_container("s2", "exec /bin/agent", agent="worker-1", labels={"agentwatch.name": "from labels"})
    run_container("bad", "exec /bin/agent", agent="Bad Id")
    registry = parse_registry("agents:\n  - id: worker-1\n    name: from registry\n    probe: {command: 'true'}\n")
    async with DockerEngine(scope=docker_scope) as engine:
        listed = await engine.list_containers({AGENT_LABEL: None})
    fleet, problems = with_label_agents(registry, listed)
    by_id = {a.id: a for a in fleet.agents}
    assert set(by_id) == {"worker-1", "session-1"}
    assert by_id["worker-1"].display_name == "from registry"  # the registry entry wins
    assert by_id["session-1"].policy.failure_threshold == 5
    # The container that claims registry agent worker-1 is reported, and is not worker-1.
    assert [p.agent for p in problems] == ["worker-1", "Bad Id"]
    assert "claims registry agent 'worker-1'" in problems[0].message


async def test_engine_errors_are_translated(docker: docker_py.DockerClient) -> None:
    async with DockerEngine() as engine:
        assert await engine.inspect("aw-no-such-container") is None
        await engine.remove("aw-no-such-container")  # already gone counts as removed
    async with DockerEngine("unix:///tmp/agentwatch-no-engine.sock") as dead:
        with pytest.raises(Exception, match="docker engine unreachable"):
            await dead.ping()


async def test_example_agent_image(
    docker: docker_py.DockerClient, example_image: str, run_container: RunContainer
) -> None:
    """deployments/agent-image: its own HEALTHCHECK (timing shortened) with a start period; starting,
    then healthy; SIGTERM -> exit 0, a stop, not a failure."""
    check = docker.images.get(example_image).attrs["Config"]["Healthcheck"]
    assert check["StartPeriod"] >= 10 * 1_000_000_000
    box = run_container(
        "example",
        image=example_image,
        environment={"AGENT_WARMUP": "2"},
        healthcheck=health(0.5, None, start_period=20),
    )
    wait_until(box, status_is("running"))
    assert (await probe(box)).asserted is AgentState.STARTING
    wait_until(box, health_is("healthy"))
    assert (await probe(box)).ok
    box.stop(timeout=5)
    assert (await probe(box)).asserted is AgentState.STOPPED
