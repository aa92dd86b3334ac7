"""Values that flow through agentwatch: states, probe results, agent records and transitions."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

__all__ = ["AgentRecord", "AgentState", "ProbeResult", "Transition"]


class AgentState(StrEnum):
    """The health state of one agent. Values are the event suffix: `agentwatch.agent.<value>`."""

    UNKNOWN = "unknown"  # never checked, or the backend that would tell is unreachable
    STARTING = "starting"  # failing inside its start grace period, or a container healthcheck says so
    HEALTHY = "healthy"
    DEGRADED = "degraded"  # failing, below the failure threshold
    UNHEALTHY = "unhealthy"  # failure threshold reached
    PAUSED = "paused"  # maintenance: not probed, not alerted
    UNMANAGED = "unmanaged"  # listed, never probed (stdio transport, placeholder endpoint)
    STOPPED = "stopped"  # container exited with code 0
    FAILED = "failed"  # container exited non-zero, was OOM-killed or is gone

    @property
    def is_down(self) -> bool:
        return self in (AgentState.UNHEALTHY, AgentState.FAILED)


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What one check of one agent found. Probes return this; they never raise for a failed target.

    `state` lets a probe that knows more than ok/not-ok (a Docker container that exited 0, a
    healthcheck still starting, an unreachable engine) name the state outright; the health policy
    honours it instead of counting a failure.

    `failures` and `threshold` let a probe that counts for itself (heartbeat: missed beats against
    `max_missed`) replace the policy's one-failure-per-check against `failure_threshold`.
    """

    agent_id: str
    ok: bool
    latency_ms: float | None = None
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    state: AgentState | None = None
    skipped: bool = False  # not probed (unmanaged, paused, not due)
    failures: int | None = None  # counted by the probe; its reason is then used as given
    threshold: int | None = None  # the probe's own failure threshold


@dataclass(frozen=True, slots=True)
class AgentRecord:
    """The durable per-agent state kept between monitor runs (one row in the state store)."""

    agent_id: str
    state: AgentState = AgentState.UNKNOWN
    since: datetime | None = None  # when `state` was entered
    reason: str = ""
    failures: int = 0  # consecutive failed checks
    successes: int = 0  # consecutive successful checks
    first_seen: datetime | None = None  # start of the start-grace window
    last_checked: datetime | None = None
    next_check: datetime | None = None  # interval and backoff
    latency_ms: float | None = None
    paused: bool = False
    paused_until: datetime | None = None
    sticky: bool = False  # a sticky pause ignores heartbeats until resumed
    version: int = 0  # compare-and-swap counter; 0 = not stored yet

    def evolve(self, **changes: Any) -> AgentRecord:
        return replace(self, **changes)


@dataclass(frozen=True, slots=True)
class Transition:
    """A change of state of one agent. Stored, shown as an artifact and emitted as an event."""

    agent_id: str
    from_state: AgentState
    to_state: AgentState
    reason: str
    failures: int
    at: datetime

    def payload(self) -> dict[str, Any]:
        """The event payload (`since` is when the new state began)."""
        return {
            "agent": self.agent_id,
            "from": self.from_state.value,
            "to": self.to_state.value,
            "reason": self.reason,
            "failures": self.failures,
            "since": self.at.isoformat(),
        }
