"""The acp probe: the Agent Client Protocol's `initialize`, spoken to the agent over its stdio.

ACP is JSON-RPC 2.0 on the agent's stdin and stdout, one message per line. The probe starts the
agent's command the way an editor would (`sh -c COMMAND`; with `container`,
`docker exec -i CONTAINER sh -c ...`), writes one `initialize` request with `protocolVersion: 1`,
`clientCapabilities: {}` and `clientInfo`, and reads lines until the answer to it. The agent is
healthy when that answer is a result carrying `protocolVersion` 1 (the version this probe speaks)
and an `agentCapabilities` object. `agentInfo` (name, version) goes into
`details["identity"]` (agentwatch.drift). Notifications or requests the agent sends first are
skipped; a line that is no JSON-RPC fails the check, as does an answer past the byte cap.

**The process always ends with the check.** It runs in a session of its own with a cookie in its
environment, and when the answer is in, or the agent exits, or the timeout cancels the check,
everything it started is killed (`command.kill_leftovers`). In a container, killing the local
`docker exec` does not reach the process inside, so the probe asks the shell in the container to
print its pid first (it then `exec`s the command, which keeps that pid) and, unless the agent
exited at the end of its stdin, kills that pid with a second `docker exec`.

**Environment.** The agent inherits the monitor's environment plus `env`: a plain value is passed
as written; `{env: VAR}` takes the monitor's variable VAR when the probe runs (a secret never sits
in the registry). Those values are never logged or reported: `run_probe` scrubs them from the
reason and details (agentwatch.redact; a plain value is in the registry, no secret). In a
container they reach `docker exec` as `-e NAME`, read from the docker CLI's environment, so no
value ever appears on a command line. In a container, only the agent's main process is killed:
children it left behind there die with it only if they exit when their pipes close.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
import uuid
from typing import TYPE_CHECKING, Any

from .._version import __version__
from ..docker.engine import engine_url
from ..drift import IDENTITY_KEY, make_identity
from ..errors import BadAnswer
from ..models import ProbeResult
from ..registry import AcpProbe, AgentSpec, EnvFrom
from ..settings import environment, get_settings
from .command import COOKIE_VAR, STDERR_TAIL_CHARS, kill_leftovers
from .wire import member, quote_short, rpc_error_text, rpc_response

if TYPE_CHECKING:
    from .context import ProbeContext

__all__ = ["PROTOCOL_VERSION", "probe_acp"]

PROTOCOL_VERSION = 1  # ACP's major version this probe speaks
_REQUEST_ID = 0
_PID_MARK = "agentwatch-acp-pid"
# In the container: say which pid the agent will have, then become the agent ($1 is the command).
_CONTAINER_SCRIPT = f'echo "{_PID_MARK} $$"; exec sh -c "$1"'
_SETTLE_S = 0.5  # after stdin closes: how long an agent may take to exit on its own
_REMOTE_KILL_S = 5.0  # bound on the `docker exec ... kill` that ends the agent in a container


class _Failed(Exception):
    """The check failed; the message is the reason."""


def _environment(spec: AcpProbe, environ: dict[str, str]) -> dict[str, str]:
    """The `env` entries with `{env: VAR}` resolved from `environ`; _Failed naming a missing one."""
    values: dict[str, str] = {}
    for name, value in spec.env.items():
        if isinstance(value, EnvFrom):
            if value.env not in environ:
                raise _Failed(f"environment variable {value.env} (for the agent's {name}) is not set")
            values[name] = environ[value.env]
        else:
            values[name] = value
    return values


def _argv(spec: AcpProbe, names: list[str]) -> list[str]:
    if spec.container is None:
        return ["sh", "-c", spec.command]
    passed = [arg for name in names for arg in ("-e", name)]  # values come from the CLI's environment
    return ["docker", "exec", "-i", *passed, spec.container, "sh", "-c", _CONTAINER_SCRIPT, "sh", spec.command]


def _initialize() -> bytes:
    request = {
        "jsonrpc": "2.0",
        "id": _REQUEST_ID,
        "method": "initialize",
        "params": {
            "protocolVersion": PROTOCOL_VERSION,
            "clientCapabilities": {},
            "clientInfo": {"name": "agentwatch", "title": "agentwatch health probe", "version": __version__},
        },
    }
    return json.dumps(request).encode() + b"\n"


async def probe_acp(agent: AgentSpec, ctx: ProbeContext) -> ProbeResult:
    """Start the agent, send `initialize`, judge the answer; the agent is ended whatever happens.
    Never raises for a failed agent."""
    assert agent.probe is not None and agent.probe.acp is not None
    spec = agent.probe.acp
    environ = environment()
    try:
        values = _environment(spec, environ)
    except _Failed as failed:
        return ProbeResult(agent.id, ok=False, reason=str(failed))
    return await _check(agent.id, spec, values, environ, ctx.max_body_bytes)


async def _check(
    agent_id: str, spec: AcpProbe, values: dict[str, str], environ: dict[str, str], cap: int
) -> ProbeResult:
    cookie = uuid.uuid4().hex
    env = {**environ, **values, COOKIE_VAR: cookie}
    if spec.container is not None and (host := engine_url(get_settings())):
        env["DOCKER_HOST"] = host  # the engine the rest of agentwatch uses
    details: dict[str, Any] = {"container": spec.container} if spec.container else {}
    program = "docker" if spec.container else "sh"
    start = time.perf_counter()
    try:
        process = await asyncio.create_subprocess_exec(
            *_argv(spec, list(values)),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            env=env,
            limit=max(cap, 1024),  # the longest line readline() takes
        )
    except OSError as exc:
        return ProbeResult(agent_id, ok=False, reason=f"cannot start {program}: {exc.strerror or exc}", details=details)
    assert process.stdin is not None and process.stdout is not None and process.stderr is not None
    stderr_tail = _Tail()
    tail_task = asyncio.create_task(stderr_tail.drain(process.stderr))
    remote_pid: str | None = None
    try:
        try:
            if spec.container is not None:
                remote_pid = await _remote_pid(process.stdout)
            process.stdin.write(_initialize())
            with contextlib.suppress(ConnectionError):  # an agent that exited at once: told below
                await process.stdin.drain()
            answer = await _answer(process.stdout, cap)
        except _Failed as failed:
            reason = str(failed)
            # Its stdout closed: it is most likely exiting, and its exit code says more.
            if process.returncode is not None or (process.stdout.at_eof() and await _exited(process)):
                await asyncio.wait({tail_task}, timeout=_SETTLE_S)  # the rest of its stderr
                reason = _exit_reason(process.returncode, stderr_tail.last_line(), reason)
            latency = (time.perf_counter() - start) * 1000
            details["stderr_tail"] = stderr_tail.text()
            return ProbeResult(agent_id, ok=False, latency_ms=latency, reason=reason, details=details)
        latency = (time.perf_counter() - start) * 1000
        reason = _judge(answer, details)
        return ProbeResult(agent_id, ok=not reason, latency_ms=latency, reason=reason, details=details)
    finally:
        # Answered, failed or cancelled by the timeout alike: nothing the check started outlives it.
        await _end(process, spec.container, remote_pid, cookie)
        tail_task.cancel()


class _Tail:
    """The end of the agent's stderr, drained as it comes so that a chatty agent never blocks."""

    def __init__(self) -> None:
        self.data = b""

    async def drain(self, stream: asyncio.StreamReader) -> None:
        with contextlib.suppress(ConnectionError):
            while chunk := await stream.read(4096):
                self.data = (self.data + chunk)[-STDERR_TAIL_CHARS * 4 :]

    def text(self) -> str:
        return self.data.decode("utf-8", "replace")[-STDERR_TAIL_CHARS:]

    def last_line(self) -> str:
        lines = [line.strip() for line in self.text().splitlines() if line.strip()]
        return lines[-1] if lines else ""


async def _remote_pid(stdout: asyncio.StreamReader) -> str:
    """The agent's pid in its container, from the first line the container's shell writes."""
    line = await _line(stdout)
    mark, _, pid = line.decode("utf-8", "replace").strip().partition(" ")
    if mark != _PID_MARK or not pid.isdigit():
        raise _Failed(f"docker exec wrote {quote_short(line)} instead of starting the agent")
    return pid


async def _line(stdout: asyncio.StreamReader) -> bytes:
    try:
        line = await stdout.readline()
    except ValueError:  # asyncio's LimitOverrunError, wrapped: a line past the cap
        raise _Failed("the agent wrote a line longer than the byte cap (AGENTWATCH_MAX_BODY_BYTES)") from None
    if not line:
        raise _Failed("the agent closed its stdout without answering initialize")
    return line


async def _answer(stdout: asyncio.StreamReader, cap: int) -> dict[str, Any]:
    """The response to `initialize`, skipping the agent's other messages; _Failed on anything else."""
    read = 0
    while True:
        line = await _line(stdout)
        read += len(line)
        if read > cap:
            raise _Failed(
                f"no answer to initialize in the first {cap} bytes the agent wrote (AGENTWATCH_MAX_BODY_BYTES)"
            )
        if not line.strip():
            continue
        try:
            message = json.loads(line)
        except (ValueError, RecursionError):
            raise _Failed(f"the agent wrote a line that is not JSON-RPC: {quote_short(line)}") from None
        try:
            response = rpc_response(message, _REQUEST_ID)
        except BadAnswer as bad:
            raise _Failed(f"the agent wrote {bad}") from None
        if response is not None:
            return response


def _judge(answer: dict[str, Any], details: dict[str, Any]) -> str:
    """The reason the `initialize` answer is not healthy, or ""; what it says goes into details."""
    if "error" in answer:
        return f"initialize failed: {rpc_error_text(answer['error'])}"
    result = answer.get("result")
    if not isinstance(result, dict):
        return "initialize answered a result that is not an object"
    version = result.get("protocolVersion")
    info = member(result, "agentInfo")
    details[IDENTITY_KEY] = make_identity(info.get("name"), info.get("version"), version)
    if "protocolVersion" not in result:
        return "initialize answer lacks protocolVersion"
    details["protocol_version"] = version
    if isinstance(version, bool) or not isinstance(version, int):
        return f"initialize answer's protocolVersion is not an integer: {quote_short(json.dumps(version))}"
    if version != PROTOCOL_VERSION:
        return f"the agent speaks ACP protocol version {version}; this probe supports version {PROTOCOL_VERSION}"
    capabilities = result.get("agentCapabilities")
    if not isinstance(capabilities, dict):
        return "initialize answer lacks agentCapabilities"
    details["agent_capabilities"] = sorted(str(key) for key in capabilities)[:20]
    return ""


def _exit_reason(code: int | None, stderr_line: str, reason: str) -> str:
    if code is None:
        return reason
    said = f": {stderr_line}" if stderr_line else ""
    return f"the agent exited with code {code} before answering initialize{said}"


async def _exited(process: asyncio.subprocess.Process) -> bool:
    """True when the process has exited, or does within a moment."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(process.wait(), _SETTLE_S)
    return process.returncode is not None


async def _end(process: asyncio.subprocess.Process, container: str | None, remote_pid: str | None, cookie: str) -> None:
    """End the agent and everything it started; reap it. Runs in `finally`, also while cancelled."""
    if process.stdin is not None:
        process.stdin.close()
    if container is not None and remote_pid is not None and not await _exited(process):
        # stdin's end did not stop it: the local `docker exec` dies below, the agent would not.
        await _kill_in_container(container, remote_pid)
    await kill_leftovers(process.pid, cookie)
    await _exited(process)  # reaped, once the kill has landed


async def _kill_in_container(container: str, pid: str) -> None:
    env = environment()
    if host := engine_url(get_settings()):
        env["DOCKER_HOST"] = host
    try:
        killer = await asyncio.create_subprocess_exec(
            *("docker", "exec", container, "sh", "-c", 'kill -KILL "$1" 2>/dev/null', "sh", pid),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )
    except OSError:
        return
    try:
        await asyncio.wait_for(killer.wait(), _REMOTE_KILL_S)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            killer.kill()
        await killer.wait()
