"""The http probe's client: a minimal HTTP/1.1 GET on an asyncio Protocol, near what one core does.

httpx spends most of a health check in its own layers (bench/probe_clients.py measures the
clients side by side; docs/decisions.md "HTTP clients"). A GET here:

- opens a connection per request by default (`Connection: close`), as probing distinct hosts
  does; with `keepalive=True` a connection whose answer ended cleanly is kept per scheme, host
  and port for the client's life, and one that closes before answering is replaced once;
- verifies TLS (the context given, else `default_tls_context()`: certifi's bundle, as httpx's
  `verify=True`), ALPN http/1.1; the verified peer certificate is `Exchange.tls_object`'s;
- follows no redirect, uses no proxy, no cookie, no timeout of its own (run_probe's
  `asyncio.timeout` bounds each exchange; a cancelled one closes its connection);
- sends Host, Accept, Accept-Encoding, Connection and User-Agent unless the caller's headers name
  them; user info in the URL becomes Basic authorization, as with httpx; reads the answer with
  `http1.ResponseParser`, the body up to the cap given.

Failures: OSError from the socket or TLS (refused, reset, certificate, DNS); BadAnswer for an
answer that breaks HTTP/1.1, worded as httpx words it; ValueError for unsendable headers.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import ipaddress
import re
import socket
import ssl
from asyncio.staggered import staggered_race
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import httpx

from .._version import __version__
from ..errors import BadAnswer
from .http1 import ResponseParser

__all__ = ["UNSENDABLE", "Exchange", "FastHttp", "Request", "default_tls_context"]

UNSENDABLE = "the HTTP client refused to send the request (an invalid header name or value)"
USER_AGENT = f"agentwatch/{__version__}"
HAPPY_EYEBALLS_DELAY = 0.25  # s before the next address of a name is tried too (as anyio, under httpx)

_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
_FIELD_VALUE = re.compile(rb"(?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?")  # h11: no CR, LF, NUL, edge blanks


@functools.cache
def default_tls_context() -> ssl.SSLContext:
    """The verifying TLS context httpx makes for `verify=True` without the environment (certifi's
    CA bundle, hostname checked), made once per process: loading the bundle takes about 20 ms,
    which a context per batch of probes paid every cycle."""
    import certifi

    context = ssl.create_default_context(cafile=certifi.where())
    context.set_alpn_protocols(["http/1.1"])
    return context


class Request:
    """A GET ready to send: where to connect, and the bytes to write."""

    __slots__ = ("data", "host", "key", "port", "tls")

    def __init__(self, url: httpx.URL, headers: Mapping[str, str], keepalive: bool) -> None:
        scheme = url.scheme
        if scheme not in ("http", "https"):
            raise ValueError(f"not an http(s) URL: scheme {scheme!r}")
        self.tls = scheme == "https"
        self.host = url.raw_host.decode("ascii")
        self.port = url.port or (443 if self.tls else 80)
        self.key = (scheme, self.host, self.port)
        given: dict[bytes, bytes] = {}  # lower-case name -> the header line
        for name, value in headers.items():
            try:
                raw_name, raw_value = name.encode("ascii"), value.encode("ascii")
            except UnicodeEncodeError:
                raise ValueError(UNSENDABLE) from None
            if not _TOKEN.fullmatch(raw_name) or not _FIELD_VALUE.fullmatch(raw_value):
                raise ValueError(UNSENDABLE)
            given[raw_name.lower()] = raw_name + b": " + raw_value
        if url.username or url.password:  # httpx: the URL's credentials win over a header
            userpass = base64.b64encode(f"{url.username}:{url.password}".encode())
            given[b"authorization"] = b"Authorization: Basic " + userpass
        lines = [b"GET " + url.raw_path + b" HTTP/1.1"]
        if b"host" not in given:
            lines.append(b"Host: " + url.netloc)
        for lower, line in _KEEPALIVE_DEFAULTS if keepalive else _CLOSE_DEFAULTS:
            if lower not in given:
                lines.append(line)
        lines.extend(given.values())
        lines.append(b"\r\n")
        self.data = b"\r\n".join(lines)


def _defaults(connection: bytes) -> tuple[tuple[bytes, bytes], ...]:
    return (
        (b"accept", b"Accept: */*"),
        (b"accept-encoding", b"Accept-Encoding: gzip, deflate"),
        (b"connection", b"Connection: " + connection),
        (b"user-agent", b"User-Agent: " + USER_AGENT.encode("ascii")),
    )


_KEEPALIVE_DEFAULTS, _CLOSE_DEFAULTS = _defaults(b"keep-alive"), _defaults(b"close")


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection; it feeds what arrives to the parser of the current exchange."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser: ResponseParser | None = None
        self.error: BaseException | None = None
        self.closed = False
        self.stray = False  # bytes arrived while no exchange was waiting: never reuse
        self._waiter: asyncio.Future[None] | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport subclass

    def data_received(self, data: bytes) -> None:
        parser = self.parser
        if parser is None or self.error is not None:
            self.stray = True
            return
        try:
            parser.feed(data)
        except BadAnswer as exc:
            self._fail(exc)
            return
        if parser.capped and self.transport is not None:
            self.transport.pause_reading()  # the rest of a large body is never read
        if parser.head_done:
            self._wake()

    def eof_received(self) -> bool | None:
        self._end(None)
        return None  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._end(exc)

    # the exchange's side

    def start(self, request: Request, cap: int) -> None:
        assert self.transport is not None
        self.parser = ResponseParser(cap)
        self.transport.write(request.data)

    async def wait(self, body: bool) -> ResponseParser:
        """The parser once the head (or, with `body`, the whole capped body) is in; raises what
        ended the connection first."""
        parser = self.parser
        assert parser is not None
        while self.error is None and not (parser.done if body else parser.head_done):
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if self.error is not None:
            raise self.error
        return parser

    @property
    def alive(self) -> bool:
        """Open, and nothing arrived that no exchange asked for."""
        return not (self.closed or self.stray or self.transport is None or self.transport.is_closing())

    @property
    def reusable(self) -> bool:
        return self.alive and self.error is None and self.parser is not None and self.parser.reusable

    def close(self, abort: bool = False) -> None:
        if self.transport is not None and not self.transport.is_closing():
            (self.transport.abort if abort else self.transport.close)()

    def _end(self, exc: Exception | None) -> None:
        parser = self.parser
        if parser is None:
            self.stray = True  # an idle kept connection was closed by its server
            return
        if self.error is None and not parser.done:
            if exc is not None:
                self.error = exc
            else:
                try:
                    parser.feed_eof()
                except BadAnswer as bad:
                    self.error = bad
        self._wake()

    def _fail(self, exc: BaseException) -> None:
        self.error = exc
        self.close(abort=True)
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class Exchange:
    """One GET, as an async context manager: entered once the answer's head is in (`status`,
    `headers`, `tls_object`), `read()` gives the body up to the cap; leaving it closes the
    connection (or keeps it, with keepalive, when the answer ended cleanly)."""

    __slots__ = ("_cap", "_client", "_conn", "_request")

    def __init__(self, client: FastHttp, request: Request, cap: int) -> None:
        self._client, self._request, self._cap = client, request, cap
        self._conn: _Connection | None = None

    async def __aenter__(self) -> Exchange:
        try:
            await self._begin()
        except BaseException:  # a failure, or a timeout's cancellation: __aexit__ will not run
            if self._conn is not None:
                self._conn.close(abort=True)
                self._conn = None
            raise
        return self

    async def _begin(self) -> None:
        client, request = self._client, self._request
        kept = client._take_idle(request.key)
        if kept is not None:
            self._conn = kept
            kept.start(request, self._cap)
            try:
                await kept.wait(body=False)
                return
            except (OSError, BadAnswer):
                assert kept.parser is not None
                if kept.parser.received:
                    raise  # the server did answer: that is the outcome
                kept.close(abort=True)  # gone stale while kept: once more on a new connection
        self._conn = await client._open(request)
        self._conn.start(request, self._cap)
        await self._conn.wait(body=False)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._client._release(self._request.key, conn, failed=exc is not None)

    def _parser(self) -> ResponseParser:
        assert self._conn is not None and self._conn.parser is not None, "use inside `async with`"
        return self._conn.parser

    @property
    def status(self) -> int:
        return self._parser().status

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        """(lower-case name, value) of each header of the answer."""
        return self._parser().headers

    @property
    def tls_object(self) -> ssl.SSLObject | None:
        """The TLS connection the answer came on (its `getpeercert()` is the verified
        certificate), None for plain HTTP."""
        assert self._conn is not None and self._conn.transport is not None
        found = self._conn.transport.get_extra_info("ssl_object")
        return found if isinstance(found, ssl.SSLObject) else None

    async def read(self) -> bytes:
        """The body, decoded, up to the cap (the rest is never read)."""
        assert self._conn is not None
        parser = await self._conn.wait(body=True)
        return bytes(parser.body)


class FastHttp:
    """GETs over HTTP/1.1 (see the module's doc). Use as `async with FastHttp() as client`, then
    `async with client.get(url, headers, cap) as answer: answer.status, await answer.read()`."""

    def __init__(self, *, tls: ssl.SSLContext | None = None, keepalive: bool = False, max_idle: int = 100) -> None:
        self._tls = tls
        self.keepalive = keepalive
        self.max_idle = max_idle
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._n_idle = 0
        self.closed = False

    async def __aenter__(self) -> FastHttp:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:  # close every kept connection
        self.closed = True
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()
        self._n_idle = 0

    def request(self, url: httpx.URL, headers: Mapping[str, str] | None = None) -> Request:
        """The GET of `url` with `headers`; ValueError for an unsendable header or a non-http(s) URL."""
        pairs = tuple((headers or {}).items())
        if url.userinfo or any(name.lower() != "accept-encoding" for name, _ in pairs):
            return Request(url, dict(pairs), self.keepalive)  # credentials are not kept past the call
        return _request(url, pairs, self.keepalive)

    def send(self, request: Request, cap: int = 65536) -> Exchange:
        return Exchange(self, request, cap)

    def get(self, url: httpx.URL | str, headers: Mapping[str, str] | None = None, cap: int = 65536) -> Exchange:
        return self.send(self.request(httpx.URL(url), headers), cap)

    # connections

    async def _open(self, request: Request) -> _Connection:
        loop = asyncio.get_running_loop()
        tls = (self._tls or default_tls_context()) if request.tls else None
        server_hostname = request.host if tls is not None else None
        if _is_ip(request.host):
            _, conn = await loop.create_connection(
                _Connection, request.host, request.port, ssl=tls, server_hostname=server_hostname
            )
        else:
            sock = await _connect_any(loop, request.host, request.port)
            _, conn = await loop.create_connection(_Connection, sock=sock, ssl=tls, server_hostname=server_hostname)
        return conn

    def _take_idle(self, key: tuple[str, str, int]) -> _Connection | None:
        conns = self._idle.get(key)
        while conns:
            conn = conns.pop()
            self._n_idle -= 1
            if conn.alive:
                return conn
            conn.close()
        return None

    def _release(self, key: tuple[str, str, int], conn: _Connection, failed: bool) -> None:
        if self.keepalive and not failed and not self.closed and conn.reusable and self._n_idle < self.max_idle:
            conn.parser = None
            self._idle.setdefault(key, []).append(conn)
            self._n_idle += 1
        else:
            conn.close(abort=failed)


@functools.lru_cache(maxsize=16384)
def _request(url: httpx.URL, headers: tuple[tuple[str, str], ...], keepalive: bool) -> Request:
    """The Request for a URL without credentials, made once per distinct URL (the monitor GETs
    every agent's URL each cycle; building the bytes took 30 us a probe; about 1 KB each). A
    Request is never changed once made; one that cannot be sent raises each time (not kept)."""
    return Request(url, dict(headers), keepalive)


@functools.lru_cache(maxsize=4096)
def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def _connect_any(loop: asyncio.AbstractEventLoop, host: str, port: int) -> socket.socket:
    """A connected socket to `host`: its addresses tried in the resolver's order, the next one
    started after HAPPY_EYEBALLS_DELAY while the last still waits. When all fail, the first
    address's error is raised (socket.gaierror when the name does not resolve)."""
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if len(infos) == 1:
        return await _connect_one(loop, infos[0])
    attempts = [functools.partial(_connect_one, loop, info) for info in infos]
    sock, _, errors = await staggered_race(attempts, HAPPY_EYEBALLS_DELAY)
    if sock is None:
        raise next(e for e in errors if e is not None)
    assert isinstance(sock, socket.socket)
    return sock


async def _connect_one(loop: asyncio.AbstractEventLoop, info: tuple[Any, ...]) -> socket.socket:
    family, kind, proto, _, address = info
    sock = socket.socket(family, kind, proto)
    try:
        sock.setblocking(False)
        await loop.sock_connect(sock, address)
    except BaseException:
        sock.close()
        raise
    return sock
