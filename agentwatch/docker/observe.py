"""What a container's engine state means for its agent: a ContainerInfo read into a ProbeResult.

The docker probe (agentwatch.probes.docker), the monitor's rules for label-registered agents
(`fleet`) and reconcile (`reconcile`) all judge a container by this one table.

| engine says                        | result                                                  |
|------------------------------------|---------------------------------------------------------|
| running, health healthy            | ok (healthy)                                            |
| running, no healthcheck            | ok (healthy): the engine has nothing more to say        |
| running, health starting           | asserted STARTING                                       |
| running, health unhealthy          | a failed check; reason = the last healthcheck output    |
| restarting / paused                | a failed check, not asserted (counted: degraded)        |
| exited 0 (or created, never run)   | asserted STOPPED                                        |
| exited non-zero, dead              | asserted FAILED, exit code in the reason                |
| OOM-killed                         | asserted FAILED, reason names out-of-memory             |
| no such container                  | asserted FAILED, reason "... not found"                 |
| engine unreachable                 | asserted UNKNOWN, reason "docker engine unreachable"    |

Every assertion but the last has the cause `Cause.CONTAINER`; the last `Cause.ENGINE_UNREACHABLE`.
"""

from __future__ import annotations

from ..models import AgentState, Asserted, Cause, ProbeResult
from .engine import UNREACHABLE
from .state import ContainerInfo

__all__ = ["container_result", "exit_reason", "unreachable_result"]

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
            reason=f"container {ref!r} not found",
            details={"container": ref, "missing": True},
            override=Asserted(AgentState.FAILED, Cause.CONTAINER),
        )

    def result(ok: bool, reason: str, state: AgentState | None = None) -> ProbeResult:
        override = Asserted(state, Cause.CONTAINER) if state is not None else None
        return ProbeResult(
            agent_id, ok=ok, latency_ms=latency_ms, reason=reason, details=info.details(), override=override
        )

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
        reason=UNREACHABLE,
        details={"error": error},
        override=Asserted(AgentState.UNKNOWN, Cause.ENGINE_UNREACHABLE),
    )
