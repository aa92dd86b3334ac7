"""The mcp probe against an MCP server of the tests' own over Streamable HTTP on 127.0.0.1
(tests/agents/servers.py), in both revisions: 2026-07-28 (`server/discover`) and the 2025 era
(`initialize`, sessions, `ping`, DELETE), JSON and SSE answers, and the ways each goes wrong.
(Against the official MCP SDK: tests/integration/test_agent_protocols.py.)"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from agentwatch.models import ProbeResult
from agentwatch.probes import run_probe
from agentwatch.registry import AgentSpec, validate_registry

from ..agents.servers import MODERN, Mcp, McpHandler, Routes, RoutesHandler, serve


def mcp_agent(url: str, headers: dict[str, str] | None = None, timeout: str = "5s") -> AgentSpec:
    probe = {"mcp": {"url": url, "headers": headers or {}}}
    return validate_registry({"agents": [{"id": "mcp-1", "timeout": timeout, "probe": probe}]}).agents[0]


async def check(spec: AgentSpec, max_body_bytes: int = 65536) -> ProbeResult:
    async with httpx.AsyncClient() as client:
        return await run_probe(spec, http=client, max_body_bytes=max_body_bytes)


@contextmanager
def mcp_server(**behaviour: Any) -> Iterator[tuple[str, Mcp]]:
    state = Mcp(**behaviour)
    with serve(McpHandler, state) as base:
        yield f"{base}/mcp", state


async def test_modern_server_answers_server_discover() -> None:
    with mcp_server(eras=("modern",)) as (url, server):
        result = await check(mcp_agent(url))
    assert (result.ok, result.reason) == (True, "")
    assert result.details["identity"] == {"name": "test-mcp", "version": "1.2.3", "protocol": MODERN}
    assert result.details["era"] == "2026-07-28 (server/discover)"
    assert result.details["supported_versions"] == [MODERN]
    assert result.details["capabilities"] == ["resources", "tools"]
    assert server.methods() == ["POST server/discover"]
    headers = server.requests[0][2]
    assert (headers["mcp-protocol-version"], headers["mcp-method"]) == (MODERN, "server/discover")


async def test_dual_era_server_stays_modern() -> None:
    with mcp_server(eras=("modern", "legacy")) as (url, server):
        result = await check(mcp_agent(url))
    assert result.ok and server.methods() == ["POST server/discover"]


@pytest.mark.parametrize("sse", [False, True], ids=["json", "sse"])
async def test_legacy_server_falls_back_to_initialize_ping_and_delete(sse: bool) -> None:
    with mcp_server(eras=("legacy",), sse=sse) as (url, server):
        result = await check(mcp_agent(url))
        assert (result.ok, result.reason) == (True, "")
        assert server.methods() == [
            "POST server/discover",
            "POST initialize",
            "POST notifications/initialized",
            "POST ping",
            "DELETE",
        ]
        assert server.open_sessions == {}  # deleted
        session = server.requests[2][2]["mcp-session-id"]
        assert session in server.initialized
    assert result.details["identity"] == {"name": "test-mcp", "version": "1.2.3", "protocol": "2025-11-25"}
    assert result.details["era"] == "legacy (initialize)"
    assert result.details["discover"] == "HTTP 400"
    assert result.details["session"] is True and result.details["session_deleted"] is True
    assert session not in repr(result)  # a session id is a credential of sorts: never reported
    # Every request after initialize carried the session and the negotiated version.
    for _verb, _method, headers in server.requests[2:]:
        assert headers["mcp-session-id"] == session and headers["mcp-protocol-version"] == "2025-11-25"


async def test_sse_stream_left_open_after_the_response_is_not_waited_for() -> None:
    with mcp_server(eras=("legacy",), sse=True, sse_stays_open=True) as (url, _server):
        result = await check(mcp_agent(url, timeout="3s"))
    assert (result.ok, result.reason) == (True, "")


async def test_legacy_server_without_sessions() -> None:
    with mcp_server(eras=("legacy",), sessions=False) as (url, server):
        result = await check(mcp_agent(url))
    assert result.ok and result.details["session"] is False
    assert result.details["discover"] == "HTTP 200, JSON-RPC error -32601: Method not found"
    assert server.methods() == [
        "POST server/discover",
        "POST initialize",
        "POST notifications/initialized",
        "POST ping",
    ]


async def test_older_legacy_version_is_accepted() -> None:
    with mcp_server(eras=("legacy",), legacy_versions=("2025-03-26",)) as (url, _server):
        result = await check(mcp_agent(url))
    assert result.ok and result.details["identity"]["protocol"] == "2025-03-26"


async def test_a_legacy_version_the_probe_does_not_speak_fails_and_closes_the_session() -> None:
    with mcp_server(eras=("legacy",), legacy_versions=("2024-11-05",)) as (url, server):
        result = await check(mcp_agent(url))
        assert server.open_sessions == {}
    assert (result.ok, result.reason) == (
        False,
        "the server answered protocol version '2024-11-05', which this probe does not speak "
        "(2025-11-25, 2025-06-18, 2025-03-26)",
    )
    assert result.details["identity"]["protocol"] == "2024-11-05"


async def test_modern_server_without_the_modern_version_names_legacy_ones() -> None:
    # It lists 2025-11-25 in its UnsupportedProtocolVersionError: the probe retries with initialize.
    with mcp_server(eras=("modern", "legacy"), modern_versions=("2027-01-01",)) as (url, server):
        result = await check(mcp_agent(url))
    assert result.ok and result.details["discover"] == f"server/discover: {MODERN} unsupported"
    assert server.methods()[:2] == ["POST server/discover", "POST initialize"]


async def test_modern_only_server_with_no_common_version() -> None:
    with mcp_server(eras=("modern",), modern_versions=("2027-01-01",)) as (url, server):
        result = await check(mcp_agent(url))
    assert (result.ok, result.reason) == (
        False,
        "unsupported protocol version: the server speaks 2027-01-01; this probe speaks 2026-07-28, "
        "2025-11-25, 2025-06-18, 2025-03-26",
    )
    assert server.methods() == ["POST server/discover"]  # a modern error: no fallback


async def test_ping_error_fails_and_still_deletes_the_session() -> None:
    with mcp_server(eras=("legacy",), ping_fails=True) as (url, server):
        result = await check(mcp_agent(url))
        assert server.open_sessions == {} and server.methods()[-1] == "DELETE"
    assert (result.ok, result.reason) == (False, "ping failed: JSON-RPC error -32603: internal error: index not loaded")


async def test_a_server_that_refuses_delete_is_still_healthy() -> None:
    with mcp_server(eras=("legacy",), delete_status=405) as (url, _server):
        result = await check(mcp_agent(url))
    assert result.ok and result.details["session_deleted"] is True


async def test_headers_are_sent_and_never_reported() -> None:
    token = "mcp-token-0123456789"
    with mcp_server(eras=("legacy",), token=token) as (url, server):
        ok = await check(mcp_agent(url, {"Authorization": f"Bearer {token}"}))
        refused = await check(mcp_agent(url, {"Authorization": "Bearer wrong-token-xyz"}))
    assert ok.ok and all(h["authorization"] == f"Bearer {token}" for _v, _m, h in server.requests[:5])
    assert (refused.ok, refused.reason) == (False, "server/discover: HTTP 401")
    assert token not in repr(ok) and "wrong-token" not in repr(refused)


async def test_not_an_mcp_endpoint() -> None:
    with serve(RoutesHandler, Routes({})) as base:  # every POST: 501 from http.server, every GET 404
        result = await check(mcp_agent(f"{base}/mcp"))
    assert not result.ok and result.reason == "initialize: HTTP 501"
    assert result.details["discover"] == "HTTP 501"


async def test_connection_refused() -> None:
    with serve(RoutesHandler, Routes({})) as base:
        pass  # stopped: its port is closed now
    result = await check(mcp_agent(f"{base}/mcp"))
    assert (result.ok, result.reason) == (False, "connection refused")


async def test_an_answer_past_the_cap() -> None:
    big = {"name": "x" * 5000, "version": "1"}
    with mcp_server(eras=("modern",), server_info=big) as (url, _server):
        result = await check(mcp_agent(url), max_body_bytes=1024)
    # The discover answer is too long to read: not a modern answer, so the fallback is tried, and
    # this modern-only server refuses initialize, naming its version.
    assert not result.ok
    assert result.details["discover"] == "HTTP 200, the answer is larger than 1024 bytes (AGENTWATCH_MAX_BODY_BYTES)"
    assert result.reason == "initialize: HTTP 400"
