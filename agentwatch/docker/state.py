"""A container's state as the engine reports it, read once from `inspect` output into a value.

Everything downstream (the probe, label registration, reconcile planning) works on ContainerInfo,
never on docker-py objects, so it can be tested with plain dictionaries and no engine.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = ["AGENT_LABEL", "MANAGED_LABEL", "ContainerInfo", "parse_engine_time"]

AGENT_LABEL = "agentwatch.agent"
MANAGED_LABEL = "agentwatch.managed"
_TRUE = {"true", "1", "yes", "on"}
_FRACTION = re.compile(r"\.(\d+)")


def parse_engine_time(text: str | None) -> datetime | None:
    """An engine timestamp (RFC 3339 with up to nanoseconds) as an aware datetime; None for unset.

    The engine writes `0001-01-01T00:00:00Z` for a time that never happened (a container never
    started or never finished).
    """
    if not text or text.startswith("0001-01-01"):
        return None
    # Python parses at most microseconds: trim the nanosecond digits the engine writes.
    value = _FRACTION.sub(lambda m: "." + m.group(1)[:6].ljust(6, "0"), text.strip().replace("Z", "+00:00"))
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class ContainerInfo:
    """The fields of `docker inspect` agentwatch reads; `status` and `health` are engine values."""

    id: str
    name: str
    status: str  # created | running | paused | restarting | removing | exited | dead
    health: str | None = None  # starting | healthy | unhealthy; None without a healthcheck
    health_output: str = ""  # output of the newest healthcheck run
    health_exit: int | None = None
    exit_code: int | None = None
    oom_killed: bool = False
    error: str = ""
    created: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    restart_count: int = 0
    image: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    # Where the container can be reached (a running one; empty otherwise): its IPs on its networks,
    # and its published TCP ports as (host ip, host port). What a label probe may target.
    addresses: tuple[str, ...] = ()
    published: tuple[tuple[str, int], ...] = ()

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> ContainerInfo:
        """Read an inspect document (`container.attrs` after reload, or `api.inspect_container`)."""
        state = attrs.get("State") or {}
        health = state.get("Health") or {}
        log = health.get("Log") or []
        last = log[-1] if log else {}
        config = attrs.get("Config") or {}
        network = attrs.get("NetworkSettings") or {}
        status = str(state.get("Status") or "")
        if state.get("Restarting"):
            status = "restarting"
        return cls(
            id=str(attrs.get("Id") or ""),
            name=str(attrs.get("Name") or "").lstrip("/"),
            status=status,
            # "none" is what the engine says when an image's healthcheck was disabled.
            health=(health.get("Status") or None) if health.get("Status") != "none" else None,
            health_output=str(last.get("Output") or "").strip(),
            health_exit=last.get("ExitCode"),
            exit_code=state.get("ExitCode"),
            oom_killed=bool(state.get("OOMKilled")),
            error=str(state.get("Error") or ""),
            created=parse_engine_time(attrs.get("Created")),
            started_at=parse_engine_time(state.get("StartedAt")),
            finished_at=parse_engine_time(state.get("FinishedAt")),
            restart_count=int(attrs.get("RestartCount") or 0),
            image=str(config.get("Image") or ""),
            labels=dict(config.get("Labels") or {}),
            addresses=_addresses(network),
            published=_published(network),
        )

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def managed(self) -> bool:
        """True when agentwatch may stop, restart or remove this container."""
        return self.labels.get(MANAGED_LABEL, "").strip().lower() in _TRUE

    @property
    def agent_label(self) -> str | None:
        return (self.labels.get(AGENT_LABEL) or "").strip() or None

    @property
    def running(self) -> bool:
        return self.status in ("running", "restarting", "paused")

    def publishes(self, host_ip: str, host_port: int) -> bool:
        """True when `host_ip:host_port` on the monitor's host leads to this container: a port it
        published on that address, or on every address."""
        return any(port == host_port and ip in ("", "0.0.0.0", "::", host_ip) for ip, port in self.published)

    def matches(self, ref: str) -> bool:
        """True when `ref` names this container the way the engine resolves it: name, id or id prefix."""
        ref = ref.strip().lstrip("/")
        return bool(ref) and (ref == self.name or (len(ref) >= 12 and self.id.startswith(ref)))

    def age(self, now: datetime) -> float:
        """Seconds since the container was created (0 when unknown)."""
        return (now - self.created).total_seconds() if self.created else 0.0

    def details(self) -> dict[str, Any]:
        """What a probe result and an artifact show about the container (no environment, no labels)."""
        out: dict[str, Any] = {"container": self.name or self.short_id, "container_id": self.short_id}
        out["status"] = self.status
        out["health"] = self.health
        if not self.running:
            out.update(exit_code=self.exit_code, oom_killed=self.oom_killed)
            if self.finished_at:
                out["finished_at"] = self.finished_at.isoformat()  # full precision: compared on read
        if self.error:
            out["error"] = self.error
        if self.restart_count:
            out["restart_count"] = self.restart_count
        return out


def _addresses(network: Mapping[str, Any]) -> tuple[str, ...]:
    found: list[str] = []
    for net in (network.get("Networks") or {}).values():
        for key in ("IPAddress", "GlobalIPv6Address"):
            ip = str((net or {}).get(key) or "")
            if ip and ip not in found:
                found.append(ip)
    return tuple(found)


def _published(network: Mapping[str, Any]) -> tuple[tuple[str, int], ...]:
    found: list[tuple[str, int]] = []
    for port, bindings in (network.get("Ports") or {}).items():
        if not str(port).endswith("/tcp"):
            continue  # probes speak TCP
        for binding in bindings or []:
            try:
                found.append((str(binding.get("HostIp") or ""), int(binding.get("HostPort") or 0)))
            except (TypeError, ValueError):
                continue
    return tuple(found)
