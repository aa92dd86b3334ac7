"""Values that flow through agentwatch: states, probe results, agent records and transitions."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

__all__ = [
    "AgentRecord",
    "AgentState",
    "Asserted",
    "Cause",
    "Counted",
    "NotProbed",
    "Override",
    "OwnThreshold",
    "ProbeResult",
    "Transition",
]


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


class Cause(StrEnum):
    """Why a backend named an agent's state outright (`Asserted.cause`); matched, never parsed from text."""

    UNMANAGED = "unmanaged"  # listed, never probed (stdio transport, placeholder endpoint)
    CONTAINER = "container"  # the Docker engine reports the container stopped, failed, gone or starting
    ENGINE_UNREACHABLE = "engine-unreachable"  # the Docker engine could not be asked: nothing learnt
    RESTART_BUDGET = "restart-budget"  # reconcile gave up restarting: the restart budget is exhausted
    HEARTBEAT = "heartbeat"  # a heartbeat agent inside its start grace


@dataclass(frozen=True, slots=True)
class Asserted:
    """A backend knows the state outright (a container that exited 0 is stopped); the policy takes it."""

    state: AgentState
    cause: Cause


@dataclass(frozen=True, slots=True)
class Counted:
    """The probe counted failures itself (heartbeat: missed beats against `max_missed`).

    The count replaces the policy's one-failure-per-check, the probe's reason is used as given, and
    there is no backoff (re-reading stored beats costs nothing).
    """

    failures: int
    threshold: int


@dataclass(frozen=True, slots=True)
class OwnThreshold:
    """The policy counts one failure per check as usual, with its own wording, but against the
    probe's threshold and without backoff (heartbeat: a job that reported failure, judged against
    `max_missed`)."""

    threshold: int


@dataclass(frozen=True, slots=True)
class NotProbed:
    """Nothing was checked this time (probed by another backend, no beats loaded): the record stays."""


Override = Asserted | Counted | OwnThreshold | NotProbed


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What one check of one agent observed. Probes return this; they never raise for a failed target.

    `ok`, `latency_ms`, `reason` and `details` are the observation. `override`, when set, is a
    backend's typed instruction to the health policy (`Asserted`, `Counted`, `OwnThreshold`, `NotProbed`); without
    it the policy counts one success or failure per check.
    """

    agent_id: str
    ok: bool
    latency_ms: float | None = None
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    override: Override | None = None

    @property
    def asserted(self) -> AgentState | None:
        """The state a backend asserted, if any."""
        return self.override.state if isinstance(self.override, Asserted) else None

    @property
    def probed(self) -> bool:
        """False when nothing was checked: not probed here, or an unmanaged agent."""
        if isinstance(self.override, NotProbed):
            return False
        return not (isinstance(self.override, Asserted) and self.override.cause is Cause.UNMANAGED)


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
