"""Running a flow from a command so that the command never hangs on a dead Prefect API.

Prefect sends events and logs from background workers that, at interpreter exit, wait for every
queued item: with the API gone each item waits out its own reconnect attempts (about 7 s each,
measured), so a monitor run of many task runs could hold `agentwatch check` for many minutes after
the flow itself ended. `run_bounded` gives the workers `drain_timeout` seconds after the flow ends
and reports whether they finished; `exit_now` ends the process without waiting for them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import sys
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

__all__ = ["bounded_client_retries", "exit_now", "old_heap_frozen", "run_bounded"]

T = TypeVar("T")
_abandoned = False


def bounded_client_retries(retries: int = 2) -> None:
    """Before Prefect is imported: fewer client retries (2 s + 4 s of back-off instead of 62 s), so a
    run that lost its API ends soon. A value the user set wins."""
    os.environ.setdefault("PREFECT_CLIENT_MAX_RETRIES", str(retries))


def run_bounded(coro: Coroutine[Any, Any, T], drain_timeout: float = 10.0) -> T:
    """`asyncio.run(coro)`, then at most `drain_timeout` s for Prefect's event and log workers."""
    global _abandoned
    try:
        return asyncio.run(coro)
    finally:
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        for service in (EventsWorker, APILogWorker):
            result = service.drain_all(timeout=drain_timeout, at_exit=False)
            _, not_done = result if isinstance(result, tuple) else (set(), set())
            if not_done:
                _abandoned = True
        if _abandoned:
            print(
                f"agentwatch: the Prefect API did not take this run's last events and logs within "
                f"{drain_timeout:g}s; they are dropped (the transitions themselves are kept in the state store)",
                file=sys.stderr,
            )


def exit_now(code: int) -> None:
    """End the process with `code` at once when a drain was abandoned (else return): the workers'
    own exit hooks would wait for the dead API again."""
    if _abandoned:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


_freeze_lock = threading.Lock()
_freeze_holders = 0
_froze = False  # whether the outermost holder froze (it does not when someone else already had)


@contextlib.contextmanager
def old_heap_frozen() -> Iterator[None]:
    """Within: the cyclic garbage collector skips every object that existed on entry (Prefect's
    modules, the registry, the client's caches), and walks only what the cycle itself makes.

    A full collection walks every tracked object of the process: with Prefect and a 10,000-agent
    registry loaded, the collections set off by one cycle's allocations took 0.7 s of its 3.8 s
    of CPU (bench/monitor_cycle.py, "GC pauses"). The frozen objects are not lost: reference
    counting still frees them, and when the last cycle of the process ends they go back to the
    collector's oldest generation (a cycle among them is collected then). Overlapping cycles in one
    process share the freeze; a process that froze its heap itself is left as it is.
    """
    global _freeze_holders, _froze
    with _freeze_lock:
        if _freeze_holders == 0:
            _froze = gc.get_freeze_count() == 0
            if _froze:
                gc.freeze()
        _freeze_holders += 1
    try:
        yield
    finally:
        with _freeze_lock:
            _freeze_holders -= 1
            if _freeze_holders == 0 and _froze:
                gc.unfreeze()
                _froze = False
