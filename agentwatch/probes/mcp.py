"""The mcp probe: an MCP server over Streamable HTTP, in either era of the protocol.

Modern servers (revision 2026-07-28) keep no sessions: every request carries its protocol version
(the `MCP-Protocol-Version` and `Mcp-Method` headers, and `_meta` in the body), and
`server/discover` returns the versions the server supports, its capabilities and its
`serverInfo`. The probe asks that first; a result naming 2026-07-28 is healthy.

Legacy servers (2025-03-26 to 2025-11-25) answer `server/discover` with an HTTP error or a
JSON-RPC error of their own, and the probe falls back, as the 2026-07-28 transport describes:
`initialize` (its answer is one JSON object or an SSE stream), the `notifications/initialized`
notification with the `Mcp-Session-Id` the server gave and the negotiated `MCP-Protocol-Version`,
`ping` (its result is `{}`), then `DELETE` of the session. A session is deleted whenever one was
opened, also after a failed step (but not once the timeout has cancelled the check: the server
expires it). The fallback is not taken on a recognized modern error (a header mismatch, a missing
capability, or an unsupported version that names no legacy version the probe speaks), nor on 401
or 403, which any era would answer alike.

Healthy needs every step to pass. `details["identity"]` holds serverInfo name and version and the
protocol version (agentwatch.drift). Every answer is read up to the byte cap; the shared client
follows no redirects and verifies TLS. Header values are secrets (`run_probe` scrubs them from
what the probe reports, agentwatch.redact), and the session id is never reported.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import httpx

from .._version import __version__
from ..drift import IDENTITY_KEY, make_identity
from ..errors import BadAnswer
from ..models import ProbeResult
from ..redact import redact_url
from ..registry import AgentSpec, McpProbe
from .tcp import describe_connection_error
from .wire import describe_http_error, member, quote_short, rpc_error_text, rpc_response_from_http

if TYPE_CHECKING:
    from .context import ProbeContext

__all__ = ["LEGACY_VERSIONS", "MODERN_VERSION", "probe_mcp"]

MODERN_VERSION = "2026-07-28"
# Versions of the initialize handshake this probe speaks, newest first: it asks for the first.
LEGACY_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26")
_CLIENT_INFO = {"name": "agentwatch", "version": __version__}
_ACCEPT = "application/json, text/event-stream"
# JSON-RPC errors that only a modern server returns: it speaks 2026-07-28, so no fallback.
_HEADER_MISMATCH, _MISSING_CAPABILITY, _UNSUPPORTED_VERSION = -32020, -32021, -32022
_MODERN_ERRORS = {_HEADER_MISMATCH, _MISSING_CAPABILITY, _UNSUPPORTED_VERSION}


class _Failed(Exception):
    """The check failed; the message is the reason."""


class _Legacy(Exception):
    """The server is not modern: fall back to `initialize` (with this version)."""

    def __init__(self, why: str, version: str = LEGACY_VERSIONS[0]) -> None:
        super().__init__(why)
        self.version = version


class _Client:
    """POSTs of JSON-RPC to one MCP endpoint with the agent's headers, read up to the cap."""

    def __init__(self, ctx: ProbeContext, url: httpx.URL, spec: McpProbe, seconds: float) -> None:
        self.http, self.url, self.cap = ctx.http, url, ctx.max_body_bytes
        self.timeout = httpx.Timeout(seconds)
        # The agent's headers first (by lowercase name): the protocol's own win. Identity encoding:
        # the cap then counts bytes on the wire.
        self.headers = {**{name.lower(): value for name, value in spec.headers.items()}, "accept-encoding": "identity"}

    def _headers(self, extra: dict[str, str]) -> dict[str, str]:
        return {**self.headers, "accept": _ACCEPT, "content-type": "application/json", **extra}

    async def request(self, body: dict[str, Any], headers: dict[str, str]) -> tuple[httpx.Response, Any]:
        """POST a request: (the response, its JSON-RPC answer, or a BadAnswer when there is none)."""
        async with self.http.stream(
            "POST", self.url, json=body, headers=self._headers(headers), timeout=self.timeout, follow_redirects=False
        ) as response:
            try:
                answer: Any = await rpc_response_from_http(response, body["id"], self.cap)
            except BadAnswer as bad:
                answer = bad
        return response, answer

    async def send(self, method: str, headers: dict[str, str]) -> int:
        """POST a notification; the HTTP status (its body is not read)."""
        body = {"jsonrpc": "2.0", "method": method}
        async with self.http.stream(
            "POST", self.url, json=body, headers=self._headers(headers), timeout=self.timeout, follow_redirects=False
        ) as response:
            return response.status_code

    async def delete(self, headers: dict[str, str]) -> int:
        async with self.http.stream(
            "DELETE", self.url, headers={**self.headers, **headers}, timeout=self.timeout, follow_redirects=False
        ) as response:
            return response.status_code


async def probe_mcp(agent: AgentSpec, ctx: ProbeContext) -> ProbeResult:
    """Check the agent's MCP endpoint; never raises for a failed server. An httpx timeout is
    re-raised as TimeoutError, so that `run_probe` words every timeout alike."""
    assert agent.probe is not None and agent.probe.mcp is not None
    spec = agent.probe.mcp
    url = httpx.URL(spec.url)
    details: dict[str, Any] = {"url": redact_url(str(url))}
    client = _Client(ctx, url, spec, agent.policy.timeout.total_seconds())
    start = time.perf_counter()
    try:
        try:
            await _discover(client, details)
        except _Legacy as legacy:
            details["discover"] = str(legacy)
            await _legacy(client, legacy.version, details)
        reason = ""
    except _Failed as failed:
        reason = str(failed)
    except httpx.TimeoutException as exc:
        raise TimeoutError(str(exc)) from exc
    except httpx.HTTPError as exc:
        reason = describe_http_error(exc)
    except OSError as exc:
        reason = describe_connection_error(exc)
    latency = (time.perf_counter() - start) * 1000
    return ProbeResult(agent.id, ok=not reason, latency_ms=latency, reason=reason, details=details)


async def _discover(client: _Client, details: dict[str, Any]) -> None:
    """`server/discover` as of 2026-07-28; _Legacy when the server is not modern."""
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "server/discover",
        "params": {
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": MODERN_VERSION,
                "io.modelcontextprotocol/clientInfo": _CLIENT_INFO,
                "io.modelcontextprotocol/clientCapabilities": {},
            }
        },
    }
    headers = {"mcp-protocol-version": MODERN_VERSION, "mcp-method": "server/discover"}
    response, answer = await client.request(body, headers)
    status = response.status_code
    if status in (401, 403):
        raise _Failed(f"server/discover: HTTP {status}")
    if isinstance(answer, BadAnswer):
        raise _Legacy(f"HTTP {status}" if status >= 300 else f"HTTP {status}, {answer}")
    if "error" in answer:
        _modern_error(answer["error"], status)
    if status >= 300:
        raise _Legacy(f"HTTP {status}")
    result = answer.get("result")
    if not isinstance(result, dict) or not isinstance(result.get("supportedVersions"), list):
        raise _Legacy("the answer is no DiscoverResult (no supportedVersions)")
    supported = [str(v) for v in result["supportedVersions"]]
    info = member(result, "_meta").get("io.modelcontextprotocol/serverInfo")
    _record(details, "2026-07-28 (server/discover)", MODERN_VERSION, info, result.get("capabilities"))
    details["supported_versions"] = supported[:10]
    if MODERN_VERSION not in supported:
        raise _Failed(f"server/discover lists versions {', '.join(supported) or 'none'}, not {MODERN_VERSION}")


def _modern_error(error: Any, status: int) -> None:
    """Raise for a JSON-RPC error to server/discover: _Failed for a modern server's own errors
    (or _Legacy to a version it names), _Legacy for anything else."""
    code = error.get("code") if isinstance(error, dict) else None
    if code not in _MODERN_ERRORS:
        raise _Legacy(f"HTTP {status}, {rpc_error_text(error)}")
    if code == _UNSUPPORTED_VERSION:
        listed = member(error, "data").get("supported")
        supported = [str(v) for v in listed] if isinstance(listed, list) else []
        for version in LEGACY_VERSIONS:
            if version in supported:
                raise _Legacy(f"server/discover: {MODERN_VERSION} unsupported", version)
        raise _Failed(
            f"unsupported protocol version: the server speaks {', '.join(supported) or 'no version it names'}; "
            f"this probe speaks {MODERN_VERSION}, {', '.join(LEGACY_VERSIONS)}"
        )
    raise _Failed(f"server/discover refused: {rpc_error_text(error)}")


async def _legacy(client: _Client, version: str, details: dict[str, Any]) -> None:
    """initialize -> notifications/initialized -> ping -> DELETE of the session."""
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": version, "capabilities": {}, "clientInfo": _CLIENT_INFO},
    }
    response, answer = await client.request(body, {})
    if response.status_code >= 300:
        raise _Failed(f"initialize: HTTP {response.status_code}")
    if isinstance(answer, BadAnswer):
        raise _Failed(f"initialize: {answer}")
    if "error" in answer:
        raise _Failed(f"initialize failed: {rpc_error_text(answer['error'])}")
    result = answer.get("result")
    if not isinstance(result, dict):
        raise _Failed("initialize answered a result that is not an object")
    agreed = result.get("protocolVersion")
    _record(details, "legacy (initialize)", agreed, result.get("serverInfo"), result.get("capabilities"))
    session = response.headers.get("mcp-session-id")
    if session is not None and not (session and all(0x21 <= ord(ch) <= 0x7E for ch in session)):
        raise _Failed("initialize answered an invalid Mcp-Session-Id (visible ASCII only)")
    details["session"] = session is not None
    if agreed not in LEGACY_VERSIONS:
        # A session may be open all the same: it is closed below, as after any failed step.
        reason = (
            f"the server answered protocol version {quote_short(str(agreed))}, which this probe does not "
            f"speak ({', '.join(LEGACY_VERSIONS)})"
        )
        await _close(client, session, None, details)
        raise _Failed(reason)
    headers = {"mcp-protocol-version": agreed}
    if session is not None:
        headers["mcp-session-id"] = session
    try:
        await _initialized_and_ping(client, headers)
    finally:
        await _close(client, session, agreed, details)


async def _initialized_and_ping(client: _Client, headers: dict[str, str]) -> None:
    status = await client.send("notifications/initialized", headers)
    if not 200 <= status <= 299:
        raise _Failed(f"notifications/initialized: HTTP {status}")
    response, answer = await client.request({"jsonrpc": "2.0", "id": 2, "method": "ping"}, headers)
    if response.status_code >= 300:
        raise _Failed(f"ping: HTTP {response.status_code}")
    if isinstance(answer, BadAnswer):
        raise _Failed(f"ping: {answer}")
    if "error" in answer:
        raise _Failed(f"ping failed: {rpc_error_text(answer['error'])}")
    if not isinstance(answer.get("result"), dict):
        raise _Failed("ping answered a result that is not an object")


async def _close(client: _Client, session: str | None, version: str | None, details: dict[str, Any]) -> None:
    """DELETE the session, if the server opened one; never fails the check. Skipped while the
    check is being cancelled (its timeout ran out): the server expires the session itself."""
    task = asyncio.current_task()
    if session is None or (task is not None and task.cancelling()):
        return
    headers = {"mcp-session-id": session, **({"mcp-protocol-version": version} if version else {})}
    try:
        status = await client.delete(headers)
    except httpx.HTTPError as exc:
        details["session_deleted"] = f"failed: {describe_connection_error(exc)}"
        return
    # 405: the server does not let clients end sessions; 404: it ended it already. Both are fine.
    details["session_deleted"] = status in (200, 202, 204, 404, 405) or f"HTTP {status}"


def _record(details: dict[str, Any], era: str, version: Any, info: Any, capabilities: Any) -> None:
    info = info if isinstance(info, dict) else {}
    details["era"] = era
    details["protocol_version"] = version
    details[IDENTITY_KEY] = make_identity(info.get("name"), info.get("version"), version)
    if isinstance(capabilities, dict):
        details["capabilities"] = sorted(str(key) for key in capabilities)[:20]
