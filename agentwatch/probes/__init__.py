"""Probes: check agents and return a ProbeResult; never raise for a failed target.

`run_probe` checks one agent and `probe_many` a whole batch, concurrently. Each check gets the
agent's `policy.timeout` for the whole of it (connect, request, body, process exit): an httpx
timeout is per operation, so the total is enforced here with `asyncio.timeout`, and a hung target
costs at most that timeout without delaying any other agent's check.

Dispatch is the plain mapping `PROBES` from probe kind to coroutine function; the Docker and
heartbeat backends register their own entries in place of the placeholders below. The heartbeat
probe reads no network: it judges the beats the monitor loaded, passed as `beats=`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx

from ..docker.engine import DockerEngine
from ..docker.probe import probe_docker
from ..models import AgentState, ProbeResult
from ..redact import agent_secrets, redact_result, redact_text
from ..registry import AgentSpec
from ..settings import get_settings
from .a2a import probe_a2a
from .acp import probe_acp
from .command import probe_command
from .heartbeat import BeatSnapshot, probe_heartbeat
from .http import display_url, effective_url, probe_http
from .mcp import probe_mcp
from .tcp import describe_exception, probe_tcp

__all__ = ["PROBES", "ProbeContext", "ProbeFn", "make_http_client", "probe_many", "run_probe"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ProbeContext:
    """What a probe may use besides its agent: shared clients and limits."""

    http: httpx.AsyncClient
    max_body_bytes: int = 65536
    beats: BeatSnapshot | None = None  # heartbeat agents: beats the monitor read from the store
    docker: DockerEngine | None = None  # docker agents: one engine connection shared by a batch


ProbeFn = Callable[[AgentSpec, ProbeContext], Awaitable[ProbeResult]]


def _elsewhere(kind: str) -> ProbeFn:
    async def skipped(agent: AgentSpec, ctx: ProbeContext) -> ProbeResult:
        return ProbeResult(agent.id, ok=False, skipped=True, reason=f"probed by {kind} backend")

    return skipped


PROBES: dict[str, ProbeFn] = {
    "http": probe_http,
    "tcp": probe_tcp,
    "command": probe_command,
    "docker": probe_docker,
    "heartbeat": probe_heartbeat,
    "acp": probe_acp,
    "mcp": probe_mcp,
    "a2a": probe_a2a,
}


def _seconds(value: timedelta) -> str:
    return f"{value.total_seconds():g}s"


def _target_details(agent: AgentSpec) -> dict[str, Any]:
    """What was being checked, for a result the probe itself could not write (timeout, bug)."""
    probe = agent.probe
    if probe is not None and probe.http is not None:
        try:
            return {"url": display_url(effective_url(probe.http))}
        except httpx.InvalidURL:
            return {}
    if probe is not None and probe.tcp is not None:
        return {"host": probe.tcp.host, "port": probe.tcp.port}
    return {}


async def run_probe(
    agent: AgentSpec,
    *,
    http: httpx.AsyncClient,
    max_body_bytes: int = 65536,
    beats: BeatSnapshot | None = None,
    docker: DockerEngine | None = None,
) -> ProbeResult:
    """Check one agent within its `policy.timeout`; every failure becomes a failed ProbeResult.

    Unmanaged agents (stdio transport, placeholder endpoint) are reported as skipped without
    touching the network. An unexpected exception in a probe (a bug) becomes a failed result with
    reason "probe error: ..." and is logged with its traceback.

    This is the boundary every result passes before it is stored or shown: its reason and details
    are scrubbed here of the agent's header values, URL credentials and secrets taken from the
    environment (`agentwatch.redact`).
    """
    secrets = agent_secrets(agent, os.environ)
    result = await _run_probe(agent, secrets, http, max_body_bytes, beats, docker)
    return redact_result(result, secrets)


async def _run_probe(
    agent: AgentSpec,
    secrets: tuple[str, ...],
    http: httpx.AsyncClient,
    max_body_bytes: int,
    beats: BeatSnapshot | None,
    docker: DockerEngine | None,
) -> ProbeResult:
    if (why := agent.unmanaged_reason) is not None:
        return ProbeResult(agent.id, ok=True, skipped=True, state=AgentState.UNMANAGED, reason=why)
    assert agent.probe is not None  # an agent without a probe is unmanaged
    kind = agent.probe.kind
    probe = PROBES.get(kind)
    if probe is None:
        return ProbeResult(agent.id, ok=False, skipped=True, reason=f"no probe registered for kind {kind!r}")
    ctx = ProbeContext(http=http, max_body_bytes=max_body_bytes, beats=beats, docker=docker)
    timeout = agent.policy.timeout
    start = time.perf_counter()
    try:
        async with asyncio.timeout(timeout.total_seconds()):
            return await probe(agent, ctx)
    except TimeoutError:
        # Raised by the deadline above, or by a probe whose own client timed out first.
        return ProbeResult(
            agent.id,
            ok=False,
            latency_ms=(time.perf_counter() - start) * 1000,
            reason=f"timed out after {_seconds(timeout)}",
            details={**_target_details(agent), "timeout_s": timeout.total_seconds()},
        )
    except Exception as exc:
        _log_bug(f"probe of agent {agent.id} ({kind}) failed unexpectedly", exc, secrets)
        return _error_result(agent, exc, (time.perf_counter() - start) * 1000)


def _log_bug(message: str, exc: BaseException, secrets: tuple[str, ...]) -> None:
    # The traceback is logged, but scrubbed: an exception's message may quote a header value.
    trace = "".join(traceback.format_exception(exc)).rstrip()
    log.error("%s\n%s", message, redact_text(trace, secrets))


def _error_result(agent: AgentSpec, exc: BaseException, latency_ms: float | None = None) -> ProbeResult:
    return ProbeResult(
        agent.id,
        ok=False,
        latency_ms=latency_ms,
        reason=f"probe error: {describe_exception(exc)}",
        details={**_target_details(agent), "error_type": type(exc).__name__},
    )


def make_http_client(concurrency: int = 500) -> httpx.AsyncClient:
    """The shared client for a batch: pool sized to `concurrency`, TLS verified, no redirects.

    `trust_env=False` so that proxy variables of the monitor's environment never reroute health
    checks; no client timeout, because `run_probe` bounds each check as a whole.
    """
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    return httpx.AsyncClient(limits=limits, verify=True, follow_redirects=False, trust_env=False, timeout=None)


async def probe_many(
    agents: Sequence[AgentSpec],
    *,
    concurrency: int = 500,
    max_body_bytes: int = 65536,
    http: httpx.AsyncClient | None = None,
    beats: BeatSnapshot | None = None,
    docker: DockerEngine | None = None,
) -> list[ProbeResult]:
    """Check every agent concurrently, at most `concurrency` at once; results in input order.

    Creates and closes one shared httpx client when `http` is None. A check's timeout starts when
    it gets its slot, so with more hung targets than slots the later checks wait for a slot (size
    `concurrency` to the batch). One probe's bug never fails the batch.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    slots = asyncio.Semaphore(concurrency)
    async with AsyncExitStack() as stack:
        if http is None:
            http = await stack.enter_async_context(make_http_client(concurrency))
        client: httpx.AsyncClient = http  # a name the closure below can rely on being set
        if docker is None and any(a.probe is not None and a.probe.kind == "docker" for a in agents):
            # One engine connection for the batch: a dead engine is then found out once, not per agent.
            docker = DockerEngine.from_settings(get_settings())
            stack.push_async_callback(docker.close)
        engine = docker

        async def one(agent: AgentSpec) -> ProbeResult:
            async with slots:
                try:
                    return await run_probe(
                        agent, http=client, max_body_bytes=max_body_bytes, beats=beats, docker=engine
                    )
                except Exception as exc:  # run_probe catches probe bugs; this is the last net
                    secrets = agent_secrets(agent, os.environ)
                    _log_bug(f"probing agent {agent.id} failed unexpectedly", exc, secrets)
                    return redact_result(_error_result(agent, exc), secrets)

        return list(await asyncio.gather(*(one(agent) for agent in agents)))
