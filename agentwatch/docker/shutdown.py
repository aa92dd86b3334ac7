"""Shutdown planning: which managed containers to stop, and which agent each one serves. Pure.

Only containers labelled `agentwatch.managed=true` are stopped. With agent ids given, only those
agents' containers are; without, every managed container is (orphans included: shutdown means
the whole fleet goes down). A container serves an agent when the agent's docker probe names it or
its labels registered the agent; a label naming a registry agent never makes it that agent's.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from ..registry import Registry
from .fleet import bind_containers
from .state import ContainerInfo

__all__ = ["StopTarget", "plan_shutdown"]


@dataclass(frozen=True, slots=True)
class StopTarget:
    """One managed container and the agent it serves (None for an orphan)."""

    container: ContainerInfo
    agent_id: str | None

    @property
    def needs_stop(self) -> bool:
        return self.container.running

    def row(self, outcome: str, reason: str = "") -> dict[str, Any]:
        return {
            "agent": self.agent_id or "-",
            "container": self.container.name or self.container.short_id,
            "status": self.container.status,
            "outcome": outcome,
            "reason": reason,
        }


def plan_shutdown(
    fleet: Registry,
    listed: list[ContainerInfo],
    inspected: Mapping[str, ContainerInfo | None] | None = None,
    agent_ids: Collection[str] | None = None,
) -> list[StopTarget]:
    """Every managed container in `listed`, with its agent, limited to `agent_ids` when given."""
    owner: dict[str, str] = {}
    for agent_id, info in bind_containers(fleet, listed, inspected).items():
        if info is not None:
            owner[info.id] = agent_id
    targets = []
    for info in sorted(listed, key=lambda i: i.name):
        if not info.managed:
            continue
        labelled = fleet.get(info.agent_label or "")
        # A label speaks for an agent only when labels registered that agent; a container that
        # claims a registry agent is stopped as what it is, a managed container of no agent.
        serves = owner.get(info.id) or (labelled.id if labelled is not None and labelled.source == "docker" else None)
        if agent_ids is not None and serves not in agent_ids:
            continue
        targets.append(StopTarget(info, serves))
    return targets
