"""The registry: which agents exist, how each is probed and with what policy.

A registry file is YAML, validated at load. A bad file is rejected whole with every problem named
by agent id and field path; nothing is half-loaded. Policy fields may be given per agent or under
`defaults:`; an agent's own value wins.
"""

from __future__ import annotations

import contextlib
import re
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

import httpx
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
from .redact import redact_url
from .references import reference_problems
from .settings import get_settings

__all__ = [
    "A2aProbe",
    "AcpProbe",
    "AgentSpec",
    "CommandProbe",
    "DockerProbe",
    "EnvFrom",
    "HeartbeatProbe",
    "HttpProbe",
    "JsonCondition",
    "McpProbe",
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


class _Strict(BaseModel):
    # No input in a ValidationError's text: header values and URLs may hold tokens.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class Policy(_Strict):
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


class _PolicyOverrides(_Strict):
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


class JsonCondition(_Strict):
    """The http probe's body, parsed as JSON, holds `equals` at `path` (a JSONPath subset, see
    agentwatch.probes.conditions); without `equals`, the path must exist."""

    path: str = Field(min_length=1)
    equals: Any = None

    @property
    def checks_equality(self) -> bool:
        return "equals" in self.model_fields_set

    @field_validator("path")
    @classmethod
    def _path_shape(cls, v: str) -> str:
        # At call time: agentwatch.probes imports this module.
        from .probes.conditions import parse_path

        parse_path(v)
        return v

    @field_validator("equals")
    @classmethod
    def _json_value(cls, v: Any) -> Any:
        if not _is_json(v):
            raise ValueError(
                "equals must be a JSON value: a string, number, true/false, null, list or mapping "
                "(quote dates and times in YAML)"
            )
        return v


def _is_json(value: Any) -> bool:
    if value is None or isinstance(value, str | bool | int):
        return True
    if isinstance(value, float):
        return value == value and value not in (float("inf"), float("-inf"))
    if isinstance(value, list):
        return all(_is_json(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_json(v) for k, v in value.items())
    return False


class HttpProbe(_Strict):
    """GET `url`; healthy on 200-399, or exactly `expect_status` when given. Header values and URL
    credentials are secrets: no error about them quotes them."""

    url: str
    expect_status: int | None = Field(None, ge=100, le=599)
    body_contains: str | None = None
    max_latency: Duration | None = None
    target: str | None = Field(None, description="address that replaces localhost/127.0.0.1 in the URL")
    headers: dict[str, str] = Field(default_factory=dict)
    # `json` is the YAML key; `json_` the attribute (BaseModel.json would be shadowed).
    json_: JsonCondition | None = Field(None, alias="json", description="a JSON value the body must hold")
    tls_min_days: int | None = Field(None, ge=1, le=3650, description="least days left on the TLS certificate")

    @property
    def is_placeholder(self) -> bool:
        return is_placeholder(self.url)

    @model_validator(mode="after")
    def _tls_needs_https(self) -> HttpProbe:
        if self.tls_min_days is not None and not self.is_placeholder and not self.url.lower().startswith("https://"):
            raise ValueError("tls_min_days needs an https:// URL")
        return self

    @field_validator("url")
    @classmethod
    def _url_shape(cls, v: str) -> str:
        v = v.strip()
        if is_placeholder(v):
            return v
        url_problem(v)
        return v

    @field_validator("target")
    @classmethod
    def _target_shape(cls, v: str | None) -> str | None:
        if v is not None and not _HOST.match(v):
            raise ValueError(f"not a host name or IP address: {redact_url(v)!r}")
        return v

    @field_validator("headers")
    @classmethod
    def _header_shape(cls, v: dict[str, str]) -> dict[str, str]:
        # Checked here, not left to the HTTP client: its error quotes the value, a token most often.
        for name, value in v.items():
            if not _TOKEN.match(name):
                raise ValueError(f"header name {name!r} is not a valid HTTP header name")
            if problem := _header_value_problem(value):
                raise ValueError(f"header {name!r}: the value {problem}")
        return v


# RFC 9110 token (header names) and a host: a DNS name, IPv4 or bracketed IPv6 address.
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_HOST = re.compile(r"^(?:[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,252})|\[[0-9A-Fa-f:.]+\])$")


def _header_value_problem(value: str) -> str | None:
    """What makes `value` unsendable as an HTTP header value, without quoting it."""
    for i, ch in enumerate(value):
        if ch in "\r\n":
            return f"contains a line break (character {i + 1}; a YAML `|` block ends in one: use `|-`)"
        if ch == "\0":
            return f"contains a NUL character (character {i + 1})"
        if (ord(ch) < 0x20 and ch != "\t") or ord(ch) == 0x7F:
            return f"contains a control character (character {i + 1})"
        if ord(ch) > 0x7E:
            return f"contains a non-ASCII character (character {i + 1})"
    if value != value.strip(" \t"):
        return "begins or ends with whitespace"
    return None


def url_problem(url: str) -> None:
    """Raise ValueError saying what makes `url` unusable for an http probe; the message never
    quotes its credentials."""
    shown = redact_url(url)
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise ValueError(f"URL contains whitespace or a control character: {shown!r}")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError for a port out of 0-65535 or not a number
    except ValueError as exc:
        raise ValueError(f"not a valid URL ({exc}): {shown!r}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError(f"not an http(s) URL: {shown!r}")
    if not parts.hostname:
        raise ValueError(f"URL has no host: {shown!r}")
    if port is not None and not 1 <= port <= 65535:
        raise ValueError(f"URL port must be 1-65535: {shown!r}")
    try:
        httpx.URL(url)
    except (httpx.InvalidURL, ValueError) as exc:
        raise ValueError(f"not a valid URL ({redact_url(str(exc))}): {shown!r}") from None


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


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# A container name or id as `docker exec` takes it; never a leading "-" (it would read as an option).
_CONTAINER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")


class EnvFrom(_Strict):
    """An environment value taken from the monitor's own environment variable `env` when the probe
    runs: how a secret reaches the agent without being written in the registry."""

    env: str

    @field_validator("env")
    @classmethod
    def _env_name(cls, v: str) -> str:
        if not _ENV_NAME.match(v):
            raise ValueError("env must name an environment variable (letters, digits, _)")
        return v


class AcpProbe(_Strict):
    """Start `command` (with `sh -c`, or `docker exec -i` in `container`) and send the Agent Client
    Protocol's `initialize` over its stdio; healthy on a version-1 answer with agentCapabilities.
    `env` values are plain text or `{env: VAR}` (read from the monitor's environment)."""

    command: str = Field(min_length=1)
    container: str | None = None
    env: dict[str, str | EnvFrom] = Field(default_factory=dict)

    @field_validator("container")
    @classmethod
    def _container_shape(cls, v: str | None) -> str | None:
        if v is not None and not _CONTAINER.match(v):
            raise ValueError("not a container name or id (letters, digits, _ . -; not starting with -)")
        return v

    @field_validator("env", mode="before")
    @classmethod
    def _env_shape(cls, v: Any) -> Any:
        # Checked before pydantic's own union errors ("env.X.str: ...", "env.X.EnvFrom...") would say it.
        if not isinstance(v, dict):
            return v
        for name, value in v.items():
            if not isinstance(name, str) or not _ENV_NAME.match(name):
                raise ValueError(f"{str(name)[:40]!r} is not an environment variable name (letters, digits, _)")
            if isinstance(value, str):
                if "\0" in value:
                    raise ValueError(f"the value of {name} contains a NUL character")
            elif not (isinstance(value, dict) and set(value) == {"env"} and isinstance(value["env"], str)):
                raise ValueError(f"the value of {name} must be text or {{env: VARIABLE}}")
            elif not _ENV_NAME.match(value["env"]):
                raise ValueError(f"{name}: env must name an environment variable (letters, digits, _)")
        return v


def _check_headers(v: dict[str, str]) -> dict[str, str]:
    for name, value in v.items():
        if not _TOKEN.match(name):
            raise ValueError(f"header name {name!r} is not a valid HTTP header name")
        if problem := _header_value_problem(value):
            raise ValueError(f"header {name!r}: the value {problem}")
    return v


def _check_url(v: str) -> str:
    v = v.strip()
    url_problem(v)
    return v


class McpProbe(_Strict):
    """An MCP server over Streamable HTTP at `url`: `server/discover` (revision 2026-07-28), else
    the `initialize` handshake, `ping` and the session's DELETE. Header values are secrets."""

    url: str
    headers: dict[str, str] = Field(default_factory=dict)

    _url_shape = field_validator("url")(classmethod(lambda cls, v: _check_url(v)))
    _header_shape = field_validator("headers")(classmethod(lambda cls, v: _check_headers(v)))


class A2aProbe(_Strict):
    """An A2A agent's card at `url` + /.well-known/agent-card.json (then the older agent.json), or
    at `url` itself when its path ends in .json; healthy with a name, version and interface URL."""

    url: str

    _url_shape = field_validator("url")(classmethod(lambda cls, v: _check_url(v)))


ProbeKind = Literal["http", "tcp", "command", "docker", "heartbeat", "acp", "mcp", "a2a"]
_PROBE_KINDS: tuple[ProbeKind, ...] = get_args(ProbeKind)


class ProbeSpec(_Strict):
    """Exactly one kind of probe."""

    http: HttpProbe | None = None
    tcp: TcpProbe | None = None
    command: CommandProbe | None = None
    docker: DockerProbe | None = None
    heartbeat: HeartbeatProbe | None = None
    acp: AcpProbe | None = None
    mcp: McpProbe | None = None
    a2a: A2aProbe | None = None

    @field_validator("command", mode="before")
    @classmethod
    def _command_text(cls, v: Any) -> Any:
        return {"run": v} if isinstance(v, str) else v

    @model_validator(mode="after")
    def _exactly_one(self) -> ProbeSpec:
        given = [k for k in _PROBE_KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one probe kind of {', '.join(_PROBE_KINDS)}"
                + (f" (got {', '.join(given)})" if given else " (got none)")
            )
        return self

    @property
    def kind(self) -> ProbeKind:
        for k in _PROBE_KINDS:
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

    def with_policy(self, defaults: dict[str, Any]) -> AgentSpec:
        merged = {**defaults, **self.given()}
        return self.model_copy(update={"policy": Policy(**merged)})


class Registry(_Strict):
    """A validated registry: defaults plus agents with their policies resolved."""

    defaults: _PolicyOverrides = Field(default_factory=lambda: _PolicyOverrides())
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


def load_registry(path: str | Path, max_bytes: int | None = None) -> Registry:
    """Read and validate a registry file; raise RegistryError naming every problem.

    A file over `max_bytes` (default: the AGENTWATCH_REGISTRY_MAX_BYTES setting) is refused before
    it is parsed: YAML costs about twenty times its size in memory.
    """
    path = Path(path)
    cap = get_settings().registry_max_bytes if max_bytes is None else max_bytes
    try:
        with path.open("rb") as file:
            # Read one byte past the cap rather than trust a stat: the file may grow, or be a pipe.
            data = file.read(cap + 1)
    except OSError as exc:
        raise RegistryError(str(path), [Problem(None, "", f"cannot read file: {exc.strerror or exc}")]) from exc
    if len(data) > cap:
        raise RegistryError(str(path), [_too_large(path, cap)])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RegistryError(str(path), [Problem(None, "", f"not UTF-8 text (byte {exc.start + 1})")]) from None
    return parse_registry(text, source=str(path), max_bytes=cap)


def _too_large(path: Path | str, cap: int) -> Problem:
    size = ""
    with contextlib.suppress(OSError):
        size = f"{Path(path).stat().st_size:,} bytes, "
    return Problem(
        None,
        "",
        f"file too large ({size}over the limit of {cap:,} bytes); raise AGENTWATCH_REGISTRY_MAX_BYTES "
        "if the registry really is this large",
    )


_EMPTY_FLEET_HINT = "write `agents: []` for a fleet with no agents"


def parse_registry(text: str, source: str = "<registry>", max_bytes: int | None = None) -> Registry:
    """Validate registry YAML text; raise RegistryError naming every problem.

    An empty document, or one without an `agents:` list, is refused rather than read as a fleet of
    no agents: a truncated or blanked file must not make the monitor forget every agent. A fleet
    with no agents says so: `agents: []`.
    """
    cap = get_settings().registry_max_bytes if max_bytes is None else max_bytes
    if len(text) > cap or len(text.encode("utf-8")) > cap:
        raise RegistryError(source, [_too_large(source, cap)])
    try:
        # The C loader (libyaml) parses a 10,000-agent registry several times faster.
        raw = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        raise RegistryError(source, [Problem(None, "", f"not valid YAML: {exc}")]) from exc
    if raw is None:
        raise RegistryError(source, [Problem(None, "", f"the file is empty (or only comments): {_EMPTY_FLEET_HINT}")])
    if not isinstance(raw, dict):
        raise RegistryError(source, [Problem(None, "", "the top level must be a mapping with an `agents:` list")])
    return validate_registry(raw, source)


def validate_registry(raw: dict[str, Any], source: str = "<registry>") -> Registry:
    """Validate a parsed registry document; raise RegistryError naming every problem."""
    if "agents" not in raw:
        raise RegistryError(source, [Problem(None, "agents", f"missing: {_EMPTY_FLEET_HINT}")])
    if raw["agents"] is None:
        raise RegistryError(
            source, [Problem(None, "agents", f"empty (every entry commented out?): {_EMPTY_FLEET_HINT}")]
        )
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
