"""The agent-protocol probes end to end: a registry file of ACP, MCP and A2A agents probed as the
monitor probes (probe_many); MCP against the official SDK's Streamable HTTP server in both eras;
`tls_min_days` against a real TLS server whose certificates the tests make; and ACP in a Docker
container through `docker exec`."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from agentwatch.demo import demo_registry, serve_in_thread
from agentwatch.models import ProbeResult
from agentwatch.probes import probe_many, run_probe
from agentwatch.registry import parse_registry, validate_registry

from ..agents.servers import MODERN, Mcp, McpHandler, Routes, RoutesHandler, serve
from ..agents.tls import TestPki
from .docker_support import RunContainer, status_is, wait_until

pytestmark = pytest.mark.integration

ACP_AGENT = Path(__file__).resolve().parents[1] / "agents" / "acp_agent.py"
CARD = {
    "name": "Recipe Agent",
    "description": "Helps with recipes",
    "version": "1.4.0",
    "supportedInterfaces": [
        {"url": "https://recipes.example/a2a", "protocolBinding": "JSONRPC", "protocolVersion": "1.0"}
    ],
    "capabilities": {},
    "defaultInputModes": ["text/plain"],
    "defaultOutputModes": ["text/plain"],
    "skills": [],
}


async def test_a_fleet_of_protocol_agents_from_a_registry_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_ACP_TOKEN", "acp-secret-value")
    with (
        serve(McpHandler, Mcp(eras=("modern",))) as modern,
        serve(McpHandler, Mcp(eras=("legacy",), sse=True)) as legacy,
        serve(
            RoutesHandler, Routes({"/.well-known/agent-card.json": (200, CARD), "/health": (200, {"status": "ok"})})
        ) as a2a,
    ):
        registry = parse_registry(
            f"""
defaults:
  timeout: 5s
agents:
  - id: editor-agent
    transport: stdio
    probe:
      acp:
        command: "{sys.executable} {ACP_AGENT} ok"
        env: {{AGENT_NAME: fleet-agent, AGENT_SECRET: {{env: TEST_ACP_TOKEN}}}}
  - id: editor-agent-unprobed
    transport: stdio
  - id: tools-modern
    probe: {{mcp: {{url: "{modern}/mcp"}}}}
  - id: tools-legacy
    probe: {{mcp: {{url: "{legacy}/mcp", headers: {{X-Team: infra}}}}}}
  - id: recipes
    probe: {{a2a: {{url: "{a2a}"}}}}
  - id: web
    probe: {{http: {{url: "{a2a}/health", json: {{path: $.status, equals: ok}}}}}}
"""
        )
        results = {r.agent_id: r for r in await probe_many(registry.agents, concurrency=8)}
    assert {k: (r.ok, not r.probed, r.reason) for k, r in results.items()} == {
        "editor-agent": (True, False, ""),
        "editor-agent-unprobed": (True, True, "stdio transport: supervised by its own process manager"),
        "tools-modern": (True, False, ""),
        "tools-legacy": (True, False, ""),
        "recipes": (True, False, ""),
        "web": (True, False, ""),
    }
    identities = {k: r.details.get("identity") for k, r in results.items() if "identity" in r.details}
    assert identities == {
        "editor-agent": {"name": "fleet-agent", "version": "1.0.0", "protocol": "1"},
        "tools-modern": {"name": "test-mcp", "version": "1.2.3", "protocol": MODERN},
        "tools-legacy": {"name": "test-mcp", "version": "1.2.3", "protocol": "2025-11-25"},
        "recipes": {"name": "Recipe Agent", "version": "1.4.0", "protocol": "1.0"},
    }


async def test_the_demo_fleets_acp_agent_and_mcp_server() -> None:
    with serve_in_thread() as server:
        registry = validate_registry(demo_registry(server))
        wanted = [a for a in registry.agents if a.id in ("acp-coder", "mcp-tools")]
        results = {r.agent_id: r for r in await probe_many(wanted)}
    assert {k: (r.ok, r.reason) for k, r in results.items()} == {"acp-coder": (True, ""), "mcp-tools": (True, "")}
    assert results["acp-coder"].details["identity"] == {
        "name": "agentwatch-demo-acp",
        "version": "0.1.0",
        "protocol": "1",
    }
    assert results["mcp-tools"].details["identity"]["name"] == "agentwatch-demo-tools"


# MCP: the official SDK's server


Asgi = Callable[[dict[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


def legacy_only(app: Asgi) -> Asgi:
    """The SDK's app behind a front that answers `server/discover` as a 2025-era server does (400,
    "Missing session ID"), so that the probe takes the legacy path to the SDK's own handshake."""

    async def front(
        scope: dict[str, Any], receive: Callable[[], Awaitable[Any]], send: Callable[[Any], Awaitable[None]]
    ) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return await app(scope, receive, send)
        chunks, more = [], True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if json.loads(body).get("method") == "server/discover":
            error = {
                "jsonrpc": "2.0",
                "id": "server-error",
                "error": {"code": -32600, "message": "Bad Request: Missing session ID"},
            }
            await send(
                {"type": "http.response.start", "status": 400, "headers": [(b"content-type", b"application/json")]}
            )
            await send({"type": "http.response.body", "body": json.dumps(error).encode()})
            return None
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await app(scope, replay, send)

    return front


@contextmanager
def sdk_server(json_response: bool, legacy: bool = False) -> Iterator[str]:
    """The `mcp` SDK's MCPServer over Streamable HTTP, with uvicorn in a thread (`legacy`: behind a
    front that hides its 2026-07-28 side)."""
    mcp = pytest.importorskip("mcp.server", reason="NO MCP SDK: `pip install mcp` to run the interop tests")
    server = mcp.MCPServer("sdk-test-server", version="9.8.7")

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    app = server.streamable_http_app(json_response=json_response)
    if legacy:
        app = legacy_only(app)
    runner = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=runner.run, name="mcp-sdk-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not runner.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the MCP SDK server did not start")
        time.sleep(0.01)
    port = runner.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        runner.should_exit = True
        thread.join(timeout=30)
        assert not thread.is_alive(), "the MCP SDK server did not stop"


async def check_mcp(url: str) -> ProbeResult:
    agent = validate_registry({"agents": [{"id": "sdk", "timeout": "10s", "probe": {"mcp": {"url": url}}}]}).agents[0]
    async with httpx.AsyncClient() as client:
        return await run_probe(agent, http=client)


@pytest.mark.parametrize("json_response", [True, False], ids=["json", "sse"])
async def test_official_mcp_sdk_server_modern(json_response: bool) -> None:
    with sdk_server(json_response) as url:
        result = await check_mcp(url)
    assert (result.ok, result.reason) == (True, "")
    assert result.details["era"] == "2026-07-28 (server/discover)"
    assert result.details["identity"] == {"name": "sdk-test-server", "version": "9.8.7", "protocol": MODERN}
    assert "tools" in result.details["capabilities"]


async def test_official_mcp_sdk_server_refuses_a_version_it_does_not_name(monkeypatch: pytest.MonkeyPatch) -> None:
    # A modern error (UnsupportedProtocolVersionError) that names no legacy version: no fallback.
    monkeypatch.setattr("agentwatch.probes.mcp.MODERN_VERSION", "2099-01-01")
    with sdk_server(json_response=True) as url:
        result = await check_mcp(url)
    assert (result.ok, result.reason) == (
        False,
        "unsupported protocol version: the server speaks 2026-07-28; this probe speaks 2099-01-01, "
        "2025-11-25, 2025-06-18, 2025-03-26",
    )


@pytest.mark.parametrize("json_response", [True, False], ids=["json", "sse"])
async def test_official_mcp_sdk_server_legacy(json_response: bool) -> None:
    with sdk_server(json_response, legacy=True) as url:
        result = await check_mcp(url)
    assert (result.ok, result.reason) == (True, "")
    assert result.details["era"] == "legacy (initialize)"
    assert result.details["identity"] == {"name": "sdk-test-server", "version": "9.8.7", "protocol": "2025-11-25"}
    assert result.details["session"] is True and result.details["session_deleted"] is True


# TLS expiry against a real TLS server


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return TestPki.make(tmp_path_factory.mktemp("pki"))


async def check_tls(pki: TestPki, days: float, probe: dict[str, Any], trusted: bool = True) -> ProbeResult:
    routes = Routes({"/health": (200, {"status": "ok"})})
    with serve(RoutesHandler, routes, tls=pki.server_context(days)) as base:
        spec = {"url": f"{base}/health", **probe}
        agent = validate_registry({"agents": [{"id": "web", "timeout": "5s", "probe": {"http": spec}}]}).agents[0]
        verify = pki.client_context() if trusted else True
        async with httpx.AsyncClient(verify=verify) as client:
            return await run_probe(agent, http=client)


async def test_tls_certificate_with_time_to_spare(pki: TestPki) -> None:
    result = await check_tls(pki, 90, {"tls_min_days": 14, "json": {"path": "$.status", "equals": "ok"}})
    assert (result.ok, result.reason) == (True, "")
    assert result.details["tls_days_left"] in (89, 90)  # made moments ago: a boundary may pass meanwhile
    assert result.details["tls_not_after"].startswith(("20", "21"))


async def test_tls_certificate_expiring_soon(pki: TestPki) -> None:
    result = await check_tls(pki, 3.5, {"tls_min_days": 14})
    assert (result.ok, result.reason) == (False, "TLS certificate expires in 3 days (tls_min_days 14)")
    assert result.details["tls_days_left"] == 3 and result.details["status"] == 200


async def test_tls_days_are_only_read_when_asked(pki: TestPki) -> None:
    result = await check_tls(pki, 3.5, {})
    assert result.ok and "tls_days_left" not in result.details


async def test_an_untrusted_certificate_fails_before_any_days_are_counted(pki: TestPki) -> None:
    result = await check_tls(pki, 90, {"tls_min_days": 14}, trusted=False)
    assert not result.ok and result.reason.startswith("TLS certificate verification failed")


# ACP in a container


@pytest.mark.docker
async def test_acp_agent_in_a_container(run_container: RunContainer, monkeypatch: pytest.MonkeyPatch) -> None:
    box = run_container("acp", "exec sleep 3600")
    wait_until(box, status_is("running"))
    monkeypatch.setenv("TEST_BOX_TOKEN", "box-token-0123456789")
    # A busybox agent: reads initialize, answers it, then waits for the end of its stdin. It tells
    # the length of the secret it was given in its name: the value itself would be scrubbed.
    answer = (
        '{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":1,"agentCapabilities":{},'
        '"agentInfo":{"name":"box-agent-%s","version":"%s"}}}'
    )
    command = f'read request; printf \'{answer}\\n\' "${{#AGENT_TOKEN}}" "$AGENT_VERSION"; cat >/dev/null'
    env = {"AGENT_VERSION": "4.5.6", "AGENT_TOKEN": {"env": "TEST_BOX_TOKEN"}}
    probe = {"acp": {"command": command, "container": box.name, "env": env}}
    agent = validate_registry({"agents": [{"id": "boxed", "timeout": "20s", "probe": probe}]}).agents[0]
    async with httpx.AsyncClient() as client:
        result = await run_probe(agent, http=client)
    assert (result.ok, result.reason) == (True, "")
    assert result.details["identity"] == {"name": "box-agent-20", "version": "4.5.6", "protocol": "1"}
    assert result.details["container"] == box.name
    assert _processes(box) == ["sleep 3600"]  # the agent ended at the end of its stdin


@pytest.mark.docker
async def test_hung_acp_agent_in_a_container_is_killed_inside_it(run_container: RunContainer) -> None:
    box = run_container("acp-hang", "exec sleep 3600")
    wait_until(box, status_is("running"))
    # It reads initialize, then becomes a process that ignores both SIGTERM and the end of stdin.
    command = "read request; trap '' TERM; exec sleep 2400"
    agent = validate_registry(
        {"agents": [{"id": "boxed", "timeout": "3s", "probe": {"acp": {"command": command, "container": box.name}}}]}
    ).agents[0]
    async with httpx.AsyncClient() as client:
        result = await run_probe(agent, http=client)
    assert (result.ok, result.reason) == (False, "timed out after 3s")
    deadline = time.monotonic() + 10
    while "sleep 2400" in _processes(box) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _processes(box) == ["sleep 3600"]


def _processes(box: Any) -> list[str]:
    """The commands running in the container, but for the `ps` asking."""
    out = box.exec_run(["ps", "-o", "args"]).output.decode()
    return [line.strip() for line in out.splitlines()[1:] if line.strip() and not line.strip().startswith("ps ")]
