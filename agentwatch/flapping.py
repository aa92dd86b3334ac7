"""Flapping: an agent whose state changes more than `flap_threshold` times within `flap_window`.

An agent that keeps changing state would send a chat message per change. Instead, once its
changes pass the threshold within one window it is *flapping*: one alert says so, the alert step
holds its per-transition alerts (down, resolved, reminders), and once no change has come for a
whole window it has *settled*: one message says so, with the state it settled in. Its transitions
are stored and published as always; only the alerts change.

A flapping episode is remembered in the state store (one `flap_state` row while it lasts, see
agentwatch.store.history): whether its alert went out decides whether a settled message follows,
and an episode may outlast any bounded read of the log.

Pure: decided from the agent's recent transition times, its remembered episode and `now`.

Which changes count: every transition except those into or out of `paused` (an operator's pause
and resume) and `unmanaged` (the registry changed, not the agent).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

from .models import AgentState

if TYPE_CHECKING:
    from .registry import Registry

__all__ = [
    "DEFAULT_THRESHOLD",
    "DEFAULT_WINDOW",
    "Flip",
    "FlapChange",
    "FlapMemory",
    "FlapPhase",
    "FlapState",
    "assess",
    "change_times",
    "flap_lookback",
    "flap_states",
]

DEFAULT_THRESHOLD = 5
DEFAULT_WINDOW = timedelta(minutes=10)
Flip = tuple[datetime, AgentState, AgentState]  # a state change as the log has it: when, from, to
_NOT_A_FLAP = frozenset({AgentState.PAUSED, AgentState.UNMANAGED})


class FlapPhase(StrEnum):
    STEADY = "steady"  # not flapping, nothing remembered: alerts as usual
    FLAPPING = "flapping"  # in an episode: per-transition alerts are held
    SETTLED = "settled"  # was flapping, no change for a whole window: the episode ends now


@dataclass(frozen=True, slots=True)
class FlapMemory:
    """An agent's flapping episode as the store keeps it (one row while it lasts)."""

    agent_id: str
    since: datetime  # the change that made it flapping
    changes: int  # changes within one window at that moment
    notified_at: datetime | None = None  # the flapping alert went out; None: held back so far
    version: int = 0  # compare-and-swap counter; 0 = not stored yet


@dataclass(frozen=True, slots=True)
class FlapChange:
    """Write `after` (None = delete) where the stored row is still at `version` (0 = absent)."""

    agent_id: str
    version: int
    after: FlapMemory | None


@dataclass(frozen=True, slots=True)
class FlapState:
    """What the alert step needs to know of one agent's flapping now."""

    agent_id: str
    phase: FlapPhase
    since: datetime | None = None  # when the episode began
    changes: int = 0  # changes within the window up to the last one, when it began
    window: timedelta = DEFAULT_WINDOW
    last_change: datetime | None = None
    memory: FlapMemory | None = None  # as stored (its version is the compare-and-swap base)


def change_times(changes: Iterable[Flip]) -> list[datetime]:
    """The times of the transitions that count as state changes, oldest first."""
    return sorted(at for at, old, new in changes if old not in _NOT_A_FLAP and new not in _NOT_A_FLAP)


def assess(
    agent_id: str,
    times: Sequence[datetime],
    memory: FlapMemory | None,
    now: datetime,
    threshold: int = DEFAULT_THRESHOLD,
    window: timedelta = DEFAULT_WINDOW,
) -> FlapState:
    """One agent's flapping at `now`.

    `times`: its state changes (see change_times) at least over the last `window`; older ones
    may be given and change nothing. Changes "within a window" are less than `window` apart, first
    to last; an agent is stable once `window` has passed since its last change. `threshold` 0
    turns detection off (an episode under way then settles at once).
    """
    ordered = sorted(t for t in times if t <= now)
    last = ordered[-1] if ordered else None
    if memory is not None:
        last = max(last, memory.since) if last is not None else memory.since
        phase = FlapPhase.FLAPPING if threshold > 0 and now - last < window else FlapPhase.SETTLED
        return FlapState(agent_id, phase, memory.since, memory.changes, window, last, memory)
    if threshold <= 0 or last is None or now - last >= window:
        return FlapState(agent_id, FlapPhase.STEADY, window=window, last_change=last)
    # Only the latest run of changes (each less than a window after the one before) can be an
    # episode under way: an earlier burst, however busy, has settled.
    first = len(ordered) - 1
    while first > 0 and ordered[first] - ordered[first - 1] < window:
        first -= 1
    for k in range(first + threshold, len(ordered)):
        if ordered[k] - ordered[k - threshold] < window:
            # The first change past the threshold: the episode begins there. The count is the
            # latest window's (the alert step may see a burst only after it grew further).
            within = len(ordered) - bisect_right(ordered, last - window)
            return FlapState(agent_id, FlapPhase.FLAPPING, ordered[k], within, window, last)
    return FlapState(agent_id, FlapPhase.STEADY, window=window, last_change=last)


def flap_lookback(registry: Registry) -> timedelta:
    """How far back the alert step must read the log: the longest `flap_window` in the fleet."""
    return max((a.policy.flap_window for a in registry.agents), default=DEFAULT_WINDOW)


def flap_states(
    registry: Registry,
    changes: Mapping[str, Sequence[Flip]],
    memories: Mapping[str, FlapMemory],
    now: datetime,
    only: Collection[str] | None = None,
) -> dict[str, FlapState]:
    """The agents (of `only`, and every one with a remembered episode) that are flapping or
    settle now, with each agent's own `flap_threshold` and `flap_window`. Steady agents are left
    out: plan_alerts treats them as before."""
    states: dict[str, FlapState] = {}
    for agent in registry.agents:
        memory = memories.get(agent.id)
        if memory is None and only is not None and agent.id not in only:
            continue
        policy = agent.policy
        times = change_times(changes.get(agent.id, ()))
        state = assess(agent.id, times, memory, now, policy.flap_threshold, policy.flap_window)
        if state.phase is not FlapPhase.STEADY:
            states[agent.id] = state
    return states
