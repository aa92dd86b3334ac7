"""Limits that keep the heartbeat server answering while callers without a token misbehave.

`serve` runs the app with uvicorn held to limits a caller without a token cannot exhaust:

- a request deadline: from the moment a connection opens (or its previous response ended) to the
  end of the response, `request_timeout` seconds (headers and body included), then it is closed.
  uvicorn has no header-read timeout: a client trickling its headers a byte a second was kept open
  forever, and enough of them used up every file descriptor;
- a connection cap below the open-file limit (RLIMIT_NOFILE less a reserve for the store and logs,
  and room for the sockets accepted but not yet counted): at the cap, each new connection closes
  the oldest one still waiting for its request head, so clients that send a whole request at once
  are answered while slow ones are shed. Sockets are accepted a few at a time from a deep listen
  queue, so a burst never overshoots the cap by much and a good client's SYN is queued, not
  dropped;
- rate-limited error logs (uvicorn's and asyncio's): a flood of bad or failing connections costs at
  most a few lines per key every 10 s, with the count of those left out.

Measured with `bench/heartbeat_slowloris.py` (1,100 slow connections, open-file limit 1,024).
The protocol is a subclass of uvicorn's h11 protocol (uvicorn is pinned in constraints.txt); the
tests in tests/security/test_heartbeat_dos.py drive it for real.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import resource
import socket
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import uvicorn

from .config import ServerConfig

if TYPE_CHECKING:
    from starlette.applications import Starlette

__all__ = ["FLOODABLE_LOGGERS", "RateLimitedLog", "connection_cap", "serve", "uvicorn_config"]

log = logging.getLogger(__name__)

_FD_RESERVE = 64  # descriptors kept for everything but client connections: store, logs, Prefect
_LISTEN_QUEUE = 4096  # the kernel caps it at net.core.somaxconn
_REPORT_EVERY = 10.0  # seconds between two log lines about shed connections


def connection_cap(nofile: int | None = None, backlog: int | None = None) -> int:
    """The most client connections the open-file limit allows: the soft RLIMIT_NOFILE less a
    reserve (store, logs, Prefect client) and room for the accept pipeline: asyncio accepts up to
    `backlog` sockets per loop turn, each holding a descriptor for a few turns before it reaches
    `connection_made`, where the cap acts (and an evicted one is closed a turn later)."""
    if nofile is None:
        nofile = _nofile()
    batch = _accept_batch(nofile) if backlog is None else backlog
    reserve = min(_FD_RESERVE, nofile // 8)
    return max(8, nofile - reserve - 8 * batch)


def _nofile() -> int:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 65536


def _accept_batch(nofile: int) -> int:
    return max(4, min(16, nofile // 16))


class _Waiting:
    """The connections of one server that wait for a request head, oldest first, and the count of
    connections shed, logged in one line at once and then at most every 10 s."""

    def __init__(self, cap: int, request_timeout: float) -> None:
        self.cap, self.request_timeout = cap, request_timeout
        self.queue: OrderedDict[Any, None] = OrderedDict()  # protocol -> None
        self.shed: Counter[str] = Counter()
        self._reported = -math.inf
        self._timer: asyncio.TimerHandle | None = None

    def count(self, what: str) -> None:
        self.shed[what] += 1
        wait = self._reported + _REPORT_EVERY - time.monotonic()
        if wait <= 0:
            self.report()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(wait, self.report)

    def report(self) -> None:
        self._timer = None
        self._reported = time.monotonic()
        if self.shed:
            log.warning(
                "heartbeat server shed connections: %d closed at the cap of %d connections (the oldest waiting for "
                "a request), %d refused with none to close, %d too slow (request deadline %gs); "
                "logged at most every %gs",
                self.shed["evicted"],
                self.cap,
                self.shed["refused"],
                self.shed["slow"],
                self.request_timeout,
                _REPORT_EVERY,
            )
            self.shed.clear()


def _protocol_class(cfg: ServerConfig, cap: int) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol with the request deadline and the connection cap (module docstring)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    waiting = _Waiting(cap, cfg.request_timeout)

    class HeartbeatProtocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None
        _seen_cycle: Any = None
        _started = False  # bytes of the current request arrived

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)  # type: ignore[arg-type]
            if len(self.connections) > waiting.cap:
                if waiting.queue:
                    oldest, _ = waiting.queue.popitem(last=False)
                    oldest.transport.abort()
                    waiting.count("evicted")
                else:  # every connection is mid-request: this one waits its turn outside
                    self.transport.abort()
                    waiting.count("refused")
                    return
            self._await_request()

        def _await_request(self) -> None:
            waiting.queue[self] = None
            self._started = False
            self._arm(cfg.request_timeout)

        def data_received(self, data: bytes) -> None:
            self._started = True
            super().data_received(data)

        def _arm(self, seconds: float) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            self._deadline = self.loop.call_later(seconds, self._expire)

        def _expire(self) -> None:
            self._deadline = None
            waiting.queue.pop(self, None)
            if not self.transport.is_closing():
                self.transport.abort()
                if self._started:  # an idle keep-alive connection timing out is no news
                    waiting.count("slow")

        def handle_events(self) -> None:
            super().handle_events()
            if self.cycle is not self._seen_cycle:  # a request head arrived: no longer idle
                self._seen_cycle = self.cycle
                waiting.queue.pop(self, None)

        def on_response_complete(self) -> None:
            if not self.transport.is_closing():
                self._await_request()  # the deadline starts again for the next request
            super().on_response_complete()  # may handle a pipelined request at once

        def connection_lost(self, exc: Exception | None) -> None:
            waiting.queue.pop(self, None)
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            super().connection_lost(exc)

    return HeartbeatProtocol


def uvicorn_config(
    app: Starlette, host: str, port: int, config: ServerConfig | None = None, *, access_log: bool = False
) -> uvicorn.Config:
    """The uvicorn configuration that `serve` runs: the limits of the module docstring."""
    cfg = config or ServerConfig()
    nofile = _nofile()
    backlog = _accept_batch(nofile)
    cap = connection_cap(nofile, backlog)
    if cfg.max_connections:
        if cfg.max_connections > cap:
            log.warning(
                "heartbeat server: max connections %d is more than the open-file limit %d allows; using %d",
                cfg.max_connections,
                nofile,
                cap,
            )
        cap = min(cfg.max_connections, cap)
    log.info(
        "heartbeat server limits: %d connections (open-file limit %d), request deadline %gs, keep-alive %gs",
        cap,
        nofile,
        cfg.request_timeout,
        cfg.keep_alive,
    )
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=_protocol_class(cfg, cap),
        backlog=backlog,
        timeout_keep_alive=max(1, math.ceil(cfg.keep_alive)),
        h11_max_incomplete_event_size=cfg.max_header_bytes,
        access_log=access_log,
        log_level="info",
        lifespan="on",
    )


def serve(
    app: Starlette, host: str, port: int, config: ServerConfig | None = None, *, access_log: bool = False
) -> None:
    """Run the app with uvicorn under the limits of the module docstring until interrupted."""
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: uvicorn has shut down cleanly already
        _Server(uvicorn_config(app, host, port, config, access_log=access_log)).run()


class _Server(uvicorn.Server):
    """uvicorn's server with a listen queue deeper than its accept batch.

    asyncio takes one number for both: how many connections the kernel queues before accept, and
    how many it accepts in one go (each a descriptor before the cap can act). The batch stays small
    (`_accept_batch`); the queue is deepened, so that while slow connections churn at the cap a
    good client's SYN waits in the queue instead of being dropped and retried a second later.
    Queued connections hold no descriptor of ours.
    """

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        for server in getattr(self, "servers", []):
            for listener in server.sockets:
                with contextlib.suppress(OSError), contextlib.closing(listener.dup()) as sock:
                    sock.listen(_LISTEN_QUEUE)


FLOODABLE_LOGGERS = ("uvicorn.error", "asyncio")


class RateLimitedLog(logging.Filter):
    """Let through at most `burst` records per message every `per` seconds, and `total` records in
    all; the first one let through after a pause says how many were left out.

    Records are keyed by logger and the first line of their message template, so "socket.accept()
    out of system resource" about a thousand sockets is one key. Its traceback goes with the
    records let through and with no others.
    """

    def __init__(
        self, per: float = 10.0, burst: int = 3, total: int = 30, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.per, self.burst, self.total, self._clock = per, burst, total, clock
        self._window = -math.inf
        self._counts: Counter[tuple[str, str]] = Counter()
        self._dropped: Counter[tuple[str, str]] = Counter()
        self._passed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        now = self._clock()
        if now - self._window >= self.per:
            self._window, self._passed = now, 0
            self._counts.clear()
        key = (record.name, str(record.msg).split("\n", 1)[0][:200])
        self._counts[key] += 1
        if self._counts[key] > self.burst or self._passed >= self.total:
            self._dropped[key] += 1
            return False
        self._passed += 1
        if dropped := self._dropped.pop(key, 0):
            record.msg = f"{record.msg} ({dropped} more like this left out of the log)"
        if len(self._dropped) > 1000:  # bounded, whatever varies in the messages
            self._dropped.clear()
        return True
