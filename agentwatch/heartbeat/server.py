"""The heartbeat push endpoint: a small starlette app, served by uvicorn.

    POST /ping/{agent_id}              a beat (alive; for a job: succeeded)
    POST /ping/{agent_id}/start        a job run began
    POST /ping/{agent_id}/fail         a job run failed
    POST /ping/{agent_id}/{exit_code}  a job run ended: 0 is a beat, anything else a failure
    GET  /healthz                      the server's own health, for an http probe (503 while
                                       writes to the store fail)

Answers: 200 "OK"; 404 for an id that is not a heartbeat agent of the registry; 401 for a missing
or wrong `Authorization: Bearer` token; 413 for a body over the cap (the body is read and
dropped); 429 with Retry-After past the agent's rate limit; 503 when the agent's configured
token could not be read at start. Checks run in that order, so a caller without the token cannot
use up an agent's rate limit. Beats of paused agents are recorded too: the monitor decides.

Served by `serve` (agentwatch.heartbeat.limits) under limits a caller without a token cannot
exhaust: a request deadline, a connection cap below the open-file limit, rate-limited error logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ..beats import Beat, PingKind
from ..registry import Registry
from ..store import StateStore
from .config import ServerConfig
from .intake import BatchSink, BeatBuffer, Credentials, Flusher, RateLimiter
from .limits import FLOODABLE_LOGGERS, RateLimitedLog, connection_cap, serve, uvicorn_config

__all__ = ["RateLimitedLog", "ServerConfig", "connection_cap", "create_app", "serve", "uvicorn_config"]

log = logging.getLogger(__name__)


# An exit code: ASCII digits only ("²".isdigit() is true, and int("²") raises).
_EXIT_CODE = re.compile(r"[0-9]{1,3}")


class _BodyTooLarge(Exception):
    pass


def create_app(
    registry: Registry,
    store: StateStore,
    credentials: Credentials | None = None,
    config: ServerConfig | None = None,
    sink: BatchSink | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Starlette:
    """The ASGI app. It owns `store` from start-up to shutdown (closing it last) and flushes the
    buffered beats on shutdown before that."""
    cfg = config or ServerConfig()
    creds = credentials or Credentials()
    agents = {a.id for a in registry.agents if a.probe is not None and a.probe.heartbeat is not None}
    limiter = RateLimiter(cfg.rate, cfg.burst)
    buffer = BeatBuffer()
    flusher = Flusher(store, buffer, cfg.flush_interval, sink, report_every=cfg.event_interval)
    refused: Counter[int] = Counter()

    def refuse(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
        refused[status] += 1
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    async def ping(request: Request) -> Response:
        try:
            return await _ping(request)
        except ClientDisconnect:  # gone mid-body (or closed at the request deadline): nobody to answer
            return Response(status_code=400)

    async def _ping(request: Request) -> Response:
        agent_id: str = request.path_params["agent_id"]
        kind, code = _kind(request.path_params.get("signal"))
        if kind is None:
            return refuse(404, "not a ping: use /ping/ID, /ping/ID/start, /ping/ID/fail or /ping/ID/EXIT_CODE")
        if agent_id not in agents:
            return refuse(404, f"unknown heartbeat agent {agent_id!r}")
        if agent_id in creds.unavailable:
            return refuse(503, "this agent's token is not available on the server")
        if not creds.check(agent_id, request.headers.get("authorization")):
            log.debug("ping of %s refused: missing or wrong token", agent_id)
            return refuse(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})
        length = request.headers.get("content-length", "")
        if length.isascii() and length.isdigit() and int(length) > cfg.max_body_bytes:
            return refuse(413, f"body over {cfg.max_body_bytes} bytes")
        wait = limiter.acquire(agent_id)
        if wait > 0:
            return refuse(429, "too many pings for this agent", {"Retry-After": str(math.ceil(wait))})
        try:
            await _read_capped(request, cfg.max_body_bytes)
        except _BodyTooLarge:
            return refuse(413, f"body over {cfg.max_body_bytes} bytes")
        buffer.add(Beat.ping(agent_id, kind, clock(), code))
        return PlainTextResponse("OK")

    async def healthz(request: Request) -> Response:
        # 503 while writes to the store fail: the pings are still taken, but only held in memory.
        ok = flusher.failing == 0
        body = {"ok": ok, "agents": len(agents), "pending": len(buffer), "written": flusher.written}
        return JSONResponse({**body, "refused": refused}, status_code=200 if ok else 503)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await store.ensure_schema()  # fail at start, not at the first flush, if the store is unusable
        task = asyncio.create_task(flusher.run(), name="heartbeat-flush")
        log.info("heartbeat server: %d agent(s), flushing every %.2fs", len(agents), cfg.flush_interval)
        # Here rather than in `serve`, so that however the app is served a flood of failing
        # connections cannot flood the log.
        limited = RateLimitedLog()
        for name in FLOODABLE_LOGGERS:
            logging.getLogger(name).addFilter(limited)
        try:
            yield
        finally:
            flusher.stop()
            await task  # its last flush writes every acknowledged ping
            await flusher.drain_reports()
            await store.close()
            for name in FLOODABLE_LOGGERS:
                logging.getLogger(name).removeFilter(limited)

    routes = [
        Route("/ping/{agent_id}", ping, methods=["POST"]),
        Route("/ping/{agent_id}/{signal}", ping, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def _kind(signal: str | None) -> tuple[PingKind | None, int | None]:
    if signal is None:
        return PingKind.BEAT, None
    if signal == "start":
        return PingKind.START, None
    if signal == "fail":
        return PingKind.FAIL, None
    if _EXIT_CODE.fullmatch(signal) and int(signal) <= 255:
        code = int(signal)
        return (PingKind.BEAT if code == 0 else PingKind.FAIL), code
    return None, None


async def _read_capped(request: Request, cap: int) -> None:
    """Read and drop the body, stopping as soon as it passes `cap` (chunked bodies have no length)."""
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise _BodyTooLarge
