"""The dispatcher: run the probe of each agent's kind, within its timeout, and scrub the result.

`run_probe` checks one agent and `probe_many` a whole batch, concurrently. Each check gets the
agent's `policy.timeout` for the whole of it (connect, request, body, process exit): an httpx
timeout is per operation, so the total is enforced here with `asyncio.timeout`, and a hung target
costs at most that timeout without delaying any other agent's check.

Dispatch is the plain mapping `PROBES` from probe kind to coroutine function, one module per kind.
The dispatcher knows no backend: what a probe needs beyond its agent comes in the ProbeContext the
caller fills (the HTTP client, the heartbeat agents' beats, the Docker engine connection).
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Sequence
from contextlib import AsyncExitStack
from datetime import timedelta
from typing import Any

import httpx

from ..models import AgentState, Asserted, Cause, NotProbed, ProbeResult
from ..redact import agent_secrets, redact_result, redact_text
from ..registry import AgentSpec
from ..settings import environment
from .a2a import probe_a2a
from .acp import probe_acp
from .command import probe_command
from .context import BeatSnapshot, ContainerInspector, ProbeContext, ProbeFn
from .docker import probe_docker
from .fasthttp import FastHttp, default_tls_context
from .heartbeat import probe_heartbeat
from .http import display_url, effective_url, probe_http
from .mcp import probe_mcp
from .tcp import describe_exception, probe_tcp

__all__ = ["PROBES", "make_http_client", "probe_many", "run_probe"]

log = logging.getLogger(__name__)

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
    docker: ContainerInspector | None = None,
    fast_http: FastHttp | None = None,
) -> ProbeResult:
    """Check one agent within its `policy.timeout`; every failure becomes a failed ProbeResult.

    Unmanaged agents (stdio transport, placeholder endpoint) are reported as unmanaged without
    touching the network. An unexpected exception in a probe (a bug) becomes a failed result with
    reason "probe error: ..." and is logged with its traceback. A docker agent is inspected on
    `docker`, the caller's engine connection; given none, it is not probed. An http agent is
    checked with `fast_http` when given, else with `http`.

    This is the boundary every result passes before it is stored or shown: its reason and details
    are scrubbed here of the agent's header values, URL credentials and secrets taken from the
    environment (`agentwatch.redact`).
    """
    secrets = agent_secrets(agent, environment() if _reads_environment(agent) else None)
    ctx = ProbeContext(http=http, max_body_bytes=max_body_bytes, beats=beats, docker=docker, fast_http=fast_http)
    result = await _run_probe(agent, secrets, ctx)
    return redact_result(result, secrets)


def _reads_environment(agent: AgentSpec) -> bool:
    """Whether the agent's probe takes values from the environment (`env: {NAME: {env: VAR}}`),
    which are then secrets too. Copying the environment for every probe cost about 0.1 ms, a
    third of a fresh GET: only those probes pay it."""
    probe = agent.probe
    if probe is None or probe.http is not None:  # the hot path: an http probe takes nothing from it
        return False
    return bool(getattr(getattr(probe, probe.kind, None), "env", None))


async def _run_probe(agent: AgentSpec, secrets: tuple[str, ...], ctx: ProbeContext) -> ProbeResult:
    if (why := agent.unmanaged_reason) is not None:
        return ProbeResult(agent.id, ok=True, reason=why, override=Asserted(AgentState.UNMANAGED, Cause.UNMANAGED))
    assert agent.probe is not None  # an agent without a probe is unmanaged
    kind = agent.probe.kind
    probe = PROBES.get(kind)
    if probe is None:
        return ProbeResult(agent.id, ok=False, reason=f"no probe registered for kind {kind!r}", override=NotProbed())
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
    """The shared httpx client for a batch: pool sized to `concurrency`, TLS verified, no redirects.

    `trust_env=False` so that proxy variables of the monitor's environment never reroute health
    checks; no client timeout, because `run_probe` bounds each check as a whole. TLS verifies as
    `verify=True` does (certifi's bundle), with the one context of the process: loading the bundle
    per client cost about 20 ms a batch.
    """
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    return httpx.AsyncClient(
        limits=limits, verify=default_tls_context(), follow_redirects=False, trust_env=False, timeout=None
    )


async def probe_many(
    agents: Sequence[AgentSpec],
    *,
    concurrency: int = 500,
    max_body_bytes: int = 65536,
    http: httpx.AsyncClient | None = None,
    beats: BeatSnapshot | None = None,
    docker: ContainerInspector | None = None,
    fast_http: FastHttp | None = None,
    slots: asyncio.Semaphore | None = None,
) -> list[ProbeResult]:
    """Check every agent concurrently, at most `concurrency` at once; results in input order.

    `slots`, when given, bounds the checks instead: one semaphore shared by every batch of a cycle
    keeps the whole cycle at its probe concurrency, and a batch with slow targets does not hold
    slots another batch could use (`concurrency` then only sizes the httpx pool).

    Creates and closes one shared httpx client when `http` is None, and then also the fast client
    http agents are checked with (agentwatch.probes.fasthttp: a fresh connection per agent); given
    `http` and no `fast_http`, http agents are checked with `http`. Docker agents are inspected on
    `docker`, one engine connection for the batch (so a dead engine is found out once, not per
    agent), which the caller makes and closes. A check's timeout starts when it gets its slot, so
    with more hung targets than slots the later checks wait for a slot (size `concurrency` to the
    batch). One probe's bug never fails the batch.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    gate = slots if slots is not None else asyncio.Semaphore(concurrency)
    async with AsyncExitStack() as stack:
        if http is None:
            http = await stack.enter_async_context(make_http_client(concurrency))
            if fast_http is None:
                fast_http = await stack.enter_async_context(FastHttp())
        client: httpx.AsyncClient = http  # a name the closure below can rely on being set
        fast = fast_http

        async def one(agent: AgentSpec) -> ProbeResult:
            async with gate:
                try:
                    return await run_probe(
                        agent, http=client, max_body_bytes=max_body_bytes, beats=beats, docker=docker, fast_http=fast
                    )
                except Exception as exc:  # run_probe catches probe bugs; this is the last net
                    secrets = agent_secrets(agent, environment())
                    _log_bug(f"probing agent {agent.id} failed unexpectedly", exc, secrets)
                    return redact_result(_error_result(agent, exc), secrets)

        return list(await asyncio.gather(*(one(agent) for agent in agents)))
