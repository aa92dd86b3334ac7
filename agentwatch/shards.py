"""Shards: which monitor run owns which agent when one cycle is split over several runs.

An agent's shard is the SHA-256 of its id, read as a number, modulo the number of shards: the same
on every machine and in every process (Python's `hash()` of a string is salted per process), and
even over ids that share long prefixes. Adding agents never moves the others; changing the number
of shards moves most of them, which is harmless: a shard reads its agents' records from the shared
state store, whoever wrote them.

A shard probes, commits and forgets only its own agents: `Shard.owns` is also the guard of every
delete a shard makes, so one shard never drops another shard's rows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from .registry import Registry

__all__ = ["Shard", "shard_of"]


def shard_of(agent_id: str, shards: int) -> int:
    """The shard (0 .. shards-1) that owns `agent_id`."""
    if shards < 1:
        raise ValueError(f"shards must be at least 1, not {shards}")
    if shards == 1:
        return 0
    digest = hashlib.sha256(agent_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % shards


@dataclass(frozen=True, slots=True)
class Shard:
    """Shard `index` of `count`. `Shard(0, 1)` is the whole fleet."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index} of {self.count}: want 0 <= shard < shards and shards >= 1")

    @property
    def whole(self) -> bool:
        return self.count == 1

    def owns(self, agent_id: str) -> bool:
        return self.whole or shard_of(agent_id, self.count) == self.index

    def ids(self, agent_ids: Iterable[str]) -> list[str]:
        """The ids of `agent_ids` this shard owns, in order."""
        return [i for i in agent_ids if self.owns(i)]

    def fleet(self, registry: Registry) -> Registry:
        """The registry's agents this shard owns (defaults and alert routes as they are)."""
        if self.whole:
            return registry
        return registry.model_copy(update={"agents": [a for a in registry.agents if self.owns(a.id)]})

    def __str__(self) -> str:
        return f"shard {self.index + 1} of {self.count}"
