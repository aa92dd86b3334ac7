"""The http probe's fast client (agentwatch.probes.fasthttp) against real servers on 127.0.0.1:
plain and TLS, chunked, over the cap, hung, redirects, cut short, refused, reset, keep-alive; and
the http probe through it against the same probe through httpx, result for result.

The server is a scripted TCP server in threads: it reads each request's head, records it, and
plays the script its path names. Timing assertions compare with a probe's own timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from agentwatch.errors import BadAnswer
from agentwatch.models import ProbeResult
from agentwatch.probes import probe_many, run_probe
from agentwatch.probes.fasthttp import UNSENDABLE, FastHttp, Request
from agentwatch.registry import AgentSpec, validate_registry

from ..agents.tls import TestPki

BIG = 8 * 1024 * 1024


def _answer(status: str, body: bytes = b"", headers: str = "") -> bytes:
    return f"HTTP/1.1 {status}\r\n{headers}Content-Length: {len(body)}\r\n\r\n".encode() + body


def _chunked(conn: socket.socket, stop: threading.Event) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    for piece in (b"status", b": ", b"ok"):
        conn.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        time.sleep(0.01)
    conn.sendall(b"0\r\n\r\n")


def _big(conn: socket.socket, stop: threading.Event) -> None:
    conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {BIG}\r\n\r\n".encode())
    block = b"x" * 65536
    with contextlib.suppress(OSError):
        for _ in range(BIG // len(block)):
            if stop.is_set():
                return
            conn.sendall(block)


def _cut(conn: socket.socket, stop: threading.Event) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
    conn.shutdown(socket.SHUT_WR)


def _reset(conn: socket.socket, stop: threading.Event) -> None:
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


HUNG_CLOSED: list[float] = []  # when the client closed a connection the server never answered


def _hang(conn: socket.socket, stop: threading.Event) -> None:
    conn.settimeout(0.05)
    while not stop.is_set():
        try:
            if conn.recv(1) == b"":
                HUNG_CLOSED.append(time.monotonic())
                return
        except TimeoutError:
            continue
        except OSError:
            HUNG_CLOSED.append(time.monotonic())
            return


SCRIPTS: dict[str, bytes | Callable[[socket.socket, threading.Event], None]] = {
    "/ok": _answer("200 OK", b'{"status":"ok"}', "Content-Type: application/json\r\n"),
    "/fail": _answer("500 Internal Server Error", b"boom"),
    "/moved": _answer("301 Moved Permanently", b"", "Location: /fail\r\n"),
    "/bad-status": b"HTTP/1.1 2OO Fine\r\n\r\n",
    "/empty": b"",
    "/chunked": _chunked,
    "/big": _big,
    "/cut": _cut,
    "/reset": _reset,
    "/hang": _hang,
    "/once": _answer("200 OK", b"once"),
}


class Scripted:
    """A TCP server on 127.0.0.1 (a thread per connection, TLS with `tls`): each request's head is
    recorded in `requests`; its path picks the script. A connection stays open for the next
    request unless the script closes it or the request says `Connection: close`."""

    def __init__(self, tls: ssl.SSLContext | None = None, host: str = "127.0.0.1") -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.create_server((host, 0), family=family)
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.tls = tls
        self.stop = threading.Event()
        self.requests: list[bytes] = []
        self.connections = 0
        self.open: list[socket.socket] = []
        self.threads: list[threading.Thread] = []
        self.accepter = threading.Thread(target=self._accept, daemon=True)
        self.accepter.start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.connections += 1
            self.open.append(conn)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(5)
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            buf = b""
            served = 0
            while not self.stop.is_set():
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, buf = buf.split(b"\r\n\r\n", 1)
                self.requests.append(head)
                served += 1
                if served > 1 and head.startswith(b"GET /once "):
                    return  # a kept connection that takes a request and closes unanswered
                script = SCRIPTS.get(head.split(b" ")[1].split(b"?")[0].decode(), _answer("404 Not Found"))
                if callable(script):
                    script(conn, self.stop)
                    return
                conn.sendall(script)
                if not script or b"connection: close" in head.lower():
                    return
        except (OSError, ssl.SSLError):
            return
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    def url(self, path: str, scheme: str = "") -> str:
        host = self.sock.getsockname()[0]
        host = f"[{host}]" if ":" in host else host
        return f"{scheme or ('https' if self.tls else 'http')}://{host}:{self.port}{path}"

    def drop_connections(self) -> None:
        """Close every connection from this side, as an idle timeout would."""
        for conn in self.open:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for thread in self.threads:
            thread.join(5)

    def close(self) -> None:
        self.stop.set()
        self.accepter.join()
        self.sock.close()
        for thread in self.threads:
            thread.join(5)


@pytest.fixture
def server() -> Iterator[Scripted]:
    srv = Scripted()
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return TestPki.make(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def closed_port() -> int:
    sock = socket.create_server(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    sock.close()
    return port


def agent(url: str, timeout: str = "2s", **http: Any) -> AgentSpec:
    raw = {"id": "web", "timeout": timeout, "probe": {"http": {"url": url, **http}}}
    return validate_registry({"agents": [raw]}).agents[0]


async def fast_probe(spec: AgentSpec, cap: int = 65536, tls: ssl.SSLContext | None = None) -> ProbeResult:
    async with httpx.AsyncClient() as http, FastHttp(tls=tls) as fast:
        return await run_probe(spec, http=http, max_body_bytes=cap, fast_http=fast)


async def httpx_probe(spec: AgentSpec, cap: int = 65536, tls: ssl.SSLContext | bool = True) -> ProbeResult:
    async with httpx.AsyncClient(verify=tls, trust_env=False) as http:
        return await run_probe(spec, http=http, max_body_bytes=cap)


def outcome(result: ProbeResult) -> tuple[bool, str, dict[str, Any]]:
    return result.ok, result.reason, result.details


# The client itself


async def test_a_get_reads_status_headers_and_body(server: Scripted) -> None:
    async with FastHttp() as client, client.get(server.url("/ok?x=1")) as answer:
        assert answer.status == 200
        assert (b"content-type", b"application/json") in answer.headers
        assert answer.tls_object is None
        assert await answer.read() == b'{"status":"ok"}'
    head = server.requests[0].decode()
    assert head.startswith("GET /ok?x=1 HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{server.port}" in head and "Connection: close" in head


async def test_fresh_connections_by_default(server: Scripted) -> None:
    async with FastHttp() as client:
        for _ in range(3):
            async with client.get(server.url("/ok")) as answer:
                assert await answer.read()
    assert server.connections == 3


async def test_keepalive_reuses_one_connection_per_host_and_port(server: Scripted) -> None:
    async with FastHttp(keepalive=True) as client:
        for _ in range(5):
            async with client.get(server.url("/ok")) as answer:
                assert answer.status == 200 and await answer.read()
        for path in ("/fail", "/moved"):
            async with client.get(server.url(path)) as answer:
                await answer.read()
    assert server.connections == 1
    assert all(b"Connection: keep-alive" in head for head in server.requests)


async def test_keepalive_replaces_a_connection_its_server_closed(server: Scripted) -> None:
    async with FastHttp(keepalive=True) as client:
        async with client.get(server.url("/ok")) as answer:
            await answer.read()
        server.drop_connections()  # as an idle timeout would ...
        await asyncio.sleep(0.05)
        # ... and the next GET goes out on a new one.
        async with client.get(server.url("/ok")) as answer:
            assert answer.status == 200 and await answer.read() == b'{"status":"ok"}'
    assert server.connections == 2


async def test_keepalive_retries_once_when_a_kept_connection_closes_unanswered(server: Scripted) -> None:
    async with FastHttp(keepalive=True) as client:
        for _ in range(2):
            async with client.get(server.url("/once")) as answer:
                assert answer.status == 200 and await answer.read() == b"once"
    assert server.connections == 2 and len(server.requests) == 3


async def test_a_fresh_connection_closed_unanswered_is_not_retried(server: Scripted) -> None:
    async with FastHttp() as client:
        with pytest.raises(BadAnswer, match="server disconnected without a response"):
            async with client.get(server.url("/empty")):
                pass
    assert len(server.requests) == 1


async def test_a_body_over_the_cap_is_not_read_on(server: Scripted) -> None:
    async with FastHttp() as client, client.get(server.url("/big"), cap=1000) as answer:
        assert await answer.read() == b"x" * 1000


async def test_chunked_body(server: Scripted) -> None:
    async with FastHttp() as client, client.get(server.url("/chunked")) as answer:
        assert await answer.read() == b"status: ok"


async def test_headers_are_sent_and_url_credentials_become_basic_auth(server: Scripted) -> None:
    async with FastHttp() as client:
        url = server.url("/ok").replace("://", "://ops:p%40ss@")
        async with client.get(url, {"X-Token": "t0k", "user-agent": "mine"}) as answer:
            await answer.read()
    head = server.requests[0].decode()
    assert "X-Token: t0k" in head and "user-agent: mine" in head and "User-Agent" not in head
    assert "Authorization: Basic b3BzOnBAc3M=" in head  # ops:p@ss


@pytest.mark.parametrize("value", ["a\r\nInjected: 1", "tab-end\t", "é", "\0"])
def test_a_header_that_cannot_be_sent_is_refused_unquoted(value: str) -> None:
    with pytest.raises(ValueError) as caught:
        Request(httpx.URL("http://127.0.0.1/"), {"X-Token": value}, keepalive=False)
    assert str(caught.value) == UNSENDABLE


@pytest.mark.parametrize("keepalive", [False, True])
async def test_a_hung_server_costs_its_timeout_and_the_connection_is_closed(server: Scripted, keepalive: bool) -> None:
    HUNG_CLOSED.clear()
    async with FastHttp(keepalive=keepalive) as client:
        started = time.perf_counter()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3), client.get(server.url("/hang")) as answer:
                await answer.read()
        assert time.perf_counter() - started < 0.3 * 2
        for _ in range(100):  # the server sees the client close, while the client is still open
            if HUNG_CLOSED:
                break
            await asyncio.sleep(0.01)
        assert len(HUNG_CLOSED) == 1


async def test_ipv6_literal() -> None:
    try:
        srv = Scripted(host="::1")
    except OSError:
        pytest.skip("no IPv6 loopback here")
    try:
        result = await fast_probe(agent(srv.url("/ok")))
        assert outcome(result) == (True, "", {"url": srv.url("/ok"), "status": 200, "bytes_read": 15})
        assert f"Host: [::1]:{srv.port}" in srv.requests[0].decode()
    finally:
        srv.close()


async def test_proxies_in_the_environment_are_ignored(server: Scripted, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    result = await fast_probe(agent(server.url("/ok")))
    assert result.ok, result.reason


# Which client the dispatcher uses


async def test_probe_many_checks_http_agents_with_the_fast_client_it_makes(server: Scripted) -> None:
    [result] = await probe_many([agent(server.url("/ok"))])
    assert result.ok, result.reason
    assert b"User-Agent: agentwatch/" in server.requests[0] and b"Connection: close" in server.requests[0]


async def test_a_given_httpx_client_is_used_as_given(server: Scripted) -> None:
    async with httpx.AsyncClient() as http:
        [result] = await probe_many([agent(server.url("/ok"))], http=http)
    assert result.ok, result.reason
    assert b"python-httpx/" in server.requests[0]


# The http probe through it, against the same probe through httpx

SAME = ["/ok", "/fail", "/moved", "/chunked", "/cut", "/bad-status", "/empty", "/nowhere"]


@pytest.mark.parametrize("path", SAME)
async def test_the_probe_judges_and_words_alike_through_both_clients(server: Scripted, path: str) -> None:
    spec = agent(server.url(path))
    fast, slow = await fast_probe(spec), await httpx_probe(spec)
    assert outcome(fast) == outcome(slow)


@pytest.mark.parametrize("cap", [0, 10, 65536])
async def test_the_cap_alike(server: Scripted, cap: int) -> None:
    spec = agent(server.url("/big"), timeout="5s")
    fast, slow = await fast_probe(spec, cap), await httpx_probe(spec, cap)
    assert outcome(fast) == outcome(slow) == (True, "", {"url": server.url("/big"), "status": 200, "bytes_read": cap})


async def test_expected_status_and_body_checks_alike(server: Scripted) -> None:
    for spec in (
        agent(server.url("/moved"), expect_status=200),
        agent(server.url("/ok"), body_contains="ready"),
        agent(server.url("/ok"), json={"path": "$.status", "equals": "ok"}),
    ):
        assert outcome(await fast_probe(spec)) == outcome(await httpx_probe(spec))


async def test_refused_alike(closed_port: int) -> None:
    spec = agent(f"http://127.0.0.1:{closed_port}/health")
    fast = await fast_probe(spec)
    assert outcome(fast) == outcome(await httpx_probe(spec))
    assert fast.reason == "connection refused"


async def test_refused_on_a_name_with_two_addresses(closed_port: int) -> None:
    spec = agent(f"http://localhost:{closed_port}/health")
    assert (await fast_probe(spec)).reason == "connection refused" == (await httpx_probe(spec)).reason


async def test_a_name_that_does_not_resolve() -> None:
    spec = agent("http://no-such-host.invalid/health")
    assert (await fast_probe(spec)).reason.startswith("DNS lookup failed")


async def test_reset(server: Scripted) -> None:
    result = await fast_probe(agent(server.url("/reset")))
    assert result.reason in ("connection reset", "server disconnected without a response")


async def test_hung_times_out_as_run_probe_words_it(server: Scripted) -> None:
    result = await fast_probe(agent(server.url("/hang"), timeout="0.3s"))
    assert (result.ok, result.reason) == (False, "timed out after 0.3s")
    assert result.latency_ms is not None and 300 * 0.95 <= result.latency_ms < 600
    server.stop.set()


async def test_a_token_in_a_header_is_sent_never_reported_nor_logged(server: Scripted, every_log: Any) -> None:
    spec = agent(server.url("/bad-status"), headers={"Authorization": "Bearer tok-5ecret-abcdef"})
    result = await fast_probe(spec)
    assert b"Authorization: Bearer tok-5ecret-abcdef" in server.requests[0]
    assert not result.ok and "tok-5ecret-abcdef" not in repr(result)
    assert "tok-5ecret-abcdef" not in every_log.text


async def test_url_credentials_are_redacted(server: Scripted) -> None:
    result = await fast_probe(agent(server.url("/ok?token=qt-123456789").replace("://", "://ops:pw-secret-1@")))
    assert result.ok and "pw-secret-1" not in repr(result) and "qt-123456789" not in repr(result)
    assert result.details["url"] == f"http://***@127.0.0.1:{server.port}/ok?token=***"


# TLS


@pytest.fixture
def tls_server(pki: TestPki) -> Iterator[Scripted]:
    srv = Scripted(tls=pki.server_context(days=3.5))
    yield srv
    srv.close()


async def test_tls_verified_with_the_certificate_read(tls_server: Scripted, pki: TestPki) -> None:
    spec = agent(tls_server.url("/ok"), tls_min_days=14)
    fast = await fast_probe(spec, tls=pki.client_context())
    assert outcome(fast) == outcome(await httpx_probe(spec, tls=pki.client_context()))
    assert (fast.ok, fast.reason) == (False, "TLS certificate expires in 3 days (tls_min_days 14)")
    assert fast.details["tls_days_left"] == 3


async def test_tls_untrusted_by_default(tls_server: Scripted) -> None:
    spec = agent(tls_server.url("/ok"), tls_min_days=1)
    fast = await fast_probe(spec)
    assert outcome(fast) == outcome(await httpx_probe(spec))
    assert fast.reason.startswith("TLS certificate verification failed")


async def test_tls_keepalive(tls_server: Scripted, pki: TestPki) -> None:
    async with FastHttp(tls=pki.client_context(), keepalive=True) as client:
        for _ in range(3):
            async with client.get(tls_server.url("/ok")) as answer:
                assert answer.tls_object is not None and answer.tls_object.getpeercert()
                assert await answer.read() == b'{"status":"ok"}'
    assert tls_server.connections == 1


def test_requests_with_credentials_are_not_kept() -> None:
    """Requests are kept per URL only without credentials: a token in a header or the URL is not
    held in memory past the probe (and a rotated token is never sent from a kept request)."""
    from agentwatch.probes.fasthttp import FastHttp

    client = FastHttp()
    plain = httpx.URL("http://127.0.0.1:9/health")
    assert client.request(plain, {"accept-encoding": "identity"}) is client.request(
        plain, {"accept-encoding": "identity"}
    )
    token = {"accept-encoding": "identity", "Authorization": "Bearer s3cret-token"}
    assert client.request(plain, token) is not client.request(plain, token)
    userinfo = httpx.URL("http://user:pw@127.0.0.1:9/health")
    assert client.request(userinfo) is not client.request(userinfo)
