"""The docker probe: a container's state from the engine, read as values, turned into a ProbeResult.

| engine says                        | result                                                  |
|------------------------------------|---------------------------------------------------------|
| running, health healthy            | ok (healthy)                                            |
| running, no healthcheck            | ok (healthy): the engine has nothing more to say        |
| running, health starting           | state STARTING                                          |
| running, health unhealthy          | a failed check; reason = the last healthcheck output    |
| restarting / paused                | a failed check without a state (counted: degraded)      |
| exited 0 (or created, never run)   | state STOPPED                                           |
| exited non-zero, dead              | state FAILED, exit code in the reason                   |
| OOM-killed                         | state FAILED, reason names out-of-memory                |
| no such container                  | state FAILED, reason "... not found"                    |
| engine unreachable                 | state UNKNOWN, reason "docker engine unreachable"       |
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ..errors import EngineUnavailable
from ..models import AgentState, ProbeResult
from ..registry import AgentSpec
from ..settings import get_settings
from .engine import UNREACHABLE, DockerEngine
from .state import ContainerInfo

if TYPE_CHECKING:
    from ..probes import ProbeContext

__all__ = ["container_result", "exit_reason", "probe_docker", "unreachable_result"]

_MAX_OUTPUT = 300


def exit_reason(info: ContainerInfo) -> str:
    """Why a container that is not running ended: OOM kill, exit code, engine error."""
    if info.oom_killed:
        return f"killed: out of memory (OOM-killed, exit code {info.exit_code})"
    if info.status == "dead":
        return f"dead: {info.error or 'the engine could not stop or remove it'}"
    if info.error:
        return f"exited with code {info.exit_code}: {info.error}"
    return f"exited with code {info.exit_code}"


def container_result(
    agent_id: str, ref: str, info: ContainerInfo | None, latency_ms: float | None = None
) -> ProbeResult:
    """What the container's engine state means for its agent (the table in this module's docstring)."""
    if info is None:
        return ProbeResult(
            agent_id,
            ok=False,
            latency_ms=latency_ms,
            state=AgentState.FAILED,
            reason=f"container {ref!r} not found",
            details={"container": ref, "missing": True},
        )

    def result(ok: bool, reason: str, state: AgentState | None = None) -> ProbeResult:
        return ProbeResult(agent_id, ok=ok, latency_ms=latency_ms, reason=reason, details=info.details(), state=state)

    if info.status == "running":
        if info.health == "unhealthy":
            output = info.health_output[-_MAX_OUTPUT:] or f"healthcheck exited with code {info.health_exit}"
            return result(False, output)
        if info.health == "starting":
            return result(False, "healthcheck starting", AgentState.STARTING)
        return result(True, "running, healthy" if info.health == "healthy" else "running (no healthcheck)")
    if info.status == "restarting":
        return result(False, f"restarting (restart count {info.restart_count}, last exit code {info.exit_code})")
    if info.status == "paused":
        return result(False, "paused by the engine")
    if info.status == "created":
        return result(False, "created, never started", AgentState.STOPPED)
    if info.status == "exited" and info.exit_code == 0 and not info.oom_killed:
        return result(False, "exited with code 0", AgentState.STOPPED)
    if info.status in ("exited", "dead"):
        return result(False, exit_reason(info), AgentState.FAILED)
    if info.status == "removing":
        return result(False, "being removed", AgentState.FAILED)
    return result(False, f"unexpected engine status {info.status!r}")


def unreachable_result(agent_id: str, error: str, latency_ms: float | None = None) -> ProbeResult:
    """The engine could not be asked: nothing is known about the agent, so it is not a failure."""
    return ProbeResult(
        agent_id,
        ok=False,
        latency_ms=latency_ms,
        state=AgentState.UNKNOWN,
        reason=UNREACHABLE,
        details={"error": error},
    )


async def probe_docker(agent: AgentSpec, ctx: ProbeContext) -> ProbeResult:
    """Inspect the agent's container on the engine in `ctx.docker` (or one made from settings)."""
    assert agent.probe is not None and agent.probe.docker is not None
    ref = agent.probe.docker.container
    engine = ctx.docker
    own = engine is None
    if engine is None:
        engine = DockerEngine.from_settings(get_settings())
    start = time.perf_counter()
    try:
        info = await engine.inspect(ref)
    except EngineUnavailable as exc:
        return unreachable_result(agent.id, str(exc), (time.perf_counter() - start) * 1000)
    finally:
        if own:
            await engine.close()
    return container_result(agent.id, ref, info, (time.perf_counter() - start) * 1000)
