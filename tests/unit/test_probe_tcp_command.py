"""The tcp and command probes, and run_probe's dispatch (unmanaged, elsewhere, bugs)."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from agentwatch.docker import DockerEngine
from agentwatch.models import AgentState, Asserted, Cause, ProbeResult
from agentwatch.probes import PROBES, ProbeContext, make_http_client, probe_many, run_probe
from agentwatch.registry import AgentSpec, validate_registry


def agent(probe: dict[str, Any] | None = None, agent_id: str = "agent", timeout: str = "1s", **extra: Any) -> AgentSpec:
    raw: dict[str, Any] = {"id": agent_id, "timeout": timeout, **extra}
    if probe is not None:
        raw["probe"] = probe
    return validate_registry({"agents": [raw]}).agents[0]


async def check(spec: AgentSpec) -> ProbeResult:
    async with make_http_client() as client:
        return await run_probe(spec, http=client)


@pytest.fixture
def listening_port() -> Iterator[int]:
    sock = socket.create_server(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


@pytest.fixture
def closed_port() -> int:
    sock = socket.create_server(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    sock.close()
    return port


def assert_dead(pid: int) -> None:
    """The process is gone, or a zombie awaiting a reaper that is not us (killed either way)."""
    deadline = time.monotonic() + 2
    while True:
        try:
            proc = psutil.Process(pid)
            if proc.status() == psutil.STATUS_ZOMBIE and proc.ppid() != os.getpid():
                return  # orphaned and killed; reaping it is the init process's job
        except psutil.NoSuchProcess:
            return
        assert time.monotonic() < deadline, f"process {pid} still alive: {proc.status()}"
        time.sleep(0.02)


# tcp


async def test_tcp_ok(listening_port: int) -> None:
    result = await check(agent({"tcp": {"host": "127.0.0.1", "port": listening_port}}))
    assert result.ok, result.reason
    assert result.details == {"host": "127.0.0.1", "port": listening_port}
    assert result.latency_ms is not None


async def test_tcp_refused(closed_port: int) -> None:
    result = await check(agent({"tcp": {"host": "127.0.0.1", "port": closed_port}}))
    assert (result.ok, result.reason) == (False, "connection refused")


async def test_tcp_timeout(listening_port: int) -> None:
    # A deadline too short for any connect: the timeout path, without an unroutable address.
    result = await check(agent({"tcp": {"host": "127.0.0.1", "port": listening_port}}, timeout="0.000001"))
    assert not result.ok
    assert result.reason.startswith("timed out after ")
    assert result.details["port"] == listening_port


# command


async def test_command_ok() -> None:
    result = await check(agent({"command": "echo fine; echo noise >&2"}))
    assert result.ok, result.reason
    assert result.details == {"exit_code": 0}


async def test_command_exit_code_and_stderr_tail() -> None:
    run = "printf 'x%.0s' $(seq 1 600) >&2; echo >&2; echo 'db unreachable' >&2; echo out; exit 3"
    result = await check(agent({"command": run}))
    assert not result.ok
    assert result.reason == "exit code 3: db unreachable"
    assert result.details["exit_code"] == 3
    tail = result.details["stderr_tail"]
    assert len(tail) == 500 and tail.endswith("x\ndb unreachable\n")


async def test_command_exit_without_stderr() -> None:
    result = await check(agent({"command": "exit 1"}))
    assert (result.reason, result.details["stderr_tail"]) == ("exit code 1", "")


async def test_command_killed_by_signal() -> None:
    result = await check(agent({"command": "kill -KILL $$"}))
    assert not result.ok and result.reason == "killed by signal SIGKILL"


async def test_command_timeout_kills_and_reaps(tmp_path: Path) -> None:
    timeout = 0.5
    shell_pid, child_pid = tmp_path / "shell", tmp_path / "child"
    # A background grandchild too, so killing only the shell would not be enough.
    run = f"sleep 30 & echo $! > {child_pid}; echo $$ > {shell_pid}; sleep 30; wait"
    # The session may already have children of its own (the Prefect test server): compare.
    before = set(psutil.Process().children(recursive=True))
    result = await check(agent({"command": run}, timeout="0.5s"))
    assert (result.ok, result.reason) == (False, "timed out after 0.5s")
    # It waited for the timeout, and nowhere near the 30 s the command would take.
    assert result.latency_ms is not None and timeout * 1000 * 0.9 <= result.latency_ms < 10 * timeout * 1000
    assert_dead(int(shell_pid.read_text()))
    assert_dead(int(child_pid.read_text()))
    assert set(psutil.Process().children(recursive=True)) == before  # no zombie of ours either


async def test_command_sleep_times_out() -> None:
    before = set(psutil.Process().children(recursive=True))
    result = await check(agent({"command": "sleep 30"}, timeout="0.5s"))
    assert result.reason == "timed out after 0.5s"
    assert set(psutil.Process().children(recursive=True)) == before


# dispatch


class NoNetwork(httpx.AsyncBaseTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"unmanaged agent touched the network: {request.url}")


@pytest.mark.parametrize(
    "extra",
    [
        {"transport": "stdio", "probe": {"http": {"url": "http://127.0.0.1:9/health"}}},
        {"probe": {"http": {"url": "acp://..."}}},
        {"endpoint": "acp://agent-7"},
    ],
    ids=["stdio", "placeholder-url", "placeholder-endpoint"],
)
async def test_unmanaged_agents_are_skipped_offline(extra: dict[str, Any]) -> None:
    spec = agent(**extra)
    async with httpx.AsyncClient(transport=NoNetwork()) as client:
        result = await run_probe(spec, http=client)
    assert (result.ok, result.probed, result.override) == (True, False, Asserted(AgentState.UNMANAGED, Cause.UNMANAGED))
    assert result.reason == spec.unmanaged_reason and result.latency_ms is None


async def test_docker_probe_without_an_engine_is_unknown() -> None:
    # The docker backend is registered (tests/integration/test_docker_probe.py drives a real engine).
    spec = agent({"docker": {"container": "agent-1"}})
    async with make_http_client() as client, DockerEngine("unix:///nonexistent/agentwatch-docker.sock") as engine:
        result = await run_probe(spec, http=client, docker=engine)
    assert (result.ok, result.asserted, result.reason) == (False, AgentState.UNKNOWN, "docker engine unreachable")


async def test_docker_probe_given_no_engine_checks_nothing() -> None:
    # The caller passes the engine; a batch given none probes no docker agent, and says which.
    result = await check(agent({"docker": {"container": "agent-1"}}, "box-1"))
    assert (result.ok, result.probed) == (False, False)
    assert result.reason == "agent 'box-1': no Docker engine given to the probe batch"


async def test_heartbeat_agents_are_skipped_without_the_monitors_beats() -> None:
    # Only the monitor reads beats from the store (tests/unit/test_heartbeat_check.py covers the check).
    result = await check(agent({"heartbeat": {"timeout": "30s"}}))
    assert (result.ok, result.probed, result.reason) == (False, False, "no beats loaded: judged by the monitor")


async def test_dispatch_runs_the_kinds_probe_with_the_callers_context(monkeypatch: pytest.MonkeyPatch) -> None:
    """run_probe calls the probe PROBES names for the agent's kind, with the agent and what the
    caller shares (client, body cap, engine connection), and scrubs what the probe says."""
    token = "Bearer s3cret-t0ken-of-the-agent"
    calls: list[tuple[AgentSpec, ProbeContext]] = []

    async def fake(spec: AgentSpec, ctx: ProbeContext) -> ProbeResult:
        calls.append((spec, ctx))
        return ProbeResult(spec.id, ok=False, reason=f"the target echoed {token}", details={"echo": token})

    monkeypatch.setitem(PROBES, "http", fake)
    spec = agent({"http": {"url": "http://127.0.0.1:9/health", "headers": {"Authorization": token}}})
    inspector = object()
    async with make_http_client() as client:
        result = await run_probe(spec, http=client, max_body_bytes=123, docker=inspector)  # type: ignore[arg-type]
    ((given, ctx),) = calls
    assert given is spec and (ctx.http, ctx.max_body_bytes, ctx.docker) == (client, 123, inspector)
    assert (result.agent_id, result.ok, result.probed) == ("agent", False, True)
    # The one boundary: the probe's own words leave the dispatcher scrubbed of the header value.
    assert "s3cret-t0ken" not in result.reason + str(result.details)
    assert result.reason == "the target echoed ***" and result.details == {"echo": "***"}


async def test_kind_without_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(PROBES, "command")
    result = await check(agent({"command": "true"}))
    assert (result.ok, result.probed) == (False, False)
    assert result.reason == "no probe registered for kind 'command'"


async def test_probe_bug_fails_only_its_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(spec: AgentSpec, ctx: ProbeContext) -> ProbeResult:
        raise ValueError("boom")

    monkeypatch.setitem(PROBES, "tcp", broken)
    agents = [
        agent({"tcp": {"host": "127.0.0.1", "port": 9}}, "broken"),
        agent({"command": "true"}, "fine"),
    ]
    broken_result, fine = await probe_many(agents)
    assert (broken_result.ok, broken_result.reason) == (False, "probe error: boom")
    assert broken_result.details["error_type"] == "ValueError"
    assert fine.ok


async def test_probe_many_empty_and_bad_concurrency() -> None:
    assert await probe_many([]) == []
    with pytest.raises(ValueError, match="concurrency"):
        await probe_many([], concurrency=0)
