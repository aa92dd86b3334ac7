"""Every agentwatch setting in one place: environment variables `AGENTWATCH_*`, each with a default."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .durations import Duration

__all__ = ["Settings", "default_data_dir", "environment", "get_settings"]


def default_data_dir() -> Path:
    """The user's data dir for agentwatch (XDG_DATA_HOME, else ~/.local/share)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "agentwatch"


class Settings(BaseSettings):
    """Process-wide settings. Secrets never live here in clear: only names of env vars or Secret blocks."""

    model_config = SettingsConfigDict(env_prefix="AGENTWATCH_", extra="ignore")

    database_url: str = Field(
        default="",
        description="state store URL: sqlite:///path/state.db or postgresql://...; empty = a SQLite file "
        "under the user's data dir",
    )
    # One task run per batch; the batches share the cycle's probe slots, so the size sets only how
    # many task runs a cycle writes: 20 at 10,000 agents, 100 at 50,000 (bench/monitor_cycle.py).
    batch_size: int = Field(
        default=500, ge=1, le=10_000, description="agents per probe task (one Prefect task run per batch)"
    )
    # Measured (bench/monitor_cycle.py, 2 cores): with httpx, at 500 in flight the probing client
    # itself starved and a third of 1,000 healthy agents timed out (a false alarm each). With the
    # fast client on the probe loop, 0 false timeouts over 10,000 agents at 64, 128 and 256; at 64
    # slots 5% of agents answering in 0.3 s alone hold the cycle for 2.3 s, at 128 for 1.2 s.
    probe_concurrency: int = Field(
        default=128, ge=1, le=20_000, description="probes in flight at once across the whole cycle"
    )
    max_body_bytes: int = Field(
        default=64 * 1024, ge=0, le=16 * 1024 * 1024, description="cap on an HTTP probe's body read"
    )
    artifact_concurrency: int = Field(
        default=20, ge=1, le=500, description="per-agent artifacts written to the Prefect API at once"
    )
    registry_max_bytes: int = Field(
        default=10 * 1024 * 1024,
        ge=1024,
        le=1024 * 1024 * 1024,
        description="largest registry file accepted; a bigger one is refused before parsing (YAML takes about "
        "20 times its size in memory)",
    )
    heartbeat_max_body_bytes: int = Field(
        default=10 * 1024, ge=0, le=1024 * 1024, description="largest ping body the heartbeat server accepts (413)"
    )
    heartbeat_rate: float = Field(
        default=1.0, ge=0, le=10_000, description="pings per second allowed per agent on average; 0 = no limit (429)"
    )
    heartbeat_burst: int = Field(default=5, ge=1, le=10_000, description="pings per agent allowed in a burst")
    heartbeat_request_timeout: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="seconds a heartbeat client has from opening a connection (or its previous answer) to the "
        "end of its request, headers and body included; then the connection is closed",
    )
    heartbeat_keep_alive: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="seconds an idle keep-alive connection to the heartbeat server stays open",
    )
    heartbeat_max_connections: int = Field(
        default=0,
        ge=0,
        le=1_000_000,
        description="client connections the heartbeat server keeps open at once; 0 = derived from the open-file "
        "limit (RLIMIT_NOFILE less a reserve); at the cap the oldest connection still waiting for a request is closed",
    )
    heartbeat_flush_interval: float = Field(
        default=0.5, gt=0, le=60, description="seconds between the heartbeat server's batched store writes"
    )
    heartbeat_event_interval: float = Field(
        default=10.0, ge=0, le=3600, description="seconds between the heartbeat server's batch events to Prefect"
    )
    docker_host: str | None = Field(
        default=None, description="Docker engine URL; unset = DOCKER_HOST or the local socket"
    )
    docker_timeout: float = Field(
        default=10.0, gt=0, le=300, description="seconds one Docker engine API call may take (stop adds its timeout)"
    )
    docker_concurrency: int = Field(
        default=32, ge=1, le=256, description="Docker engine calls in flight at once (inspect, stop, restart)"
    )
    docker_labels: bool = Field(
        default=False,
        description="register containers labelled agentwatch.agent=<id> at each monitor run (opt-in: whoever can "
        "start a container on the engine then adds agents to the fleet; set AGENTWATCH_DOCKER_SCOPE with it)",
    )
    docker_scope: str | None = Field(
        default=None,
        description="a label (key or key=value) every container agentwatch lists must also carry, so several "
        "fleets (or a test run) can share one engine without touching each other's containers",
    )
    docker_stop_timeout: Duration = Field(
        default=timedelta(seconds=10), description="grace between SIGTERM and SIGKILL when reconcile stops a container"
    )
    restart_max: int = Field(default=3, ge=0, le=1000, description="container restarts allowed per restart window")
    restart_window: Duration = Field(default=timedelta(minutes=10), description="the restart budget's sliding window")
    restart_backoff: Duration = Field(
        default=timedelta(seconds=10), description="wait after a restart before the next; doubles per restart"
    )
    restart_backoff_max: Duration = Field(default=timedelta(minutes=5), description="cap of the restart backoff")
    restart_reset_after: Duration = Field(
        default=timedelta(minutes=2), description="healthy uptime after which a container's restart budget resets"
    )
    shutdown_leave_running: bool = Field(
        default=False, description="shutdown stops nothing and records that (AGENTWATCH_SHUTDOWN_LEAVE_RUNNING)"
    )
    reconcile_in_monitor: bool = Field(
        default=True,
        description="the monitor reconciles Docker agents that went down as a sub-flow; false leaves it to the "
        "'restart failed docker agents' automation (agentwatch bootstrap), which also retries no deferred restart",
    )

    # The outbox (issue "Never silent"): every transition is published, however long the API was away.
    publish_max: int = Field(
        default=500,
        ge=1,
        le=100_000,
        description="transitions published per run with an event and an artifact each; a larger backlog drains "
        "over several runs, oldest first",
    )
    publish_timeout: Duration = Field(
        default=timedelta(seconds=60),
        description="bound on one publish step's Prefect API calls; what is left is published by the next run",
    )
    publish_lease: Duration = Field(
        default=timedelta(minutes=2),
        description="how long a run holds the transitions it is publishing; a killed run's rows are taken again after",
    )
    first_seen_fold: int = Field(
        default=20,
        ge=0,
        le=1_000_000,
        description="more first sights of healthy agents than this in one publish are one agentwatch.fleet.first-seen "
        "event, not one event and artifact each",
    )
    fleet_table_rows: int = Field(
        default=500,
        ge=10,
        le=20_000,
        description="rows of the fleet table artifact (agents not healthy first); agentwatch status shows them all",
    )
    log_transitions: int = Field(
        default=20, ge=0, le=10_000, description="transitions logged one per line per run; the rest are counted"
    )
    monitor_timeout: Duration = Field(
        default=timedelta(minutes=10),
        description="a monitor run that takes longer is stopped and fails (its committed transitions are kept)",
    )
    forget_max_fraction: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="a registry that would make one run forget more than this share of the stored agents (and more "
        "than 10) is suspicious: nobody is forgotten and a warning says why; 1 = no guard",
    )

    # Docker label registration (issue "Hostile input"): what a container's labels may make the monitor do.
    docker_label_probe_hosts: str = Field(
        default="",
        description="comma-separated hosts, IP addresses or networks (CIDR) that agentwatch.probe.http/.tcp labels "
        "may target besides the container's own addresses; `*` allows any. Empty: the container's own IPs, and "
        "ports it published on this host, only",
    )

    @field_validator("database_url")
    @classmethod
    def _strip(cls, v: str) -> str:
        return v.strip()

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        path = default_data_dir() / "state.db"
        return f"sqlite:///{path}"


def get_settings() -> Settings:
    """Read the settings from the environment now (cheap; tests change the environment)."""
    return Settings()


def environment() -> dict[str, str]:
    """A copy of the process environment, for what the settings do not model.

    The one place below which the domain reads the environment: secrets named in the registry
    (`${NAME}` references), `DOCKER_HOST`, and the environment a probe's child process inherits.
    """
    return dict(os.environ)
