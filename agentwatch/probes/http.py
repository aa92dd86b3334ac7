"""The http probe: GET a URL and judge the status, an optional body substring and the latency.

The body is streamed and read only up to `max_body_bytes`, so an agent that answers with a huge
(or endless) body costs a bounded amount of memory and time. Request headers are sent but never
reported: they may carry tokens. The whole-check timeout is applied by `run_probe`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import httpx

from ..models import ProbeResult
from ..redact import redact_url
from ..registry import AgentSpec, HttpProbe
from .conditions import certificate_not_after, check_conditions
from .tcp import describe_exception
from .wire import describe_http_error

if TYPE_CHECKING:
    from .context import ProbeContext

__all__ = ["display_url", "effective_url", "probe_http"]

_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1"})


def effective_url(spec: HttpProbe) -> httpx.URL:
    """The URL to GET: `spec.target` replaces a localhost/127.0.0.1 host, keeping port and path."""
    url = httpx.URL(spec.url)
    if spec.target and url.host.lower() in _LOCAL_HOSTS:
        url = url.copy_with(host=spec.target)
    return url


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
        url = effective_url(spec)
    except httpx.InvalidURL as exc:
        return ProbeResult(agent.id, ok=False, reason=f"invalid URL: {exc}", details={"url": spec.url})
    details: dict[str, Any] = {"url": display_url(url)}
    # Identity encoding: the cap then counts bytes on the wire, and no small gzip bomb can
    # inflate into a large body.
    headers = dict(spec.headers)
    if not any(name.lower() == "accept-encoding" for name in headers):
        headers["accept-encoding"] = "identity"
    seconds = agent.policy.timeout.total_seconds()
    start = time.perf_counter()
    try:
        # follow_redirects=False per request, whatever the client says: a 3xx is an answer.
        async with ctx.http.stream(
            "GET", url, headers=headers, follow_redirects=False, timeout=httpx.Timeout(seconds)
        ) as response:
            details["status"] = response.status_code
            not_after = certificate_not_after(response) if spec.tls_min_days is not None else None
            body = await _read_capped(response, ctx.max_body_bytes)
    except httpx.TimeoutException as exc:
        raise TimeoutError(str(exc)) from exc
    except httpx.HTTPError as exc:
        latency = (time.perf_counter() - start) * 1000
        return ProbeResult(
            agent.id, ok=False, latency_ms=latency, reason=describe_http_error(exc, "body"), details=details
        )
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
