"""The command probe: `sh -c RUN` must exit 0 within the timeout.

The command runs in a session (and process group) of its own, so that when `run_probe`'s timeout
cancels the check the whole group, shell and children alike, can be killed and reaped: a command
that hangs never outlives its check. Output is drained as it comes (a chatty command cannot fill
a pipe and stall) and only the end of stderr is kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from typing import TYPE_CHECKING

from ..models import ProbeResult
from ..registry import AgentSpec

if TYPE_CHECKING:
    from . import ProbeContext

__all__ = ["STDERR_TAIL_CHARS", "probe_command"]

STDERR_TAIL_CHARS = 500
_TAIL_BYTES = STDERR_TAIL_CHARS * 4  # room for multi-byte UTF-8 characters
_CHUNK = 64 * 1024


async def _drain(stream: asyncio.StreamReader | None, keep: int) -> bytes:
    """Read `stream` to its end, keeping only its last `keep` bytes."""
    if stream is None:
        return b""
    tail = b""
    while chunk := await stream.read(_CHUNK):
        tail = (tail + chunk)[-keep:] if keep else b""
    return tail


def _kill_group(pgid: int) -> None:
    # The group outlives the shell when it left children behind, so kill it even after the shell
    # exited. Nothing left in it (or a group that is not ours) is not an error here.
    with contextlib.suppress(OSError):
        os.killpg(pgid, signal.SIGKILL)


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


async def probe_command(agent: AgentSpec, ctx: ProbeContext) -> ProbeResult:
    """Run the agent's command with `sh -c`; ok when it exits 0. Never raises for a failed command."""
    assert agent.probe is not None and agent.probe.command is not None
    run = agent.probe.command.run
    start = time.perf_counter()
    try:
        proc = await asyncio.create_subprocess_exec(
            "sh",
            "-c",
            run,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        return ProbeResult(agent.id, ok=False, reason=f"cannot start sh: {exc.strerror or exc}")
    try:
        _stdout, stderr, code = await asyncio.gather(
            _drain(proc.stdout, 0), _drain(proc.stderr, _TAIL_BYTES), proc.wait()
        )
    finally:
        # Runs on success, failure and cancellation (the timeout) alike.
        _kill_group(proc.pid)
        if proc.returncode is None:
            await proc.wait()  # reap: no zombie left behind
    latency = (time.perf_counter() - start) * 1000
    if code == 0:
        return ProbeResult(agent.id, ok=True, latency_ms=latency, details={"exit_code": 0})
    tail = stderr.decode("utf-8", "replace")[-STDERR_TAIL_CHARS:]
    return ProbeResult(
        agent.id,
        ok=False,
        latency_ms=latency,
        reason=_failure_reason(code, tail),
        details={"exit_code": code, "stderr_tail": tail},
    )
