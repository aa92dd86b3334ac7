"""The registry: which agents exist, how each is probed and with what policy.

A registry file is YAML, validated at load. A bad file is rejected whole with every problem named
by agent id and field path; nothing is half-loaded. Policy fields may be given per agent or under
`defaults:`; an agent's own value wins.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from .alerts.config import AlertsConfig
from .durations import Duration
from .errors import Problem, RegistryError
from .references import reference_problems

__all__ = [
    "AgentSpec",
    "CommandProbe",
    "DockerProbe",
    "HeartbeatProbe",
    "HttpProbe",
    "Policy",
    "ProbeSpec",
    "Registry",
    "TcpProbe",
    "load_registry",
    "parse_registry",
]

SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
POLICY_FIELDS = (
    "failure_threshold",
    "success_threshold",
    "start_grace",
    "timeout",
    "interval",
    "max_backoff",
)


def _check_timeout(v: timedelta | None) -> timedelta | None:
    if v is not None and not timedelta(0) < v <= timedelta(minutes=10):
        raise ValueError("timeout must be more than 0s and at most 10m")
    return v


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Policy(_Strict):
    """Thresholds and timing of the health policy (defaults after gatus and DESIGN.md)."""

    failure_threshold: int = Field(3, ge=1, le=1000, description="consecutive failures to become unhealthy")
    success_threshold: int = Field(1, ge=1, le=1000, description="consecutive successes to become healthy")
    start_grace: Duration = Field(
        timedelta(0), description="failures inside this window after first sight do not count"
    )
    timeout: Duration = Field(timedelta(seconds=5), description="per-check timeout")
    interval: Duration = Field(timedelta(0), description="minimum time between checks; 0s = every monitor run")
    max_backoff: Duration = Field(timedelta(seconds=60), description="cap of the doubling re-check interval")

    _timeout_bounds = field_validator("timeout")(classmethod(lambda cls, v: _check_timeout(v)))


class _PolicyOverrides(_Strict):
    """The same fields, all optional: what a registry file actually says."""

    failure_threshold: int | None = Field(None, ge=1, le=1000)
    success_threshold: int | None = Field(None, ge=1, le=1000)
    start_grace: Duration | None = None
    timeout: Duration | None = None
    interval: Duration | None = None
    max_backoff: Duration | None = None

    _timeout_bounds = field_validator("timeout")(classmethod(lambda cls, v: _check_timeout(v)))

    def given(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in POLICY_FIELDS if getattr(self, k) is not None}


class HttpProbe(_Strict):
    """GET `url`; healthy on 200-399, or exactly `expect_status` when given."""

    url: str
    expect_status: int | None = Field(None, ge=100, le=599)
    body_contains: str | None = None
    max_latency: Duration | None = None
    target: str | None = Field(None, description="address that replaces localhost/127.0.0.1 in the URL")
    headers: dict[str, str] = Field(default_factory=dict)

    @property
    def is_placeholder(self) -> bool:
        return is_placeholder(self.url)

    @field_validator("url")
    @classmethod
    def _url_shape(cls, v: str) -> str:
        v = v.strip()
        if is_placeholder(v):
            return v
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError(f"not an http(s) URL: {v!r}")
        return v


class TcpProbe(_Strict):
    """A connection to host:port opens within the timeout."""

    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)


class CommandProbe(_Strict):
    """`sh -c run` exits 0 within the timeout."""

    run: str = Field(min_length=1)


class DockerProbe(_Strict):
    """The container's state as the Docker engine reports it."""

    container: str = Field(min_length=1)


class HeartbeatProbe(_Strict):
    """The agent pushes beats; a beat older than `timeout` is missed; `max_missed` time it out."""

    timeout: Duration = timedelta(seconds=30)
    max_missed: int = Field(3, ge=1, le=1000)
    token_env: str | None = Field(None, description="environment variable holding the agent's bearer token")
    token_secret: str | None = Field(None, description="Prefect Secret block holding the agent's bearer token")


ProbeKind = Literal["http", "tcp", "command", "docker", "heartbeat"]


class ProbeSpec(_Strict):
    """Exactly one kind of probe."""

    http: HttpProbe | None = None
    tcp: TcpProbe | None = None
    command: CommandProbe | None = None
    docker: DockerProbe | None = None
    heartbeat: HeartbeatProbe | None = None

    @field_validator("command", mode="before")
    @classmethod
    def _command_text(cls, v: Any) -> Any:
        return {"run": v} if isinstance(v, str) else v

    @model_validator(mode="after")
    def _exactly_one(self) -> ProbeSpec:
        given = [k for k in ("http", "tcp", "command", "docker", "heartbeat") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one probe kind of http, tcp, command, docker, heartbeat"
                + (f" (got {', '.join(given)})" if given else " (got none)")
            )
        return self

    @property
    def kind(self) -> ProbeKind:
        for k in ("http", "tcp", "command", "docker", "heartbeat"):
            if getattr(self, k) is not None:
                return k  # type: ignore[return-value]
        raise AssertionError("validated ProbeSpec has no kind")


class AgentSpec(_PolicyOverrides):
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
        if (self.transport or "").lower() == "stdio":
            return "stdio transport: supervised by its own process manager"
        if self.probe is None:
            if self.endpoint is not None and is_placeholder(self.endpoint):
                return f"placeholder endpoint {self.endpoint!r}"
            return "no probe configured"
        if self.probe.http is not None and self.probe.http.is_placeholder:
            return f"placeholder endpoint {self.probe.http.url!r}"
        return None

    def with_policy(self, defaults: dict[str, Any]) -> AgentSpec:
        merged = {**defaults, **self.given()}
        return self.model_copy(update={"policy": Policy(**merged)})


class Registry(_Strict):
    """A validated registry: defaults plus agents with their policies resolved."""

    defaults: _PolicyOverrides = Field(default_factory=lambda: _PolicyOverrides())
    agents: list[AgentSpec] = Field(default_factory=list)
    alerts: AlertsConfig | None = None

    @field_validator("defaults", "agents", mode="before")
    @classmethod
    def _empty_is_none(cls, v: Any, info: Any) -> Any:
        # `agents:` with every entry commented out is an empty fleet, not an error.
        if v is None:
            return [] if info.field_name == "agents" else {}
        return v

    _index: tuple[list[AgentSpec], dict[str, AgentSpec]] | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _resolve(self) -> Registry:
        defaults = self.defaults.given()
        resolved = [a.with_policy(defaults) for a in self.agents]
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


def is_placeholder(endpoint: str) -> bool:
    text = endpoint.strip()
    return not text or "..." in text or text.lower().startswith("acp://")


def load_registry(path: str | Path) -> Registry:
    """Read and validate a registry file; raise RegistryError naming every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RegistryError(str(path), [Problem(None, "", f"cannot read file: {exc.strerror or exc}")]) from exc
    return parse_registry(text, source=str(path))


def parse_registry(text: str, source: str = "<registry>") -> Registry:
    """Validate registry YAML text; raise RegistryError naming every problem."""
    try:
        # The C loader (libyaml) parses a 10,000-agent registry several times faster.
        raw = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        raise RegistryError(source, [Problem(None, "", f"not valid YAML: {exc}")]) from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise RegistryError(source, [Problem(None, "", "the top level must be a mapping with an `agents:` list")])
    return validate_registry(raw, source)


def validate_registry(raw: dict[str, Any], source: str = "<registry>") -> Registry:
    problems: list[Problem] = []
    agents_raw = raw.get("agents")
    ids: list[Any] = []
    if isinstance(agents_raw, list):
        ids = [a.get("id") if isinstance(a, dict) else None for a in agents_raw]
        for dup, count in Counter(i for i in ids if isinstance(i, str)).items():
            if count > 1:
                problems.append(Problem(dup, "id", f"duplicate id ({count} agents use it)"))
    registry: Registry | None = None
    try:
        registry = Registry.model_validate(raw)
    except ValidationError as exc:
        problems.extend(_problems_from(exc, ids))
    if registry is not None:
        problems.extend(reference_problems(registry))
    if problems or registry is None:
        raise RegistryError(source, problems)
    return registry


def _problems_from(exc: ValidationError, ids: list[Any]) -> list[Problem]:
    problems = []
    for err in exc.errors():
        loc = list(err["loc"])
        agent: str | None = None
        if len(loc) >= 2 and loc[0] == "agents" and isinstance(loc[1], int):
            index = loc[1]
            ident = ids[index] if index < len(ids) else None
            agent = ident if isinstance(ident, str) and ident else f"#{index + 1}"
            loc = loc[2:]
        field = ".".join(str(p) for p in loc)
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown field"
        problems.append(Problem(agent, field, message))
    return problems
