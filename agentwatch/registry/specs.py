"""A registry as validated: the health policy, the agents and the registry holding them.

Policy fields may be given per agent or under `defaults:`; an agent's own value wins.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from ..durations import Duration
from .alerts import AlertsConfig
from .base import SLUG, Strict
from .probes import ProbeSpec
from .urls import is_placeholder

__all__ = ["POLICY_FIELDS", "AgentSpec", "Policy", "PolicyOverrides", "Registry"]

POLICY_FIELDS = (
    "failure_threshold",
    "success_threshold",
    "start_grace",
    "timeout",
    "interval",
    "max_backoff",
    "flap_threshold",
    "flap_window",
)


def _check_flap_window(v: timedelta | None) -> timedelta | None:
    if v is not None and not timedelta(minutes=1) <= v <= timedelta(hours=24):
        raise ValueError("flap_window must be at least 1m and at most 24h")
    return v


def _check_timeout(v: timedelta | None) -> timedelta | None:
    if v is not None and not timedelta(0) < v <= timedelta(minutes=10):
        raise ValueError("timeout must be more than 0s and at most 10m")
    return v


class Policy(Strict):
    """Thresholds and timing of the health policy (defaults after gatus; README "Health policy")."""

    failure_threshold: int = Field(3, ge=1, le=1000, description="consecutive failures to become unhealthy")
    success_threshold: int = Field(1, ge=1, le=1000, description="consecutive successes to become healthy")
    start_grace: Duration = Field(
        timedelta(0), description="failures inside this window after first sight do not count"
    )
    timeout: Duration = Field(timedelta(seconds=5), description="per-check timeout")
    interval: Duration = Field(timedelta(0), description="minimum time between checks; 0s = every monitor run")
    max_backoff: Duration = Field(timedelta(seconds=60), description="cap of the doubling re-check interval")
    flap_threshold: int = Field(
        5, ge=0, le=1000, description="state changes within flap_window past which it is flapping; 0 = off"
    )
    flap_window: Duration = Field(timedelta(minutes=10), description="window of flap_threshold (1m-24h)")

    _timeout_bounds = field_validator("timeout")(classmethod(lambda cls, v: _check_timeout(v)))
    _flap_window_bounds = field_validator("flap_window")(classmethod(lambda cls, v: _check_flap_window(v)))


class PolicyOverrides(Strict):
    """The same fields, all optional: what a registry file actually says."""

    failure_threshold: int | None = Field(None, ge=1, le=1000)
    success_threshold: int | None = Field(None, ge=1, le=1000)
    start_grace: Duration | None = None
    timeout: Duration | None = None
    interval: Duration | None = None
    max_backoff: Duration | None = None
    flap_threshold: int | None = Field(None, ge=0, le=1000)
    flap_window: Duration | None = None

    _timeout_bounds = field_validator("timeout")(classmethod(lambda cls, v: _check_timeout(v)))
    _flap_window_bounds = field_validator("flap_window")(classmethod(lambda cls, v: _check_flap_window(v)))

    def given(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in POLICY_FIELDS if getattr(self, k) is not None}


class AgentSpec(PolicyOverrides):
    """One registered agent. `policy` is resolved against the registry defaults at load."""

    id: str
    name: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    transport: str | None = None
    endpoint: str | None = Field(None, description="informational endpoint, e.g. an ACP address")
    probe: ProbeSpec | None = None
    policy: Policy = Field(default_factory=lambda: Policy(), exclude=True)
    source: Literal["registry", "docker"] = "registry"
    depends_on: list[str] = Field(
        default_factory=list, description="agent ids this agent needs; while one is down, this agent's alerts wait"
    )

    @model_validator(mode="before")
    @classmethod
    def _no_policy_block(cls, data: Any) -> Any:
        # `policy` is resolved at load; a `policy:` block in the file would be silently replaced.
        if isinstance(data, dict) and "policy" in data:
            raise ValueError(
                "unknown field 'policy': put policy fields (failure_threshold, timeout, ...) directly on "
                "the agent or under `defaults:`"
            )
        return data

    @field_validator("id")
    @classmethod
    def _slug(cls, v: str) -> str:
        if not SLUG.match(v) or len(v) > 63:
            raise ValueError(
                f"{v!r} is not a slug (lowercase letters, digits and single dashes, at most 63 characters)"
            )
        return v

    @property
    def display_name(self) -> str:
        return self.name or self.id

    @property
    def unmanaged_reason(self) -> str | None:
        """Why this agent is listed but never probed, or None when it is probed."""
        if (self.transport or "").lower() == "stdio" and (self.probe is None or self.probe.acp is None):
            # An acp probe speaks to a stdio agent the way its editor does: that one is probed.
            return "stdio transport: supervised by its own process manager"
        if self.probe is None:
            if self.endpoint is not None and is_placeholder(self.endpoint):
                return f"placeholder endpoint {self.endpoint!r}"
            return "no probe configured"
        if self.probe.http is not None and self.probe.http.is_placeholder:
            return f"placeholder endpoint {self.probe.http.url!r}"
        return None

    def with_policy(self, defaults: dict[str, Any], policies: dict[Any, Policy] | None = None) -> AgentSpec:
        """This agent with its policy resolved against `defaults`. `policies` (a dict the caller
        keeps for one registry) shares one Policy among agents whose fields are equal: it is frozen
        and holds only ints and timedeltas."""
        merged = {**defaults, **self.given()}
        if policies is None:
            return self.model_copy(update={"policy": Policy(**merged)})
        key = frozenset((k, type(v), v) for k, v in merged.items())
        policy = policies.get(key)
        if policy is None:
            policy = policies[key] = Policy(**merged)
        return self.model_copy(update={"policy": policy})


class Registry(Strict):
    """A validated registry: defaults plus agents with their policies resolved."""

    defaults: PolicyOverrides = Field(default_factory=lambda: PolicyOverrides())
    agents: list[AgentSpec] = Field(default_factory=list)
    alerts: AlertsConfig | None = None

    @field_validator("defaults", mode="before")
    @classmethod
    def _empty_is_none(cls, v: Any) -> Any:
        # `defaults:` with every entry commented out means no defaults. (`agents:` alike is refused
        # by parse_registry: an empty fleet must be written `agents: []`.)
        return {} if v is None else v

    _index: tuple[list[AgentSpec], dict[str, AgentSpec]] | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _resolve(self) -> Registry:
        defaults = self.defaults.given()
        policies: dict[Any, Policy] = {}
        resolved = [a.with_policy(defaults, policies) for a in self.agents]
        object.__setattr__(self, "agents", resolved)
        return self

    def get(self, agent_id: str) -> AgentSpec | None:
        """The agent with this id, or None. O(1): the monitor looks up every agent every cycle."""
        index = self._index
        # Keyed on the list object itself, so a model_copy with other agents never reads a stale index.
        if index is None or index[0] is not self.agents:
            index = (self.agents, {a.id: a for a in self.agents})
            self._index = index
        return index[1].get(agent_id)

    @property
    def ids(self) -> list[str]:
        return [a.id for a in self.agents]

    def merged(self, extra: list[AgentSpec]) -> Registry:
        """This registry plus agents found elsewhere (Docker labels); a registry entry wins on its id."""
        known = set(self.ids)
        defaults = self.defaults.given()
        added = []
        for agent in extra:
            if agent.id not in known:
                known.add(agent.id)
                added.append(agent.with_policy(defaults))
        return self.model_copy(update={"agents": [*self.agents, *added]})
