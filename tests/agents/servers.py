"""HTTP servers of the tests' own, on 127.0.0.1 in a thread each: fixed routes (agent cards, JSON
health endpoints), an MCP server over Streamable HTTP in either era, plain or TLS.

`serve(handler, state)` starts one on a free port and yields its base URL; leaving the block stops
it and joins its handler threads, so nothing outlives a test. The MCP server follows the
specification as written (2025-11-25 and 2026-07-28 Streamable HTTP), written from the spec rather
than from the probe, and records every request for the tests to read.
"""

from __future__ import annotations

import json
import ssl
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODERN = "2026-07-28"
LEGACY = ("2025-11-25", "2025-06-18", "2025-03-26")


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins the handler threads
    state: Any
    stop: threading.Event


class _Base(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 5  # an idle keep-alive connection cannot hold teardown for long
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def send_json(self, status: int, value: Any, headers: dict[str, str] | None = None) -> None:
        self.send(status, json.dumps(value).encode(), {"Content-Type": "application/json", **(headers or {})})


@contextmanager
def serve(handler: type[BaseHTTPRequestHandler], state: Any = None, tls: ssl.SSLContext | None = None) -> Iterator[str]:
    """Run `handler` on a free port of 127.0.0.1 (TLS with `tls`); yield the base URL."""
    server = _Server(("127.0.0.1", 0), handler)
    server.state, server.stop = state, threading.Event()
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        scheme = "https" if tls is not None else "http"
        yield f"{scheme}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.stop.set()
        server.shutdown()
        server.server_close()
        thread.join()


# Fixed routes


@dataclass
class Routes:
    """path -> (status, body); a dict or list body is sent as JSON. Others are 404."""

    routes: dict[str, tuple[int, Any]]
    seen: list[str] = field(default_factory=list)


class RoutesHandler(_Base):
    def do_GET(self) -> None:
        state: Routes = self.server.state
        state.seen.append(self.path)
        status, body = state.routes.get(self.path, (404, b"not found"))
        if isinstance(body, dict | list):
            self.send_json(status, body)
        else:
            self.send(status, body if isinstance(body, bytes) else str(body).encode(), {"Content-Type": "text/plain"})


# MCP over Streamable HTTP


@dataclass
class Mcp:
    """How the MCP server behaves, and what it saw.

    eras: "modern" answers server/discover (2026-07-28, stateless); "legacy" answers initialize
    with sessions. A legacy-only server answers server/discover as servers of that era do: with
    400 "Missing session ID" (sessions on) or a JSON-RPC "Method not found" (sessions off).
    """

    eras: tuple[str, ...] = ("modern", "legacy")
    legacy_versions: tuple[str, ...] = LEGACY
    modern_versions: tuple[str, ...] = (MODERN,)
    sessions: bool = True
    sse: bool = False  # answer requests as SSE streams (a priming event and a notification first)
    sse_stays_open: bool = False  # ...and keep the stream open after the response
    ping_fails: bool = False
    delete_status: int = 200
    token: str | None = None  # required as "Bearer <token>" when set
    server_info: dict[str, str] = field(default_factory=lambda: {"name": "test-mcp", "version": "1.2.3"})
    requests: list[tuple[str, str | None, dict[str, str]]] = field(default_factory=list)  # (verb, method, headers)
    open_sessions: dict[str, str] = field(default_factory=dict)  # id -> negotiated version
    initialized: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def methods(self) -> list[str]:
        return [f"{verb} {method}" if method else verb for verb, method, _ in self.requests]


class McpHandler(_Base):
    @property
    def mcp(self) -> Mcp:
        state: Mcp = self.server.state
        return state

    def _record(self, method: str | None) -> None:
        with self.mcp.lock:
            self.mcp.requests.append((self.command, method, {k.lower(): v for k, v in self.headers.items()}))

    def _authorized(self) -> bool:
        if self.mcp.token is not None and self.headers.get("Authorization") != f"Bearer {self.mcp.token}":
            self.send(401, b"unauthorized")
            return False
        return True

    def _rpc_error(self, status: int, request_id: Any, code: int, message: str, data: Any = None) -> None:
        error: dict[str, Any] = {"code": code, "message": message}
        if data is not None:
            error["data"] = data
        self.send_json(status, {"jsonrpc": "2.0", "id": request_id, "error": error})

    def _answer(self, request_id: Any, result: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        message = {"jsonrpc": "2.0", "id": request_id, "result": result}
        if not self.mcp.sse:
            self.send_json(200, message, headers)
            return
        self.send_response(200)
        for name, value in {
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            **(headers or {}),
        }.items():
            self.send_header(name, value)
        self.send_header("Connection", "close")
        self.end_headers()
        note = {"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "working"}}
        # A priming event (an id and empty data), a comment, a notification, then the response,
        # with CRLF line ends to keep the client honest.
        stream = f"id: 0\r\ndata:\r\n\r\n: keep-alive\r\n\r\ndata: {json.dumps(note)}\r\n\r\nevent: message\r\ndata: {json.dumps(message)}\r\n\r\n"
        self.wfile.write(stream.encode())
        self.wfile.flush()
        self.close_connection = True
        if self.mcp.sse_stays_open:
            self.server.stop.wait(10)

    def do_GET(self) -> None:
        self._record(None)
        self.send(405, b"", {"Allow": "POST, DELETE"})

    def do_DELETE(self) -> None:
        self._record(None)
        if not self._authorized():
            return
        session = self.headers.get("Mcp-Session-Id")
        with self.mcp.lock:
            known = session is not None and self.mcp.open_sessions.pop(session, None) is not None
        if self.mcp.delete_status != 200:
            self.send(self.mcp.delete_status)
        else:
            self.send(200 if known else 404)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length))
        except ValueError:
            self._record(None)
            self._rpc_error(400, None, -32700, "Parse error")
            return
        method = body.get("method") if isinstance(body, dict) else None
        self._record(method)
        if not self._authorized():
            return
        accept = self.headers.get("Accept", "")
        if "application/json" not in accept or "text/event-stream" not in accept:
            self._rpc_error(
                406, body.get("id"), -32600, "Not Acceptable: accept application/json and text/event-stream"
            )
            return
        meta = (body.get("params") or {}).get("_meta") or {}
        if "io.modelcontextprotocol/protocolVersion" in meta and "modern" in self.mcp.eras:
            self._modern(body, meta)
        elif "legacy" in self.mcp.eras:
            self._legacy(body)
        else:
            # A modern-only server names its versions to a legacy client (2026-07-28 versioning).
            self._rpc_error(400, body.get("id"), -32600, f"this server speaks {', '.join(self.mcp.modern_versions)}")

    def _modern(self, body: dict[str, Any], meta: dict[str, Any]) -> None:
        version = meta["io.modelcontextprotocol/protocolVersion"]
        if self.headers.get("MCP-Protocol-Version") != version or self.headers.get("Mcp-Method") != body.get("method"):
            self._rpc_error(400, body.get("id"), -32020, "Header mismatch: MCP-Protocol-Version or Mcp-Method")
            return
        if version not in self.mcp.modern_versions:
            supported = list(self.mcp.modern_versions)
            if "legacy" in self.mcp.eras:
                supported += list(self.mcp.legacy_versions)
            data = {"supported": supported, "requested": version}
            self._rpc_error(400, body.get("id"), -32022, "Unsupported protocol version", data)
            return
        if body.get("method") != "server/discover":
            self._rpc_error(404, body.get("id"), -32601, "Method not found")
            return
        result = {
            "resultType": "complete",
            "supportedVersions": list(self.mcp.modern_versions),
            "capabilities": {"tools": {}, "resources": {}},
            "_meta": {"io.modelcontextprotocol/serverInfo": self.mcp.server_info},
            "ttlMs": 60000,
            "cacheScope": "public",
        }
        self._answer(body["id"], result)

    def _legacy(self, body: dict[str, Any]) -> None:
        method, request_id = body.get("method"), body.get("id")
        if method == "initialize":
            params = body.get("params") or {}
            if not isinstance(params.get("clientInfo"), dict) or "capabilities" not in params:
                self._rpc_error(400, request_id, -32602, "initialize needs capabilities and clientInfo")
                return
            asked = params.get("protocolVersion")
            agreed = asked if asked in self.mcp.legacy_versions else self.mcp.legacy_versions[0]
            headers = {}
            if self.mcp.sessions:
                minted = uuid.uuid4().hex
                with self.mcp.lock:
                    self.mcp.open_sessions[minted] = agreed
                headers["Mcp-Session-Id"] = minted
            result: dict[str, Any] = {
                "protocolVersion": agreed,
                "capabilities": {"tools": {}},
                "serverInfo": self.mcp.server_info,
            }
            self._answer(request_id, result, headers)
            return
        agreed = None
        if self.mcp.sessions:
            session = self.headers.get("Mcp-Session-Id")
            if session is None:
                self._rpc_error(400, "server-error", -32600, "Bad Request: Missing session ID")
                return
            with self.mcp.lock:
                agreed = self.mcp.open_sessions.get(session)
            if agreed is None:
                self._rpc_error(404, request_id, -32001, "Session not found")
                return
            if self.headers.get("MCP-Protocol-Version") != agreed:
                self._rpc_error(400, request_id, -32600, "Bad Request: MCP-Protocol-Version does not match")
                return
        if method == "notifications/initialized":
            if self.mcp.sessions:
                with self.mcp.lock:
                    self.mcp.initialized.add(self.headers["Mcp-Session-Id"])
            self.send(202)
        elif method == "ping":
            if self.mcp.ping_fails:
                self._rpc_error(200, request_id, -32603, "internal error: index not loaded")
            else:
                self._answer(request_id, {})
        else:
            self._rpc_error(200, request_id, -32601, "Method not found")
