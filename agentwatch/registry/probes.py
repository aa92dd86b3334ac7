"""How a registered agent is probed: one model per probe kind, and `ProbeSpec` holding exactly one.

Header values and URL credentials are secrets: no error about them quotes them.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any, Literal, get_args

from pydantic import Field, field_validator, model_validator

from ..durations import Duration
from .base import ENV_NAME, Strict
from .conditions import parse_path
from .urls import HOST, check_headers, check_url, is_placeholder, redact_url, url_problem

__all__ = [
    "A2aProbe",
    "AcpProbe",
    "CommandProbe",
    "DockerProbe",
    "EnvFrom",
    "HeartbeatProbe",
    "HttpProbe",
    "JsonCondition",
    "McpProbe",
    "ProbeKind",
    "ProbeSpec",
    "TcpProbe",
]

# A container name or id as `docker exec` takes it; never a leading "-" (it would read as an option).
_CONTAINER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")


class JsonCondition(Strict):
    """The http probe's body, parsed as JSON, holds `equals` at `path` (a JSONPath subset, see
    agentwatch.registry.conditions); without `equals`, the path must exist."""

    path: str = Field(min_length=1)
    equals: Any = None

    @property
    def checks_equality(self) -> bool:
        return "equals" in self.model_fields_set

    @field_validator("path")
    @classmethod
    def _path_shape(cls, v: str) -> str:
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


class HttpProbe(Strict):
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
        if v is not None and not HOST.match(v):
            raise ValueError(f"not a host name or IP address: {redact_url(v)!r}")
        return v

    _header_shape = field_validator("headers")(classmethod(lambda cls, v: check_headers(v)))


class TcpProbe(Strict):
    """A connection to host:port opens within the timeout."""

    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)


class CommandProbe(Strict):
    """`sh -c run` exits 0 within the timeout."""

    run: str = Field(min_length=1)


class DockerProbe(Strict):
    """The container's state as the Docker engine reports it."""

    container: str = Field(min_length=1)


class HeartbeatProbe(Strict):
    """The agent pushes beats; a beat older than `timeout` is missed; `max_missed` time it out."""

    timeout: Duration = timedelta(seconds=30)
    max_missed: int = Field(3, ge=1, le=1000)
    token_env: str | None = Field(None, description="environment variable holding the agent's bearer token")
    token_secret: str | None = Field(None, description="Prefect Secret block holding the agent's bearer token")


class EnvFrom(Strict):
    """An environment value taken from the monitor's own environment variable `env` when the probe
    runs: how a secret reaches the agent without being written in the registry."""

    env: str

    @field_validator("env")
    @classmethod
    def _env_name(cls, v: str) -> str:
        if not ENV_NAME.match(v):
            raise ValueError("env must name an environment variable (letters, digits, _)")
        return v


class AcpProbe(Strict):
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
            if not isinstance(name, str) or not ENV_NAME.match(name):
                raise ValueError(f"{str(name)[:40]!r} is not an environment variable name (letters, digits, _)")
            if isinstance(value, str):
                if "\0" in value:
                    raise ValueError(f"the value of {name} contains a NUL character")
            elif not (isinstance(value, dict) and set(value) == {"env"} and isinstance(value["env"], str)):
                raise ValueError(f"the value of {name} must be text or {{env: VARIABLE}}")
            elif not ENV_NAME.match(value["env"]):
                raise ValueError(f"{name}: env must name an environment variable (letters, digits, _)")
        return v


class McpProbe(Strict):
    """An MCP server over Streamable HTTP at `url`: `server/discover` (revision 2026-07-28), else
    the `initialize` handshake, `ping` and the session's DELETE. Header values are secrets."""

    url: str
    headers: dict[str, str] = Field(default_factory=dict)

    _url_shape = field_validator("url")(classmethod(lambda cls, v: check_url(v)))
    _header_shape = field_validator("headers")(classmethod(lambda cls, v: check_headers(v)))


class A2aProbe(Strict):
    """An A2A agent's card at `url` + /.well-known/agent-card.json (then the older agent.json), or
    at `url` itself when its path ends in .json; healthy with a name, version and interface URL."""

    url: str

    _url_shape = field_validator("url")(classmethod(lambda cls, v: check_url(v)))


ProbeKind = Literal["http", "tcp", "command", "docker", "heartbeat", "acp", "mcp", "a2a"]
_PROBE_KINDS: tuple[ProbeKind, ...] = get_args(ProbeKind)


class ProbeSpec(Strict):
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
