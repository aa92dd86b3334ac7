"""The http probe: GET a URL and judge the status, an optional body substring and the latency.

The body is streamed and read only up to `max_body_bytes`, so an agent that answers with a huge
(or endless) body costs a bounded amount of memory and time. Request headers are sent but never
reported: they may carry tokens. The whole-check timeout is applied by `run_probe`.

The GET goes through the context's `fast_http` client (agentwatch.probes.fasthttp, the hot path
of a monitor cycle: docs/decisions.md "HTTP clients") when it has one, else through its httpx
client (a caller that passes its own, e.g. with a CA of its own). Both are judged alike, and a
failure is worded alike by both.
"""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING, Any

import httpx

from ..errors import BadAnswer
from ..models import ProbeResult
from ..redact import redact_url
from ..registry import AgentSpec, HttpProbe
from .conditions import certificate_not_after, check_conditions, peer_not_after
from .fasthttp import UNSENDABLE
from .tcp import describe_connection_error, describe_exception
from .wire import describe_http_error

if TYPE_CHECKING:
    from datetime import datetime

    from .context import ProbeContext
    from .fasthttp import FastHttp

__all__ = ["display_url", "effective_url", "probe_http"]

_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1"})


def effective_url(spec: HttpProbe) -> httpx.URL:
    """The URL to GET: `spec.target` replaces a localhost/127.0.0.1 host, keeping port and path."""
    return _parsed(spec.url, spec.target)[0]


@functools.lru_cache(maxsize=65536)
def _parsed(raw: str, target: str | None) -> tuple[httpx.URL, str]:
    """The URL to GET and its display form, made once per distinct URL and target (about 0.7 KB
    each): httpx's URL parser takes about 0.1 ms, a third of what a whole fresh GET costs the
    fast client. An invalid URL raises httpx.InvalidURL every time (exceptions are not cached)."""
    url = httpx.URL(raw)
    if target and url.host.lower() in _LOCAL_HOSTS:
        url = url.copy_with(host=target)
    return url, display_url(url)


def display_url(url: httpx.URL) -> str:
    """The URL as it may appear in results, artifacts and logs: no user info (`***@`), no
    credential-like query values (`?token=***`)."""
    return redact_url(str(url))


def _expected(spec: HttpProbe) -> str:
    return str(spec.expect_status) if spec.expect_status is not None else "200-399"


def _status_ok(spec: HttpProbe, status: int) -> bool:
    if spec.expect_status is not None:
        return status == spec.expect_status
    return 200 <= status <= 399


async def _read_capped(response: httpx.Response, cap: int) -> bytes:
    """Up to `cap` bytes of the (decoded) body; stops reading there instead of draining it."""
    if cap <= 0:
        return b""
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk[: cap - len(body)]
        if len(body) >= cap:
            break
    return bytes(body)


async def probe_http(agent: AgentSpec, ctx: ProbeContext) -> ProbeResult:
    """GET the agent's URL and judge status, body and latency; never raises for a failed target.

    An httpx timeout is re-raised as TimeoutError so that `run_probe` words every timeout alike.
    """
    assert agent.probe is not None and agent.probe.http is not None
    spec = agent.probe.http
    try:
        url, shown = _parsed(spec.url, spec.target)
    except httpx.InvalidURL as exc:
        return ProbeResult(agent.id, ok=False, reason=f"invalid URL: {exc}", details={"url": spec.url})
    details: dict[str, Any] = {"url": shown}
    # Identity encoding: the cap then counts bytes on the wire, and no small gzip bomb can
    # inflate into a large body.
    headers = dict(spec.headers)
    if not any(name.lower() == "accept-encoding" for name in headers):
        headers["accept-encoding"] = "identity"
    start = time.perf_counter()
    try:
        if ctx.fast_http is not None:
            body, not_after = await _get_fast(ctx.fast_http, url, headers, spec, ctx.max_body_bytes, details)
        else:
            body, not_after = await _get_httpx(agent, ctx, url, headers, details)
    except (httpx.TimeoutException, TimeoutError) as exc:
        raise TimeoutError(str(exc)) from exc
    except (httpx.HTTPError, _Failed) as exc:
        latency = (time.perf_counter() - start) * 1000
        reason = exc.reason if isinstance(exc, _Failed) else describe_http_error(exc, "body")
        return ProbeResult(agent.id, ok=False, latency_ms=latency, reason=reason, details=details)
    except Exception as exc:
        # Not an httpx error, yet raised by the request: anyio's exception group around an
        # OverflowError for a bad port, a UnicodeEncodeError, ... Say what the innermost one said.
        latency = (time.perf_counter() - start) * 1000
        details["error_type"] = type(exc).__name__
        reason = f"request failed: {describe_exception(exc)}"
        return ProbeResult(agent.id, ok=False, latency_ms=latency, reason=reason, details=details)
    latency = (time.perf_counter() - start) * 1000
    details["bytes_read"] = len(body)
    status = details["status"]
    failed_condition = check_conditions(spec, body, ctx.max_body_bytes, not_after, details)  # json, tls_min_days
    reason = ""
    if not _status_ok(spec, status):
        reason = f"HTTP {status} (expected {_expected(spec)})"
    elif spec.body_contains is not None and spec.body_contains not in body.decode("utf-8", "replace"):
        reason = f"body does not contain {spec.body_contains!r}"
    elif failed_condition:
        reason = failed_condition
    elif spec.max_latency is not None and latency > spec.max_latency.total_seconds() * 1000:
        reason = f"latency {latency:.0f}ms over max_latency {spec.max_latency.total_seconds() * 1000:.0f}ms"
    return ProbeResult(agent.id, ok=not reason, latency_ms=latency, reason=reason, details=details)


class _Failed(Exception):
    """The fast client's GET failed; `reason` says why, as the httpx path says it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def _get_fast(
    client: FastHttp, url: httpx.URL, headers: dict[str, str], spec: HttpProbe, cap: int, details: dict[str, Any]
) -> tuple[bytes, datetime | None]:
    """Body (capped) and certificate expiry through the fast client; sets details["status"]."""
    try:
        request = client.request(url, headers)
    except ValueError:
        raise _Failed(UNSENDABLE) from None  # never quote the header
    try:
        async with client.send(request, cap) as answer:
            details["status"] = answer.status
            not_after = peer_not_after(answer.tls_object) if spec.tls_min_days is not None else None
            return await answer.read(), not_after
    except TimeoutError:
        raise
    except (BadAnswer, OSError) as exc:  # a broken answer; a connection refused, reset, untrusted, ...
        raise _Failed(describe_connection_error(exc)) from exc


async def _get_httpx(
    agent: AgentSpec, ctx: ProbeContext, url: httpx.URL, headers: dict[str, str], details: dict[str, Any]
) -> tuple[bytes, datetime | None]:
    """Body (capped) and certificate expiry through the context's httpx client."""
    assert agent.probe is not None and agent.probe.http is not None
    # follow_redirects=False per request, whatever the client says: a 3xx is an answer.
    seconds = agent.policy.timeout.total_seconds()
    async with ctx.http.stream(
        "GET", url, headers=headers, follow_redirects=False, timeout=httpx.Timeout(seconds)
    ) as response:
        details["status"] = response.status_code
        not_after = certificate_not_after(response) if agent.probe.http.tls_min_days is not None else None
        return await _read_capped(response, ctx.max_body_bytes), not_after
