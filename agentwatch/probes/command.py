"""The command probe: `sh -c RUN` must exit 0 within the timeout.

The verdict is the shell's own exit status, taken the moment the shell exits: a background child
that keeps a pipe open (`sleep 300 & echo started`) neither delays nor changes it. stdout is not
read (it goes to /dev/null, so a chatty command cannot stall on a full pipe); the end of stderr is
kept for the reason.

Nothing the command started outlives its check. The shell runs in a session and process group of
its own and carries a cookie in its environment (`AGENTWATCH_PROBE_ID`, unique per check). When the
shell exits, or the timeout cancels the check, every process still in that session or group, every
process whose environment holds the cookie (a child that called `setsid` left the group, not its
environment) and every descendant of one of those is killed with SIGKILL. On Linux they are found
through /proc and signalled through a pidfd, so a pid reused meanwhile is never hit; elsewhere
only the process group is killed. A process that both leaves the session and clears its
environment can still escape: short of cgroups, nothing finds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import time
import uuid
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..models import ProbeResult
from ..registry import AgentSpec
from ..settings import environment

if TYPE_CHECKING:
    from .context import ProbeContext

__all__ = ["COOKIE_VAR", "STDERR_TAIL_CHARS", "find_leftovers", "kill_leftovers", "probe_command", "start_time"]

STDERR_TAIL_CHARS = 500
COOKIE_VAR = "AGENTWATCH_PROBE_ID"
_TAIL_BYTES = STDERR_TAIL_CHARS * 4  # room for multi-byte UTF-8 characters
_PROC = "/proc"
log = logging.getLogger(__name__)
# After the shell exits: how long the rest of its stderr (and its exit, once killed) may take.
_SETTLE_S = 0.5
_KILL_ROUNDS = 5  # a process may fork between a scan and its kill: scan again, a few times


class _Collector(asyncio.SubprocessProtocol):
    """Keeps the end of stderr; tells when the shell exited and when its stderr closed."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.exited: asyncio.Future[None] = loop.create_future()
        self.stderr_closed: asyncio.Future[None] = loop.create_future()
        self.tail = b""

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if fd == 2:
            self.tail = (self.tail + data)[-_TAIL_BYTES:]

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd == 2 and not self.stderr_closed.done():
            self.stderr_closed.set_result(None)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)


def _failure_reason(code: int, stderr_tail: str) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        reason = f"killed by signal {name}"
    else:
        reason = f"exit code {code}"
    lines = [line.strip() for line in stderr_tail.splitlines() if line.strip()]
    return f"{reason}: {lines[-1]}" if lines else reason


async def _settle(future: asyncio.Future[None], seconds: float) -> None:
    # asyncio.wait neither raises on timeout nor cancels the future: safe in a `finally` that
    # runs while the check is being cancelled.
    await asyncio.wait({future}, timeout=seconds)


async def probe_command(agent: AgentSpec, ctx: ProbeContext) -> ProbeResult:
    """Run the agent's command with `sh -c`; ok when the shell exits 0. Never raises for a failed
    command; kills whatever the command left behind, at its exit or at the timeout."""
    assert agent.probe is not None and agent.probe.command is not None
    run = agent.probe.command.run
    cookie = uuid.uuid4().hex
    loop = asyncio.get_running_loop()
    start = time.perf_counter()
    try:
        transport, proto = await loop.subprocess_exec(
            _Collector,
            "sh",
            "-c",
            run,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
            env={**environment(), COOKIE_VAR: cookie},
        )
    except OSError as exc:
        return ProbeResult(agent.id, ok=False, reason=f"cannot start sh: {exc.strerror or exc}")
    shell = transport.get_pid()
    since = start_time(shell) if os.path.isdir(_PROC) else 0
    try:
        await proto.exited  # the timeout cancels this wait; the `finally` below then cleans up
        latency = (time.perf_counter() - start) * 1000
        code = transport.get_returncode()
    finally:
        # On exit, failure and timeout alike: kill the shell (at a timeout) and all it left.
        await kill_leftovers(shell, cookie, since)
        await _settle(proto.exited, _SETTLE_S)  # the shell's exit is processed before we return
        await _settle(proto.stderr_closed, _SETTLE_S)  # the rest of stderr, from its last writers
        transport.close()
    assert code is not None
    if code == 0:
        return ProbeResult(agent.id, ok=True, latency_ms=latency, details={"exit_code": 0})
    tail = proto.tail.decode("utf-8", "replace")[-STDERR_TAIL_CHARS:]
    return ProbeResult(
        agent.id,
        ok=False,
        latency_ms=latency,
        reason=_failure_reason(code, tail),
        details={"exit_code": code, "stderr_tail": tail},
    )


async def kill_leftovers(session: int, cookie: str, since: int = 0) -> None:
    """SIGKILL every process of the check whose shell was `session` (see the module docstring);
    `since` is the shell's start time (clock ticks after boot): nothing older can be its child."""
    # The group first, at once: the usual case, and all there is without /proc.
    with contextlib.suppress(OSError):
        os.killpg(session, signal.SIGKILL)
    if os.path.isdir(_PROC):
        loop = asyncio.get_running_loop()
        sweeper = _SWEEPERS.get(loop) or _SWEEPERS.setdefault(loop, _Sweeper())
        await sweeper.sweep(_Wanted(session, f"{COOKIE_VAR}={cookie}".encode(), since))


@dataclass(frozen=True, slots=True)
class _Wanted:
    """The leftovers of one check: its session (the shell's pid), cookie and start time."""

    session: int
    marker: bytes
    since: int


class _Sweeper:
    """Kills the leftovers of every check that ended meanwhile in one /proc walk, in a thread.

    Checks end in bursts (128 in flight by default) and a walk costs the same for one check as for
    all of them: walked once per check, 200 `true` commands took 2.5 s instead of 1 s.
    """

    def __init__(self) -> None:
        self._queue: list[tuple[_Wanted, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None

    async def sweep(self, wanted: _Wanted) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((wanted, done))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="command-probe-sweeper")
        # Shielded: a check cancelled while it waits leaves the sweep to go on without it.
        await asyncio.shield(done)

    async def _run(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                await asyncio.to_thread(_kill_found, [wanted for wanted, _ in batch])
            except Exception:  # a bug here must not hang the checks that wait
                log.exception("could not look for processes left by command probes")
            finally:
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)


_SWEEPERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Sweeper] = weakref.WeakKeyDictionary()


def _kill_found(wanted: list[_Wanted]) -> None:
    for _ in range(_KILL_ROUNDS):
        found = _find(wanted)
        if not found:
            return
        for pid, started in found.items():
            _kill(pid, started)


def find_leftovers(session: int, cookie: str, since: int = 0) -> dict[int, int]:
    """Live processes of one check: pid -> start time (to recognise the same process later).

    Those in the session or process group `session`, those whose environment holds the cookie,
    and every descendant of one of them; only processes started at `since` or later are read.
    """
    return _find([_Wanted(session, f"{COOKIE_VAR}={cookie}".encode(), since)])


def _find(wanted: list[_Wanted]) -> dict[int, int]:
    me = os.getpid()
    since = min(w.since for w in wanted)
    sessions = {w.session for w in wanted}
    markers = {w.marker for w in wanted}
    table: dict[int, tuple[int, int]] = {}  # pid -> (ppid, start time) of every live candidate
    found: dict[int, int] = {}
    for name in os.listdir(_PROC):
        if not name.isdigit() or (pid := int(name)) == me:
            continue
        stat = _stat(pid)
        if stat is None:
            continue
        state, ppid, pgrp, sid, started = stat
        if state in ("Z", "X") or started < since:  # dead already; or older than every shell
            continue
        table[pid] = (ppid, started)
        if pgrp in sessions or sid in sessions or not markers.isdisjoint(_environ(pid)):
            found[pid] = started
    # Descendants of what was found: a child that cleared its environment stays a child.
    grew = True
    while grew:
        grew = False
        for pid, (ppid, started) in table.items():
            if ppid in found and pid not in found:
                found[pid] = started
                grew = True
    return found


def start_time(pid: int) -> int:
    """When `pid` started, in clock ticks after boot (0 when unknown: then nothing is skipped)."""
    stat = _stat(pid)
    return stat[4] if stat is not None else 0


def _stat(pid: int) -> tuple[str, int, int, int, int] | None:
    """(state, ppid, process group, session, start time) from /proc/PID/stat, or None if gone."""
    try:
        with open(f"{_PROC}/{pid}/stat", "rb") as file:
            raw = file.read()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may itself hold spaces and parentheses.
    fields = raw[raw.rfind(b")") + 2 :].split()
    try:
        return fields[0].decode(), int(fields[1]), int(fields[2]), int(fields[3]), int(fields[19])
    except (IndexError, ValueError):
        return None


def _environ(pid: int) -> list[bytes]:
    try:
        with open(f"{_PROC}/{pid}/environ", "rb") as file:
            return file.read().split(b"\0")
    except OSError:  # another user's process, or gone: not ours either way
        return []


def _kill(pid: int, started: int) -> None:
    """SIGKILL `pid` if it is still the process that started at `started`."""
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None:
        with contextlib.suppress(OSError):
            if (stat := _stat(pid)) is not None and stat[4] == started:
                os.kill(pid, signal.SIGKILL)
        return
    try:
        fd = pidfd_open(pid)
    except OSError:
        return  # gone
    try:
        # The pidfd holds this very process: if it is the one the scan saw, the signal reaches it
        # and no other, even if the pid is reused a moment later.
        if (stat := _stat(pid)) is not None and stat[4] == started:
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(fd, signal.SIGKILL)
    finally:
        os.close(fd)
