"""The docker probe: inspect the agent's container on the engine the caller passed.

What the container's state means (the table of engine states) is agentwatch.docker.observe's,
shared with the monitor's rules and reconcile. This module only asks the engine. The engine is
the batch's (`ProbeContext.docker`): one connection, so a dead engine is found out once, not per
agent. A batch given no engine checks nothing: the result names the agent and changes no record.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ..docker.observe import container_result, unreachable_result
from ..errors import EngineUnavailable
from ..models import NotProbed, ProbeResult
from ..registry import AgentSpec

if TYPE_CHECKING:
    from .context import ProbeContext

__all__ = ["NO_ENGINE", "probe_docker"]

NO_ENGINE = "no Docker engine given to the probe batch"


async def probe_docker(agent: AgentSpec, ctx: ProbeContext) -> ProbeResult:
    """Inspect the agent's container on the engine in `ctx.docker`."""
    assert agent.probe is not None and agent.probe.docker is not None
    ref = agent.probe.docker.container
    if ctx.docker is None:
        # A caller's mistake, not the agent's: nothing was checked, so nothing is recorded.
        reason = f"agent {agent.id!r}: {NO_ENGINE}"
        return ProbeResult(agent.id, ok=False, reason=reason, details={"container": ref}, override=NotProbed())
    start = time.perf_counter()
    try:
        info = await ctx.docker.inspect(ref)
    except EngineUnavailable as exc:
        return unreachable_result(agent.id, str(exc), (time.perf_counter() - start) * 1000)
    return container_result(agent.id, ref, info, (time.perf_counter() - start) * 1000)
