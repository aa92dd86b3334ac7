"""Threat (class 7 of tests/security/README.md): command probes that misjudge, leak processes, or warn at exit.

`sleep 300 & echo started` was reported "timed out" although `sh` exited 0 at once (the child
held the pipes open); a child that called `setsid` escaped the kill of the process group and
outlived the check; "Event loop is closed" warnings followed at interpreter exit.

The verdict is the shell's own exit status; at the shell's exit or at the timeout, every process
of its session or group, every process carrying the check's cookie in its environment (setsid
escapees) and every descendant of those is killed. Real processes, checked by pid.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from agentwatch.models import ProbeResult
from agentwatch.probes import make_http_client, run_probe
from agentwatch.registry import AgentSpec, validate_registry


def command_agent(run: str, timeout: str = "10s") -> AgentSpec:
    return validate_registry({"agents": [{"id": "cmd", "timeout": timeout, "probe": {"command": run}}]}).agents[0]


async def check(agent: AgentSpec) -> ProbeResult:
    async with make_http_client() as client:
        return await run_probe(agent, http=client)


def pid_in(path: Path) -> int:
    deadline = time.monotonic() + 10
    while not path.exists() or not path.read_text().strip():
        assert time.monotonic() < deadline, f"the command never wrote {path}"
        time.sleep(0.01)
    return int(path.read_text())


def is_dead(pid: int) -> bool:
    """Gone, or a zombie (killed; reaping an orphan is its new parent's job)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_dead(pid: int) -> bool:
    # SIGKILL is delivered at once, but the kernel may take a moment to tear the process down.
    deadline = time.monotonic() + 5
    while not is_dead(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture
def leftovers() -> list[int]:
    """Pids a test saw; any still alive at teardown is killed (by pid) and fails the test."""
    pids: list[int] = []
    yield pids
    alive = [pid for pid in pids if not wait_dead(pid)]
    for pid in alive:
        os.kill(pid, 9)
    assert not alive, f"processes outlived their check: {alive}"


async def test_a_background_child_holding_the_pipes_does_not_delay_the_verdict(
    tmp_path: Path, leftovers: list[int]
) -> None:
    child = tmp_path / "child"
    result = await check(command_agent(f"sleep 300 & echo $! > {child}; echo started", timeout="30s"))
    assert (result.ok, result.reason) == (True, ""), result.reason
    assert result.details == {"exit_code": 0}
    # Decided at the shell's exit, not at the timeout (relative to its own timeout).
    assert result.latency_ms is not None and result.latency_ms < 30_000 / 2
    leftovers.append(pid_in(child))
    assert wait_dead(leftovers[-1]), "the background child outlived the check"


async def test_the_verdict_is_the_shells_own_exit_status(tmp_path: Path, leftovers: list[int]) -> None:
    child = tmp_path / "child"
    result = await check(command_agent(f"sleep 300 & echo $! > {child}; echo 'db down' >&2; exit 3"))
    leftovers.append(pid_in(child))
    assert (result.ok, result.reason) == (False, "exit code 3: db down")


@pytest.mark.parametrize(
    "run",
    [
        "setsid sh {payload} {pid} & {ready}; sleep 300",
        "setsid sh -c 'sh {payload} {pid} & wait' & {ready}; sleep 300",
        "setsid sh -c 'setsid sh {payload} {pid} & wait' & {ready}; sleep 300",
        "setsid sh -c 'sh {payload} {pid} &' & {ready}; sleep 300",
    ],
    ids=["setsid-child", "its-child", "setsid-twice", "orphaned-at-once"],
)
async def test_setsid_escapees_are_killed_at_the_timeout(tmp_path: Path, leftovers: list[int], run: str) -> None:
    payload, pid_file = tmp_path / "payload.sh", tmp_path / "escapee"
    payload.write_text('echo $$ > "$1"; exec sleep 300\n')  # the pid written is the sleep's
    ready = f"while [ ! -s {pid_file} ]; do sleep 0.01; done"  # the escapee is in place
    result = await check(command_agent(run.format(payload=payload, pid=pid_file, ready=ready), timeout="2s"))
    assert (result.ok, result.reason) == (False, "timed out after 2s")
    escapee = pid_in(pid_file)
    leftovers.append(escapee)
    assert wait_dead(escapee), f"process {escapee} escaped the timeout"


async def test_setsid_escapees_are_killed_when_the_shell_exits_cleanly(tmp_path: Path, leftovers: list[int]) -> None:
    payload, pid_file = tmp_path / "payload.sh", tmp_path / "escapee"
    payload.write_text('echo $$ > "$1"; exec sleep 300\n')
    ready = f"while [ ! -s {pid_file} ]; do sleep 0.01; done"
    result = await check(command_agent(f"setsid sh {payload} {pid_file} & {ready}; echo started"))
    assert result.ok, result.reason
    leftovers.append(pid_in(pid_file))
    assert wait_dead(leftovers[-1])


def test_no_event_loop_is_closed_warnings_at_interpreter_exit(tmp_path: Path) -> None:
    # A fresh interpreter, as the CLI runs it: the warnings came when the loop had closed and
    # the garbage collector found subprocess transports still open.
    script = tmp_path / "probe.py"
    script.write_text(
        "import asyncio, warnings\n"
        "warnings.simplefilter('always')\n"
        "from agentwatch.probes import probe_many\n"
        "from agentwatch.registry import validate_registry\n"
        "runs = ['sleep 300 & echo started', 'setsid sleep 300 & sleep 300', 'sleep 300', 'exit 2']\n"
        "agents = validate_registry({'agents': [\n"
        "    {'id': f'c{i}', 'timeout': '1s', 'probe': {'command': run}} for i, run in enumerate(runs)\n"
        "]}).agents\n"
        "results = asyncio.run(probe_many(agents))\n"
        "print([(r.ok, r.reason) for r in results])\n"
    )
    done = subprocess.run(
        [sys.executable, "-X", "dev", str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(
        [(True, ""), (False, "timed out after 1s"), (False, "timed out after 1s"), (False, "exit code 2")]
    )
    for noise in ("Event loop is closed", "unclosed transport", "ResourceWarning", "Traceback"):
        assert noise not in done.stderr, done.stderr
