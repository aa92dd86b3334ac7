"""The acp probe against real agent processes of the tests' own (tests/agents/acp_agent.py): one
that speaks the protocol, and ones that hang, answer garbage, speak another version, fail or exit.
Each test also checks that nothing the probe started is left running."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from agentwatch.models import AgentState, Asserted, Cause, ProbeResult
from agentwatch.probes import run_probe
from agentwatch.registry import AgentSpec, validate_registry

AGENT = Path(__file__).resolve().parents[1] / "agents" / "acp_agent.py"


def acp_agent(mode: str, *, timeout: str = "5s", env: dict[str, Any] | None = None, **extra: Any) -> AgentSpec:
    probe = {"acp": {"command": f"{sys.executable} {AGENT} {mode}", "env": env or {}}}
    return validate_registry({"agents": [{"id": "acp-1", "timeout": timeout, "probe": probe, **extra}]}).agents[0]


async def check(spec: AgentSpec) -> ProbeResult:
    async with httpx.AsyncClient() as client:
        return await run_probe(spec, http=client)


def assert_dead(pid: int) -> None:
    """The process is gone, or a zombie awaiting a reaper that is not us (killed either way)."""
    deadline = time.monotonic() + 5
    while True:
        try:
            proc = psutil.Process(pid)
            if proc.status() == psutil.STATUS_ZOMBIE and proc.ppid() != os.getpid():
                return
        except psutil.NoSuchProcess:
            return
        assert time.monotonic() < deadline, f"process {pid} still alive: {proc.status()}"
        time.sleep(0.02)


def pids(pid_file: Path) -> list[int]:
    return [int(p) for p in pid_file.read_text().split()]


@pytest.fixture
def no_leftovers() -> Any:
    """Our own children before and after the test are the same: nothing started and left behind."""
    before = set(psutil.Process().children(recursive=True))
    yield
    deadline = time.monotonic() + 5
    while (left := set(psutil.Process().children(recursive=True)) - before) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not left


async def test_healthy_agent_reports_its_identity(tmp_path: Path, no_leftovers: None) -> None:
    pid_file = tmp_path / "pids"
    env = {"AGENT_PID_FILE": str(pid_file), "AGENT_NAME": "test-agent", "AGENT_VERSION": "0.9.1"}
    result = await check(acp_agent("ok", env=env))
    assert (result.ok, result.reason) == (True, "")
    assert result.details["identity"] == {"name": "test-agent", "version": "0.9.1", "protocol": "1"}
    assert result.details["protocol_version"] == 1
    assert result.details["agent_capabilities"] == ["loadSession", "promptCapabilities"]
    assert result.latency_ms is not None
    for pid in pids(pid_file):  # the agent and its own child: ended with the check
        assert_dead(pid)


async def test_an_agent_that_ignores_the_end_of_stdin_is_killed(tmp_path: Path, no_leftovers: None) -> None:
    pid_file = tmp_path / "pids"
    result = await check(acp_agent("stubborn", env={"AGENT_PID_FILE": str(pid_file)}))
    assert result.ok
    for pid in pids(pid_file):
        assert_dead(pid)


async def test_hanging_agent_times_out_and_is_killed(tmp_path: Path, no_leftovers: None) -> None:
    pid_file = tmp_path / "pids"
    result = await check(acp_agent("hang", timeout="1s", env={"AGENT_PID_FILE": str(pid_file)}))
    assert (result.ok, result.reason) == (False, "timed out after 1s")
    for pid in pids(pid_file):
        assert_dead(pid)


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("garbage", "the agent wrote a line that is not JSON-RPC: 'Welcome to the agent! Type /help for help.'"),
        ("version", "the agent speaks ACP protocol version 2; this probe supports version 1"),
        ("error", "initialize failed: JSON-RPC error -32603: model not configured"),
        ("no-caps", "initialize answer lacks agentCapabilities"),
        ("exit", "the agent exited with code 3 before answering initialize: model backend unreachable"),
    ],
)
async def test_failures_say_what_went_wrong(mode: str, reason: str, no_leftovers: None) -> None:
    result = await check(acp_agent(mode))
    assert (result.ok, result.reason) == (False, reason)


async def test_output_past_the_byte_cap(no_leftovers: None) -> None:
    async with httpx.AsyncClient() as client:
        result = await run_probe(acp_agent("ok"), http=client, max_body_bytes=120)
    # Its notification fits in 120 bytes; the answer, after it, does not.
    assert (result.ok, result.reason) == (
        False,
        "no answer to initialize in the first 120 bytes the agent wrote (AGENTWATCH_MAX_BODY_BYTES)",
    )


async def test_unsupported_version_still_records_the_identity() -> None:
    result = await check(acp_agent("version", env={"AGENT_VERSION": "2.0.0"}))
    assert not result.ok and result.details["identity"]["protocol"] == "2"
    assert result.details["identity"]["version"] == "2.0.0"


async def test_a_command_that_does_not_exist() -> None:
    result = await check(
        validate_registry({"agents": [{"id": "a", "probe": {"acp": {"command": "no-such-agent-xyz --acp"}}}]}).agents[0]
    )
    assert not result.ok
    assert result.reason.startswith("the agent exited with code 127 before answering initialize:")
    assert "not found" in result.reason


async def test_env_from_the_monitors_environment_and_never_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_AGENT_KEY", "sk-live-0123456789")
    result = await check(acp_agent("leak", env={"AGENT_SECRET": {"env": "TEST_AGENT_KEY"}}))
    assert result.reason == "the agent exited with code 1 before answering initialize: auth failed with key ***"
    assert "sk-live" not in repr(result)


async def test_literal_env_values_reach_the_agent() -> None:
    result = await check(acp_agent("ok", env={"AGENT_NAME": "literal-name"}))
    assert result.ok and result.details["identity"]["name"] == "literal-name"


async def test_a_missing_environment_variable_fails_without_starting_anything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_AGENT_NOT_SET", raising=False)
    result = await check(acp_agent("ok", env={"AGENT_SECRET": {"env": "TEST_AGENT_NOT_SET"}}))
    assert (result.ok, result.reason) == (
        False,
        "environment variable TEST_AGENT_NOT_SET (for the agent's AGENT_SECRET) is not set",
    )


async def test_stdio_agents_with_an_acp_probe_are_probed_and_others_are_not() -> None:
    probed = await check(acp_agent("ok", transport="stdio"))
    assert probed.ok and probed.probed
    listed = validate_registry({"agents": [{"id": "ed", "transport": "stdio", "probe": {"command": "true"}}]}).agents[0]
    result = await check(listed)
    assert (result.probed, result.override) == (False, Asserted(AgentState.UNMANAGED, Cause.UNMANAGED))


def test_registry_refuses_a_container_name_that_reads_as_an_option() -> None:
    from agentwatch.errors import RegistryError

    with pytest.raises(RegistryError) as caught:
        validate_registry({"agents": [{"id": "a", "probe": {"acp": {"command": "x", "container": "--privileged"}}}]})
    assert [p.field for p in caught.value.problems] == ["probe.acp.container"]
