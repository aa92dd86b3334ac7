"""Where a label-registered probe may point. Pure.

Whoever can start a container writes its labels, so `agentwatch.probe.http` / `.tcp` would let
anyone make the monitor connect to any host and port (the Prefect API, a database, a cloud
metadata address). A label probe may therefore target only the container itself:

- one of its own IP addresses on its networks (any port);
- `127.0.0.1` / `localhost` / `::1` with a port the container published on this host;
- `localhost` / `127.0.0.1` / `::1` with any other port means the container itself: the host is
  replaced by the container's own IP (a label cannot know its container's address in advance);
- anything `AGENTWATCH_DOCKER_LABEL_PROBE_HOSTS` allows (hosts, IPs, CIDR networks, `*`).

Hosts are compared as written: only IP literals and `localhost` are understood, so a DNS name
(which may resolve anywhere, and differently later) is refused unless the setting names it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from .state import ContainerInfo

__all__ = ["HostAllowList", "Refused", "Target", "resolve_target"]

_LOOPBACK = {"localhost": "127.0.0.1", "127.0.0.1": "127.0.0.1", "::1": "::1"}
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class HostAllowList:
    """Targets a setting allows label probes beyond the container's own addresses."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()
    any_host: bool = False

    @classmethod
    def parse(cls, text: str | None) -> HostAllowList:
        """`a.example, 10.0.0.0/8, 192.168.1.5` or `*`; blanks ignored. A bad network is a ValueError."""
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        any_host = False
        for item in (part.strip().lower() for part in (text or "").split(",")):
            if not item:
                continue
            if item == "*":
                any_host = True
            elif "/" in item:
                networks.append(ipaddress.ip_network(item, strict=False))
            else:
                hosts.add(item.strip("[]"))
        return cls(frozenset(hosts), tuple(networks), any_host)

    def allows(self, host: str) -> bool:
        host = host.lower().strip("[]")
        if self.any_host or host in self.hosts:
            return True
        ip = _ip(host)
        return ip is not None and any(ip in network for network in self.networks)


@dataclass(frozen=True, slots=True)
class Target:
    """An allowed target: `host` may differ from the label's (localhost -> the container's IP)."""

    host: str
    port: int


@dataclass(frozen=True, slots=True)
class Refused:
    """Why a label's target is not allowed (shown in the warning that names the container)."""

    reason: str


def resolve_target(info: ContainerInfo, host: str, port: int, allowed: HostAllowList) -> Target | Refused:
    """Where a label probe of container `info` for `host:port` may connect, or why it may not."""
    bare = host.strip().strip("[]").lower()
    if allowed.allows(bare):
        return Target(bare, port)
    if bare in info.addresses:
        return Target(bare, port)
    if bare in _LOOPBACK:
        if info.publishes(_LOOPBACK[bare], port):
            return Target(bare, port)
        own = _preferred(info.addresses)
        if own is not None:
            return Target(own, port)  # "localhost" in a container's own label: the container itself
        return Refused(
            f"{host}:{port} is not a port container {_name(info)} published, and it has no address of its own"
        )
    return Refused(
        f"{host}:{port} is not an address of container {_name(info)} ({_described(info)}); "
        "AGENTWATCH_DOCKER_LABEL_PROBE_HOSTS can allow it"
    )


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _preferred(addresses: Iterable[str]) -> str | None:
    found = list(addresses)
    v4 = [a for a in found if ":" not in a]
    return (v4 or found)[0] if found else None


def _name(info: ContainerInfo) -> str:
    return info.name or info.short_id


def _described(info: ContainerInfo) -> str:
    own = [*info.addresses, *(f"{ip or '*'}:{port}" for ip, port in info.published)]
    return "its own: " + ", ".join(own) if own else "it has none"
