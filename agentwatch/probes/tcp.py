"""The tcp probe, and the wording of connection-level failures that the http probe shares.

A tcp check passes when a connection to host:port opens; it is closed again at once. The
whole-check timeout is applied by `run_probe`, which cancels this coroutine when it runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import ssl
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from ..models import ProbeResult
from ..registry import AgentSpec

if TYPE_CHECKING:
    from .context import ProbeContext

__all__ = ["describe_connection_error", "describe_exception", "probe_tcp"]

# errno values whose strerror reads poorly in a one-line reason.
_ERRNO_REASONS = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset",
    errno.ECONNABORTED: "connection aborted",
    errno.EPIPE: "connection closed by peer",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
    errno.ETIMEDOUT: "connection timed out",
}


def _leaves(exc: BaseException, seen: set[int] | None = None) -> Iterator[BaseException]:
    """Every exception in `exc`'s cause/context chain, opening exception groups.

    httpx wraps httpcore, which wraps anyio, which raises `OSError("All connection attempts
    failed")` from the real errors (one, or a group of them for several addresses): the errno
    that names the failure sits a few links down.
    """
    seen = set() if seen is None else seen
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                yield from _leaves(inner, seen)
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]


def _describe_os_error(exc: OSError) -> str | None:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed: {exc.verify_message or exc.reason}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, socket.gaierror):
        return f"DNS lookup failed: {exc.strerror or exc}"
    if exc.errno in _ERRNO_REASONS:
        return _ERRNO_REASONS[exc.errno]
    if exc.errno is not None and exc.strerror:
        return exc.strerror.lower()
    return None  # a wrapper such as "All connection attempts failed": look further down


def describe_connection_error(exc: BaseException) -> str:
    """A short reason for a failed connection: "connection refused", "connection reset", ...

    Looks through the whole chain of wrapped exceptions for the OS error that says what happened;
    when several addresses failed differently the first is named.
    """
    for inner in _leaves(exc):
        if isinstance(inner, OSError) and (reason := _describe_os_error(inner)):
            return reason
    return describe_exception(exc)


def describe_exception(exc: BaseException) -> str:
    """One line for any exception: an OS error as `describe_connection_error` words it, else the
    innermost exception that says something, never an exception group's "unhandled errors in a
    TaskGroup (1 sub-exception)"."""
    said: BaseException | None = None
    for inner in _leaves(exc):
        if isinstance(inner, OSError) and (reason := _describe_os_error(inner)):
            return reason
        if said is None and not isinstance(inner, BaseExceptionGroup) and str(inner):
            said = inner
    return " ".join(str(said).split()) if said is not None else type(exc).__name__  # one line


async def probe_tcp(agent: AgentSpec, ctx: ProbeContext) -> ProbeResult:
    """Open a TCP connection to the agent's host:port and close it cleanly."""
    assert agent.probe is not None and agent.probe.tcp is not None
    spec = agent.probe.tcp
    details = {"host": spec.host, "port": spec.port}
    start = time.perf_counter()
    try:
        _reader, writer = await asyncio.open_connection(spec.host, spec.port)
    except OSError as exc:
        latency = (time.perf_counter() - start) * 1000
        return ProbeResult(
            agent.id, ok=False, latency_ms=latency, reason=describe_connection_error(exc), details=details
        )
    latency = (time.perf_counter() - start) * 1000
    writer.close()
    # The peer may go away while we close; the connection did open, which is the check.
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return ProbeResult(agent.id, ok=True, latency_ms=latency, details=details)
