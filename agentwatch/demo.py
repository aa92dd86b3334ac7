"""A small fleet of fake agents on 127.0.0.1, for the demo, the benchmark and the tests.

One asyncio server answers `GET /agents/<name>/health` for any number of agents. The name's
first word sets the behaviour: `ok-*` answers 200, `slow-*` answers 200 after `slow_delay`,
`fail-*` answers 500, `hang-*` never answers. Keep-alive is supported, so one server can stand in
for thousands of agents. `POST /agents/<name>/mcp` is a minimal MCP server of the 2026-07-28
revision (it answers `server/discover`). `python -m agentwatch.demo` runs the server and writes a
demo registry; `python -m agentwatch.demo --acp-agent` is a minimal ACP agent on stdio (it answers
`initialize` and runs until its stdin ends), which the demo registry's acp probe starts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shlex
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

__all__ = ["AgentServer", "closed_port", "demo_registry", "fleet_registry", "serve_in_thread"]

_BODY = b'{"status":"ok"}'
_MAX_POST = 65536
_MCP_VERSION = "2026-07-28"
_DEMO_INFO = {"name": "agentwatch-demo", "version": "0.1.0"}


class AgentServer:
    """The fake agents' HTTP server. Use as `async with AgentServer() as server: server.url(name)`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, slow_delay: float = 0.3) -> None:
        self.host, self.port, self.slow_delay = host, port, slow_delay
        self.requests = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> AgentServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port, backlog=4096, limit=8192)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            # Handlers that never answer ("hang" agents) are cancelled, not left pending at loop close.
            for handler in list(self._handlers):
                handler.cancel()
            if self._handlers:
                await asyncio.wait(list(self._handlers), timeout=2)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    def url(self, name: str) -> str:
        return f"http://{self.host}:{self.port}/agents/{name}/health"

    def mcp_url(self, name: str) -> str:
        return f"http://{self.host}:{self.port}/agents/{name}/mcp"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        handler = asyncio.current_task()
        if handler is not None:
            self._handlers.add(handler)  # type: ignore[arg-type]
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.requests += 1
                path = head.split(b" ", 2)[1].decode("latin-1") if head.count(b" ") >= 2 else "/"
                if head.startswith(b"POST "):
                    status, body = await _post(reader, head, path)
                    writer.write(_response(status, body))
                    await writer.drain()
                    continue
                mode = _mode(path)
                if mode == "hang":
                    await asyncio.Event().wait()  # never answer; cancelled when the server stops
                if mode == "slow":
                    await asyncio.sleep(self.slow_delay)
                status = b"500 Internal Server Error" if mode == "fail" else b"200 OK"
                if mode == "missing":
                    status = b"404 Not Found"
                writer.write(
                    b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\n"
                    b"Content-Length: " + str(len(_BODY)).encode() + b"\r\n\r\n" + _BODY
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            if handler is not None:
                self._handlers.discard(handler)  # type: ignore[arg-type]
            writer.close()


@contextlib.contextmanager
def serve_in_thread(**kwargs: Any) -> Iterator[AgentServer]:
    """Run an AgentServer on its own event loop in a thread (callers that block their own loop,
    such as a Prefect flow run awaited from a test, still get answers)."""
    loop = asyncio.new_event_loop()
    server = AgentServer(**kwargs)
    thread = threading.Thread(target=loop.run_forever, name="agentwatch-demo-agents", daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(server.start(), loop).result(timeout=10)
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def _response(status: bytes, body: bytes) -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


async def _post(reader: asyncio.StreamReader, head: bytes, path: str) -> tuple[bytes, bytes]:
    """`POST /agents/<name>/mcp`: the demo MCP server (2026-07-28, stateless, `server/discover`)."""
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            length = int(value.strip())
    if length > _MAX_POST:
        raise ConnectionError("request body too large")  # drops the connection
    body = await reader.readexactly(length)
    parts = path.strip("/").split("/")
    if len(parts) != 3 or parts[0] != "agents" or parts[2] != "mcp":
        return b"404 Not Found", b'{"error":"not found"}'
    try:
        request = json.loads(body)
    except ValueError:
        request = None
    if not isinstance(request, dict):
        return b"400 Bad Request", b'{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}'
    if request.get("method") != "server/discover":
        error = {"code": -32601, "message": f"Method not found (this demo server speaks {_MCP_VERSION})"}
        return b"404 Not Found", json.dumps({"jsonrpc": "2.0", "id": request.get("id"), "error": error}).encode()
    result = {
        "resultType": "complete",
        "supportedVersions": [_MCP_VERSION],
        "capabilities": {"tools": {}},
        "_meta": {"io.modelcontextprotocol/serverInfo": {**_DEMO_INFO, "name": f"agentwatch-demo-{parts[1]}"}},
    }
    return b"200 OK", json.dumps({"jsonrpc": "2.0", "id": request.get("id"), "result": result}).encode()


def acp_agent() -> None:
    """A minimal ACP agent on stdio: answers `initialize` (protocol 1), refuses other requests,
    and runs until its stdin ends."""
    for line in sys.stdin:
        try:
            request = json.loads(line)
        except ValueError:
            continue
        if not isinstance(request, dict) or "id" not in request:
            continue  # a notification: nothing to answer
        if request.get("method") == "initialize":
            result = {
                "protocolVersion": 1,
                "agentCapabilities": {"loadSession": False},
                "authMethods": [],
                "agentInfo": {**_DEMO_INFO, "name": "agentwatch-demo-acp"},
            }
            answer: dict[str, Any] = {"jsonrpc": "2.0", "id": request["id"], "result": result}
        else:
            answer = {"jsonrpc": "2.0", "id": request["id"], "error": {"code": -32601, "message": "Method not found"}}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


def _mode(path: str) -> str:
    parts = path.strip("/").split("/")
    if len(parts) != 3 or parts[0] != "agents" or parts[2] != "health":
        return "missing"
    return parts[1].split("-", 1)[0]


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fleet_registry(server: AgentServer, names: list[str], dead: int = 0, **policy: Any) -> dict[str, Any]:
    """A registry dict with one HTTP agent per name on `server`, plus `dead` agents on a closed port."""
    agents: list[dict[str, Any]] = [
        {"id": name, "labels": {"kind": name.split("-", 1)[0]}, "probe": {"http": {"url": server.url(name)}}}
        for name in names
    ]
    port = closed_port()
    agents += [
        {
            "id": f"down-{i}",
            "labels": {"kind": "down"},
            "probe": {"http": {"url": f"http://127.0.0.1:{port}/health"}},
        }
        for i in range(dead)
    ]
    return {"defaults": dict(policy), "agents": agents}


def demo_registry(server: AgentServer) -> dict[str, Any]:
    """The README demo fleet: healthy agents, a slow one, one that fails, one whose port is closed,
    a command probe, an ACP agent on stdio, an MCP server, and two agents that are listed but never
    probed."""
    registry = fleet_registry(
        server, ["ok-planner", "ok-coder", "ok-reviewer", "slow-indexer", "fail-tester"], dead=1, timeout="2s"
    )
    registry["agents"] += [
        {"id": "cmd-disk", "name": "Disk check", "probe": {"command": "test -d /tmp"}},
        {
            "id": "acp-coder",
            "name": "ACP coding agent (stdio)",
            "transport": "stdio",
            "probe": {"acp": {"command": f"{shlex.quote(sys.executable)} -m agentwatch.demo --acp-agent"}},
        },
        {"id": "mcp-tools", "name": "MCP tool server", "probe": {"mcp": {"url": server.mcp_url("tools")}}},
        {"id": "editor-session", "name": "Editor session (stdio)", "transport": "stdio"},
        {"id": "acp-remote", "name": "Remote ACP agent", "endpoint": "acp://..."},
    ]
    return registry


async def _run(port: int, registry_path: Path | None) -> None:
    async with AgentServer(port=port) as server:
        if registry_path is not None:
            registry_path.write_text(yaml.safe_dump(demo_registry(server), sort_keys=False))
            print(f"wrote {registry_path}", flush=True)
        print(f"demo agents on http://127.0.0.1:{server.port}/agents/<name>/health", flush=True)
        await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve fake HTTP agents on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=8780)
    parser.add_argument("--write-registry", type=Path, default=None, help="write the demo registry YAML here")
    parser.add_argument("--acp-agent", action="store_true", help="be a minimal ACP agent on stdio instead")
    args = parser.parse_args()
    if args.acp_agent:
        with contextlib.suppress(KeyboardInterrupt, BrokenPipeError):
            acp_agent()
        return
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_run(args.port, args.write_registry))


if __name__ == "__main__":
    main()
