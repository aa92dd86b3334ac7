"""What a probe is given besides its agent, and the shape of a probe.

A probe is a coroutine function `(agent, ctx) -> ProbeResult`. The context carries what the
caller shares across a batch: the HTTP clients (httpx, and the http probe's fast client) and body
limit, the beats the monitor read for heartbeat agents, and the Docker engine connection for
docker agents. The caller makes and closes them; nothing here builds a client or an engine.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

import httpx

from ..beats import Beat
from ..models import ProbeResult
from ..registry import AgentSpec

if TYPE_CHECKING:
    from ..docker.state import ContainerInfo
    from .fasthttp import FastHttp

__all__ = ["BeatSnapshot", "ContainerInspector", "ProbeContext", "ProbeFn"]


@dataclass(frozen=True, slots=True)
class BeatSnapshot:
    """Beats as read from the store at `now`, and when each agent's clock started."""

    now: datetime
    beats: Mapping[str, Beat] = field(default_factory=dict)
    clocks: Mapping[str, datetime] = field(default_factory=dict)


class ContainerInspector(Protocol):
    """What the docker probe needs of an engine (agentwatch.docker.DockerEngine is one)."""

    async def inspect(self, ref: str) -> ContainerInfo | None:
        """The container named or identified by `ref`, None when there is none; raises
        EngineUnavailable when the engine cannot be asked."""
        ...


@dataclass(frozen=True, slots=True)
class ProbeContext:
    """What a probe may use besides its agent: shared clients and limits."""

    http: httpx.AsyncClient
    max_body_bytes: int = 65536
    beats: BeatSnapshot | None = None  # heartbeat agents: beats the monitor read from the store
    docker: ContainerInspector | None = None  # docker agents: one engine connection shared by a batch
    fast_http: FastHttp | None = None  # http agents: the fast GET client; without it they use `http`


ProbeFn = Callable[[AgentSpec, ProbeContext], Awaitable[ProbeResult]]
