"""The README's Docker table ("| the engine says | the agent is |"), row by row, against the one
interpretation of a container's state (agentwatch.docker.observe) and the health policy after it.

The table is parsed from README.md: each row's engine state has a container here, and the state
and the quoted reason text the README promises are compared exactly (not as substrings). A row
added to the README without a container here, or a reason reworded on either side, fails.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agentwatch.docker.observe import container_result, unreachable_result
from agentwatch.docker.state import ContainerInfo
from agentwatch.models import AgentRecord, AgentState, Asserted, Cause, ProbeResult
from agentwatch.policy import evaluate
from agentwatch.registry import Policy

README = Path(__file__).resolve().parents[2] / "README.md"
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
HEALTH_OUTPUT = "db down: connection refused on 5432"
REF = "x"  # the registry's `docker: {container: x}`, named in "container 'x' not found"


def docker_table() -> dict[str, str]:
    """The README's Docker table: engine state -> what the agent is."""
    section = README.read_text(encoding="utf-8").split("\n## Docker agents\n", 1)[1].split("\n## ", 1)[0]
    lines = section.split("| the engine says | the agent is |", 1)[1].splitlines()[2:]
    rows = {}
    for line in lines:
        if not line.startswith("|"):
            break
        engine, agent = (cell.strip() for cell in line.strip().strip("|").split("|", 1))
        rows[engine] = agent
    return rows


def box(status: str, **fields: object) -> ContainerInfo:
    return ContainerInfo(id="c" * 64, name="agent-1", status=status, **fields)  # type: ignore[arg-type]


# One or more containers per README row (the row's first cell, exactly), and the exit code or
# reference its reason text names. None: the engine was unreachable.
CONTAINERS: dict[str, list[ContainerInfo | str | None]] = {
    "running, health `healthy`": [box("running", health="healthy")],
    "running, no HEALTHCHECK": [box("running")],
    "running, health `starting`": [box("running", health="starting")],
    "running, health `unhealthy`": [box("running", health="unhealthy", health_output=HEALTH_OUTPUT, health_exit=1)],
    "restarting, paused": [box("restarting", exit_code=1, restart_count=4), box("paused")],
    "exited 0": [box("exited", exit_code=0)],
    "exited non-zero": [box("exited", exit_code=3), box("exited", exit_code=255)],
    "OOM-killed": [box("exited", exit_code=137, oom_killed=True)],
    "no such container": [REF],
    "engine unreachable": [None],
}


def observe(container: ContainerInfo | str | None) -> ProbeResult:
    if container is None:
        return unreachable_result("a", "connection refused (unix:///var/run/docker.sock)")
    if isinstance(container, str):
        return container_result("a", container, None)
    return container_result("a", REF, container)


def test_every_row_of_the_readme_table_has_a_container() -> None:
    assert list(docker_table()) == list(CONTAINERS)


def _cases() -> list[object]:
    table = docker_table()
    return [
        pytest.param(row, table.get(row, "(not in the README)"), c, id=f"{re.sub(r'[^a-z0-9]+', '-', row.lower())}{i}")
        for row, containers in CONTAINERS.items()
        for i, c in enumerate(containers)
    ]


@pytest.mark.parametrize(("row", "promised", "container"), _cases())
def test_the_container_is_what_the_readme_says(row: str, promised: str, container: ContainerInfo | str | None) -> None:
    result = observe(container)
    quoted = re.findall(r'"([^"]*)"', promised)
    state = re.match(r"`([a-z]+)`", promised)
    policy = Policy(failure_threshold=3)

    if promised.startswith("healthy"):
        assert (result.ok, result.override) == (True, None)
        assert evaluate(None, result, policy, T0).record.state is AgentState.HEALTHY
    elif promised == "starting":
        assert (result.ok, result.override) == (False, Asserted(AgentState.STARTING, Cause.CONTAINER))
        assert evaluate(None, result, policy, T0).record.state is AgentState.STARTING
    elif promised.startswith("a failed check"):
        # Counted by the policy like any failed check: degraded, then unhealthy at the threshold.
        assert (result.ok, result.override) == (False, None)
        states, record = [], None
        for n in range(3):
            record = evaluate(record, result, policy, T0 + timedelta(minutes=n)).record
            states.append(record.state)
        assert states == [AgentState.DEGRADED, AgentState.DEGRADED, AgentState.UNHEALTHY]
        if "the last healthcheck output" in promised:
            assert result.reason == HEALTH_OUTPUT
    else:
        assert state is not None, f"README row {row!r}: no state in {promised!r}"
        expected = AgentState(state.group(1))
        cause = Cause.ENGINE_UNREACHABLE if expected is AgentState.UNKNOWN else Cause.CONTAINER
        assert (result.ok, result.override) == (False, Asserted(expected, cause))
        if quoted:
            code = str(container.exit_code) if isinstance(container, ContainerInfo) else "N"
            assert result.reason == quoted[0].replace("exited with code N", f"exited with code {code}").replace(
                "'x'", f"'{REF}'"
            )
        elif row == "exited 0":
            assert result.reason == "exited with code 0"  # the README gives no text: "exited with code N"
        else:
            pytest.fail(f"README row {row!r} gives no reason text: add one to the README or to this test")
        if expected is AgentState.UNKNOWN:  # "never failed": however often the engine is away
            record = AgentRecord("a", AgentState.HEALTHY, since=T0, first_seen=T0, version=1)
            for n in range(5):
                record = evaluate(record, result, policy, T0 + timedelta(minutes=n)).record
                assert record.state is AgentState.UNKNOWN and record.failures == 0
        else:
            assert evaluate(None, result, policy, T0).record.state is expected


def test_the_exact_reason_texts() -> None:
    """The texts of the README's table, spelled out (the parsed test above would follow a README typo)."""
    assert observe(box("exited", exit_code=3)).reason == "exited with code 3"
    assert observe(box("exited", exit_code=0)).reason == "exited with code 0"
    assert observe(box("exited", exit_code=137, oom_killed=True)).reason == (
        "killed: out of memory (OOM-killed, exit code 137)"
    )
    assert observe("x").reason == "container 'x' not found"
    assert observe(None).reason == "docker engine unreachable"
    assert observe(box("running", health="unhealthy", health_output=HEALTH_OUTPUT)).reason == HEALTH_OUTPUT
