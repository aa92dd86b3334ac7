"""The http probe and probe_many against real servers on 127.0.0.1 (threads, ephemeral ports).

Timing assertions compare a result with its own timeout (relative), never a fixed wall-clock budget.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

import agentwatch.probes.dispatch as dispatch
from agentwatch.models import ProbeResult
from agentwatch.probes import make_http_client, probe_many, run_probe
from agentwatch.probes.http import effective_url
from agentwatch.registry import AgentSpec, HttpProbe, validate_registry

ZEROS = b"\0" * 65536
HUGE = 50 * 1024 * 1024


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins handler threads: nothing outlives the test
    stop: threading.Event


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 5  # an idle keep-alive connection cannot hold teardown for long
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        parts = self.path.strip("/").split("/")
        try:
            self._route(parts[0], parts[1:])
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the probe stopped reading, as it should

    def _route(self, name: str, args: list[str]) -> None:
        if name == "ok":
            self._send(200, b"status: ok")
        elif name == "status":
            self._send(int(args[0]))
        elif name == "redirect":
            self._send(302, headers={"Location": "/status/500"})
        elif name == "slow":
            self.server.stop.wait(int(args[0]) / 1000)
            self._send(200, b"ok")
        elif name == "host":
            self._send(200, (self.headers["Host"] or "").encode())
        elif name == "auth":
            authorized = self.headers["Authorization"] == "Bearer s3cret"
            self._send(200 if authorized else 401)
        elif name == "late-needle":
            self._send(200, b"x" * 100 + b"needle")
        elif name == "huge":
            self._send_huge()
        elif name == "endless":
            self._send_endless()
        else:
            self._send(404)

    def _send_huge(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(HUGE))
        self.end_headers()
        for _ in range(HUGE // len(ZEROS)):
            if self.server.stop.is_set():
                break
            self.wfile.write(ZEROS)

    def _send_endless(self) -> None:
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        while not self.server.stop.is_set():
            self.wfile.write(b"%x\r\n%s\r\n" % (len(ZEROS), ZEROS))


class RawServer:
    """A TCP listener whose accepted connections go to `handle`; holds them until stopped."""

    def __init__(self, handle: Callable[[socket.socket], None]) -> None:
        self.handle = handle
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.thread.start()

    def _accept_loop(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.conns.append(conn)
            self.handle(conn)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close()
        for conn in self.conns:
            conn.close()


def _reset(conn: socket.socket) -> None:
    """Read the request, then close with SO_LINGER 0: the kernel answers with a RST."""
    conn.settimeout(2)
    with contextlib.suppress(OSError):
        conn.recv(65536)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


@pytest.fixture
def server() -> Iterator[str]:
    """Base URL of a threaded HTTP server with the routes of `_Handler`."""
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.stop = threading.Event()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.stop.set()
    srv.shutdown()
    srv.server_close()
    thread.join()


@pytest.fixture
def hung_port() -> Iterator[int]:
    """A server that accepts connections and never answers."""
    srv = RawServer(lambda conn: None)
    yield srv.port
    srv.close()


@pytest.fixture
def reset_port() -> Iterator[int]:
    srv = RawServer(_reset)
    yield srv.port
    srv.close()


@pytest.fixture
def closed_port() -> int:
    sock = socket.create_server(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    sock.close()
    return port


def http_agent(url: str, agent_id: str = "agent", timeout: str = "1s", **http: Any) -> AgentSpec:
    raw = {"id": agent_id, "timeout": timeout, "probe": {"http": {"url": url, **http}}}
    return validate_registry({"agents": [raw]}).agents[0]


async def check(agent: AgentSpec, max_body_bytes: int = 65536) -> ProbeResult:
    async with make_http_client() as client:
        return await run_probe(agent, http=client, max_body_bytes=max_body_bytes)


async def test_healthy_200(server: str) -> None:
    result = await check(http_agent(f"{server}/ok"))
    assert result.ok, result.reason
    assert result.agent_id == "agent" and result.reason == "" and result.probed
    assert result.details == {"url": f"{server}/ok", "status": 200, "bytes_read": 10}
    assert result.latency_ms is not None and result.latency_ms > 0


async def test_500_fails(server: str) -> None:
    result = await check(http_agent(f"{server}/status/500"))
    assert not result.ok
    assert result.reason == "HTTP 500 (expected 200-399)"
    assert result.details["status"] == 500


@pytest.mark.parametrize(
    ("path", "expect", "reason"),
    [
        ("status/204", 204, ""),
        ("status/404", 404, ""),  # an exact code may lie outside 200-399
        ("ok", 201, "HTTP 200 (expected 201)"),
        ("redirect", 200, "HTTP 302 (expected 200)"),
    ],
    ids=["204-exact", "404-exact", "200-not-201", "302-not-200"],
)
async def test_expect_status(server: str, path: str, expect: int, reason: str) -> None:
    result = await check(http_agent(f"{server}/{path}", expect_status=expect))
    assert (result.ok, result.reason) == (not reason, reason)


async def test_redirect_is_healthy_and_not_followed(server: str) -> None:
    agent = http_agent(f"{server}/redirect")
    # Even a client that follows redirects must not: the 302 is the answer (its target is a 500).
    async with httpx.AsyncClient(follow_redirects=True) as client:
        result = await run_probe(agent, http=client)
    assert result.ok, result.reason
    assert result.details["status"] == 302


@pytest.mark.parametrize(
    ("needle", "reason"), [("ok", ""), ("ready", "body does not contain 'ready'")], ids=["pass", "fail"]
)
async def test_body_contains(server: str, needle: str, reason: str) -> None:
    result = await check(http_agent(f"{server}/ok", body_contains=needle))
    assert (result.ok, result.reason) == (not reason, reason)


async def test_body_contains_only_searches_the_capped_body(server: str) -> None:
    agent = http_agent(f"{server}/late-needle", body_contains="needle")
    assert (await check(agent)).ok
    capped = await check(agent, max_body_bytes=50)
    assert not capped.ok and capped.details["bytes_read"] == 50


async def test_max_latency_exceeded(server: str) -> None:
    result = await check(http_agent(f"{server}/slow/300", max_latency="100ms"))
    assert not result.ok
    assert result.reason.startswith("latency ") and result.reason.endswith("over max_latency 100ms")
    assert result.latency_ms is not None and result.latency_ms >= 300


async def test_slow_within_timeout_is_ok(server: str) -> None:
    result = await check(http_agent(f"{server}/slow/200", timeout="2s"))
    assert result.ok, result.reason
    assert result.latency_ms is not None and result.latency_ms >= 200


async def test_hung_server_times_out_once(hung_port: int) -> None:
    timeout = 0.4
    started = time.perf_counter()
    result = await check(http_agent(f"http://127.0.0.1:{hung_port}/", timeout="0.4s"))
    elapsed = time.perf_counter() - started
    assert not result.ok
    assert result.reason == "timed out after 0.4s"
    assert result.details["url"] == f"http://127.0.0.1:{hung_port}/"
    assert result.latency_ms is not None and 0.95 * timeout * 1000 <= result.latency_ms < 2 * timeout * 1000
    assert elapsed < 2 * timeout  # no retry: the timeout is paid once


async def test_hung_probe_does_not_delay_healthy_one(server: str, hung_port: int) -> None:
    timeout = 1.0
    agents = [
        http_agent(f"http://127.0.0.1:{hung_port}/", "hung", timeout="1s"),
        http_agent(f"{server}/ok", "healthy", timeout="1s"),
    ]
    hung, healthy = await probe_many(agents)
    assert (hung.agent_id, healthy.agent_id) == ("hung", "healthy")
    assert hung.reason == "timed out after 1s"
    assert healthy.ok, healthy.reason
    assert healthy.latency_ms is not None and healthy.latency_ms < timeout * 1000 / 2


async def test_many_hung_probes_cost_one_timeout(server: str, hung_port: int) -> None:
    timeout = 0.5
    agents = [http_agent(f"http://127.0.0.1:{hung_port}/", f"hung-{i}", timeout="0.5s") for i in range(50)]
    agents.insert(25, http_agent(f"{server}/ok", "healthy", timeout="0.5s"))
    started = time.perf_counter()
    results = await probe_many(agents)
    elapsed = time.perf_counter() - started
    assert [r.agent_id for r in results] == [a.id for a in agents]
    assert results[25].ok
    assert all(r.reason == "timed out after 0.5s" for i, r in enumerate(results) if i != 25)
    assert elapsed < 2 * timeout  # concurrent: 50 hung targets cost about one timeout, not fifty


async def test_closed_port_is_refused(closed_port: int) -> None:
    result = await check(http_agent(f"http://127.0.0.1:{closed_port}/"))
    assert (result.ok, result.reason) == (False, "connection refused")


async def test_connection_reset(reset_port: int) -> None:
    result = await check(http_agent(f"http://127.0.0.1:{reset_port}/"))
    assert not result.ok
    assert result.reason in ("connection reset", "server disconnected without a response")


async def test_huge_body_is_capped_without_loading_it(server: str) -> None:
    cap = 65536
    tracemalloc.start()
    try:
        result = await check(http_agent(f"{server}/huge", timeout="5s"), max_body_bytes=cap)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.ok, result.reason
    assert result.details["bytes_read"] == cap
    assert peak < HUGE / 5  # a fraction of the 50 MB body was ever held


@pytest.mark.parametrize("cap", [0, 1000, 65536])
async def test_endless_body_stops_at_cap(server: str, cap: int) -> None:
    timeout = 5.0
    result = await check(http_agent(f"{server}/endless", timeout="5s"), max_body_bytes=cap)
    assert result.ok, result.reason
    assert result.details["bytes_read"] == cap
    assert result.latency_ms is not None and result.latency_ms < timeout * 1000 / 2


async def test_target_replaces_localhost(server: str) -> None:
    port = server.rsplit(":", 1)[1]
    agent = http_agent(f"http://localhost:{port}/host", target="127.0.0.1", body_contains=f"127.0.0.1:{port}")
    result = await check(agent)
    assert result.ok, result.reason  # the Host header the server saw names the target
    assert result.details["url"] == f"http://127.0.0.1:{port}/host"


@pytest.mark.parametrize(
    ("url", "target", "expected"),
    [
        ("http://localhost:8080/health?x=1", "10.0.0.7", "http://10.0.0.7:8080/health?x=1"),
        ("https://127.0.0.1/h", "agent-3", "https://agent-3/h"),
        ("http://agent.example:8080/h", "10.0.0.7", "http://agent.example:8080/h"),
        ("http://localhost:8080/h", None, "http://localhost:8080/h"),
    ],
    ids=["localhost", "loopback", "other-host-kept", "no-target"],
)
def test_effective_url(url: str, target: str | None, expected: str) -> None:
    assert str(effective_url(HttpProbe(url=url, target=target))) == expected


async def test_headers_are_sent_but_never_reported(server: str) -> None:
    agent = http_agent(f"{server}/auth", headers={"Authorization": "Bearer s3cret"})
    result = await check(agent)
    assert result.ok, result.reason
    assert "s3cret" not in repr(result)


async def test_password_in_url_is_not_reported(closed_port: int) -> None:
    result = await check(http_agent(f"http://user:hunter2@127.0.0.1:{closed_port}/"))
    assert "hunter2" not in repr(result)


async def test_probe_many_closes_the_client_it_made(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[httpx.AsyncClient] = []

    def recording(concurrency: int = 500) -> httpx.AsyncClient:
        made.append(make_http_client(concurrency))
        return made[-1]

    monkeypatch.setattr(dispatch, "make_http_client", recording)
    [result] = await probe_many([http_agent(f"{server}/ok")], concurrency=3)
    assert result.ok
    assert len(made) == 1 and made[0].is_closed


async def test_probe_many_leaves_a_given_client_open(server: str) -> None:
    async with make_http_client() as client:
        [result] = await probe_many([http_agent(f"{server}/ok")], http=client)
        assert result.ok and not client.is_closed
