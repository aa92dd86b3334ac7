"""What a container's engine state means for its agent (agentwatch.docker.observe), on inspect
documents as the engine writes them (no engine needed)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from agentwatch.docker.observe import container_result, unreachable_result
from agentwatch.docker.state import ContainerInfo, parse_engine_time
from agentwatch.models import AgentState as S
from agentwatch.models import Asserted, Cause

NEVER = "0001-01-01T00:00:00Z"


def attrs(
    status: str = "running",
    *,
    health: str | None = None,
    output: str = "",
    exit_code: int = 0,
    oom: bool = False,
    error: str = "",
    restarting: bool = False,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    state: dict[str, Any] = {
        "Status": status,
        "Running": status == "running",
        "Restarting": restarting,
        "OOMKilled": oom,
        "ExitCode": exit_code,
        "Error": error,
        "StartedAt": "2025-03-01T12:00:00.123456789Z",
        "FinishedAt": NEVER if status == "running" else "2025-03-01T12:05:00.5Z",
    }
    if health is not None:
        state["Health"] = {
            "Status": health,
            "Log": [{"ExitCode": 1, "Output": "ok\n"}, {"ExitCode": 1, "Output": output}],
        }
    return {
        "Id": "f" * 64,
        "Name": "/agent-1",
        "Created": "2025-03-01T11:59:59.000000001Z",
        "State": state,
        "RestartCount": 2,
        "Config": {"Image": "agent:1", "Labels": labels or {}},
    }


CASES = [
    pytest.param(attrs(health="healthy"), True, None, "running, healthy", id="running-healthy"),
    pytest.param(attrs(), True, None, "running (no healthcheck)", id="running-no-healthcheck"),
    pytest.param(attrs(health="none"), True, None, "running (no healthcheck)", id="healthcheck-disabled"),
    pytest.param(attrs(health="starting"), False, S.STARTING, "healthcheck starting", id="starting"),
    pytest.param(attrs(health="unhealthy", output="db down\n"), False, None, "db down", id="unhealthy"),
    pytest.param(attrs(health="unhealthy"), False, None, "healthcheck exited with code 1", id="unhealthy-no-output"),
    pytest.param(
        attrs("restarting", restarting=True, exit_code=2),
        False,
        None,
        "restarting (restart count 2, last exit code 2)",
        id="restarting",
    ),
    pytest.param(
        attrs("running", restarting=True),
        False,
        None,
        "restarting (restart count 2, last exit code 0)",
        id="restarting-flag",
    ),
    pytest.param(attrs("paused"), False, None, "paused by the engine", id="paused"),
    pytest.param(attrs("exited", exit_code=0), False, S.STOPPED, "exited with code 0", id="exit-0"),
    pytest.param(attrs("created"), False, S.STOPPED, "created, never started", id="created"),
    pytest.param(attrs("exited", exit_code=3), False, S.FAILED, "exited with code 3", id="exit-3"),
    pytest.param(
        attrs("exited", exit_code=137, oom=True),
        False,
        S.FAILED,
        "killed: out of memory (OOM-killed, exit code 137)",
        id="oom",
    ),
    pytest.param(
        attrs("exited", exit_code=0, oom=True),
        False,
        S.FAILED,
        "killed: out of memory (OOM-killed, exit code 0)",
        id="oom-exit-0",
    ),
    pytest.param(
        attrs("exited", exit_code=127, error="exec: nope"),
        False,
        S.FAILED,
        "exited with code 127: exec: nope",
        id="start-error",
    ),
    pytest.param(attrs("dead", exit_code=1, error="cannot kill"), False, S.FAILED, "dead: cannot kill", id="dead"),
]


@pytest.mark.parametrize(("doc", "ok", "state", "reason"), CASES)
def test_engine_state_maps_to_result(doc: dict[str, Any], ok: bool, state: S | None, reason: str) -> None:
    result = container_result("agent-1", "agent-1", ContainerInfo.from_attrs(doc))
    assert (result.ok, result.asserted) == (ok, state)
    assert result.reason == reason  # the whole text, as the README quotes it
    assert result.details["container"] == "agent-1"


def test_exit_details_are_values() -> None:
    result = container_result("a", "agent-1", ContainerInfo.from_attrs(attrs("exited", exit_code=137, oom=True)))
    assert result.details["exit_code"] == 137
    assert result.details["oom_killed"] is True
    assert datetime.fromisoformat(result.details["finished_at"]) == datetime(2025, 3, 1, 12, 5, 0, 500000, tzinfo=UTC)


def test_missing_container_is_failed_not_found() -> None:
    result = container_result("a", "web-7", None)
    assert result.override == Asserted(S.FAILED, Cause.CONTAINER)
    assert result.reason == "container 'web-7' not found"
    assert result.details["missing"] is True


def test_unreachable_engine_is_unknown_never_failed() -> None:
    result = unreachable_result("a", "connection refused")
    assert result.override == Asserted(S.UNKNOWN, Cause.ENGINE_UNREACHABLE)
    assert result.reason == "docker engine unreachable"


def test_info_reads_labels_and_times() -> None:
    info = ContainerInfo.from_attrs(attrs(labels={"agentwatch.managed": "True", "agentwatch.agent": "x"}))
    assert info.name == "agent-1"
    assert info.managed and info.agent_label == "x"
    assert info.started_at == datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert info.finished_at is None
    assert info.matches("agent-1") and info.matches("f" * 12) and not info.matches("f" * 5)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (NEVER, None),
        ("", None),
        ("2025-03-01T12:00:00Z", datetime(2025, 3, 1, 12, tzinfo=UTC)),
        ("2025-03-01T12:00:00.1Z", datetime(2025, 3, 1, 12, 0, 0, 100000, tzinfo=UTC)),
        ("2025-03-01T14:00:00.123456789+02:00", datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)),
        ("garbage", None),
    ],
)
def test_engine_time(text: str, expected: datetime | None) -> None:
    assert parse_engine_time(text) == expected
