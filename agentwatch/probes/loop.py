"""The probe loop: the hot path of a monitor cycle on an event loop of its own, uvloop when installed.

Probing 10,000 fresh connections is CPU-bound in the event loop itself (accepting, connecting,
reading, scheduling callbacks). uvloop does that work in C: the whole http probe costs 0.27 ms of
CPU per GET on it against 0.44 ms on asyncio's default loop (bench/probe_clients.py). Prefect
makes the loop a flow runs in (in a worker's flow-run process it exists before any flow code is
imported), so the probes get one of their own instead: one daemon thread per process running one
loop, started on first use and reused by every batch of every cycle.

`in_probe_loop(coro)` runs `coro` there and awaits it from the caller's loop. Cancelling the
caller (a flow timeout, a cancelled run) cancels `coro`, and the caller waits (bounded) until it
has ended. What a probe uses must not be bound to
the caller's loop: the probes make their HTTP clients inside `probe_many`, and the Docker engine
(agentwatch.docker.DockerEngine) works from any loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
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
_thread: threading.Thread | None = None
_owner = 0  # the process that started the thread: a forked child starts its own
# How long a cancelled caller waits for its probes to finish cancelling (closing their sockets,
# killing their commands) before it goes on, e.g. to close the Docker engine they may still use.
CANCEL_GRACE_S = 5.0


def loop_kind() -> str:
    """ "uvloop" or "asyncio": what the probe loop runs on."""
    return _KIND


def probe_loop() -> asyncio.AbstractEventLoop:
    """The process's probe loop, running in its own daemon thread (started on first call, and
    again if the thread ever ended: a loop nobody runs would hang every later caller)."""
    global _loop, _thread, _owner
    with _lock:
        if _loop is None or _thread is None or _owner != os.getpid() or not _thread.is_alive():
            loop = _new_loop()
            started = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(started.set)
                try:
                    loop.run_forever()
                finally:
                    loop.close()

            thread = threading.Thread(target=run, name="agentwatch-probe-loop", daemon=True)
            thread.start()
            started.wait()
            _loop, _thread, _owner = loop, thread, os.getpid()
        return _loop


async def in_probe_loop(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on the probe loop and return its result (or raise its exception) here.

    Cancelled here, it cancels `coro` and waits (at most CANCEL_GRACE_S) until `coro` has ended,
    so that nothing it holds is closed under it."""
    loop = probe_loop()
    if asyncio.get_running_loop() is loop:
        return await coro
    result: concurrent.futures.Future[T] = concurrent.futures.Future()
    ended = threading.Event()
    task: list[asyncio.Task[T]] = []

    def settle(done: asyncio.Task[T]) -> None:
        ended.set()
        with contextlib.suppress(concurrent.futures.InvalidStateError):  # the caller gave up
            if done.cancelled():
                result.cancel()
            elif (exc := done.exception()) is not None:
                result.set_exception(exc)
            else:
                result.set_result(done.result())

    def start() -> None:
        task.append(loop.create_task(coro))
        task[0].add_done_callback(settle)

    loop.call_soon_threadsafe(start)
    try:
        return await asyncio.wrap_future(result)
    except asyncio.CancelledError:
        loop.call_soon_threadsafe(lambda: task[0].cancel())  # after start(): one queue, in order
        await asyncio.to_thread(ended.wait, CANCEL_GRACE_S)
        raise
