"""The probe loop: the hot path of a monitor cycle on an event loop of its own, uvloop when installed.

Probing 10,000 fresh connections is CPU-bound in the event loop itself (accepting, connecting,
reading, scheduling callbacks). uvloop does that work in C: the whole http probe costs 0.27 ms of
CPU per GET on it against 0.44 ms on asyncio's default loop (bench/probe_clients.py). Prefect
makes the loop a flow runs in (in a worker's flow-run process it exists before any flow code is
imported), so the probes get one of their own instead: one daemon thread per process running one
loop, started on first use and reused by every batch of every cycle.

`in_probe_loop(coro)` runs `coro` there and awaits it from the caller's loop. Cancelling the
caller (a flow timeout, a cancelled run) cancels `coro`. What a probe uses must not be bound to
the caller's loop: the probes make their HTTP clients inside `probe_many`, and the Docker engine
(agentwatch.docker.DockerEngine) works from any loop.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["in_probe_loop", "loop_kind", "probe_loop"]

T = TypeVar("T")

_new_loop: Callable[[], asyncio.AbstractEventLoop]
try:  # a wheel for every platform agentwatch runs on; the default loop when it is missing
    import uvloop

    _new_loop, _KIND = uvloop.new_event_loop, "uvloop"
except ImportError:  # pragma: no cover - uvloop is a dependency
    _new_loop, _KIND = asyncio.new_event_loop, "asyncio"

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_owner = 0  # the process that started the thread: a forked child starts its own


def loop_kind() -> str:
    """ "uvloop" or "asyncio": what the probe loop runs on."""
    return _KIND


def probe_loop() -> asyncio.AbstractEventLoop:
    """The process's probe loop, running in its own daemon thread (started on first call)."""
    global _loop, _owner
    with _lock:
        if _loop is None or _owner != os.getpid() or _loop.is_closed():
            loop = _new_loop()
            started = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(started.set)
                loop.run_forever()

            threading.Thread(target=run, name="agentwatch-probe-loop", daemon=True).start()
            started.wait()
            _loop, _owner = loop, os.getpid()
        return _loop


async def in_probe_loop(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on the probe loop and return its result (or raise its exception) here."""
    loop = probe_loop()
    if asyncio.get_running_loop() is loop:
        return await coro
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))
