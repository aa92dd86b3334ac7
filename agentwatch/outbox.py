"""What publishing a batch of transition-log rows means, decided without Prefect.

Each row becomes one `agentwatch.agent.<state>` event, whose id derives from the row (so posting it
twice is one event), and one version of the agent's `agent-<id>` artifact, in log order. A first
sight of many healthy agents (unknown -> healthy, more than `fold_above` in one batch) is one
`agentwatch.fleet.first-seen` event instead: a new fleet of 10,000 must not become 10,000 events
and 10,000 artifacts. A first sight that is not healthy is published like any transition: it may
need an alert or a restart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from .events import (
    FLEET_FIRST_SEEN,
    EventSpec,
    agent_event_name,
    agent_resource,
    derived_event_id,
    fleet_resource,
)
from .models import AgentState, Transition
from .render import transition_markdown

if TYPE_CHECKING:
    from .registry import Registry

__all__ = ["ArtifactVersion", "OutboxRow", "PublishPlan", "artifact_marker", "costs_a_publish", "plan_publish"]

MAX_FOLDED_NAMES = 50  # agent ids listed in a first-seen event; the count covers the rest


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One row of the transition log with its delivery state."""

    id: int
    uid: str
    seq: int
    transition: Transition
    run_id: str | None = None
    attempts: int = 0
    published_at: datetime | None = None
    alerted_at: datetime | None = None

    @property
    def agent_id(self) -> str:
        return self.transition.agent_id


@dataclass(frozen=True, slots=True)
class ArtifactVersion:
    """One version of an agent's keyed artifact. `marker` is in its description, so a publisher
    that retries a half-done row can tell whether this version was already written."""

    row_id: int
    key: str
    markdown: str
    description: str
    marker: str


@dataclass
class PublishPlan:
    events: list[EventSpec] = field(default_factory=list)
    artifacts: list[ArtifactVersion] = field(default_factory=list)
    folded: list[OutboxRow] = field(default_factory=list)  # published through the first-seen event


def is_first_sight_healthy(from_state: AgentState, to_state: AgentState) -> bool:
    return from_state is AgentState.UNKNOWN and to_state is AgentState.HEALTHY


def costs_a_publish(from_state: AgentState, to_state: AgentState) -> int:
    """1 for a row that needs an event and an artifact of its own, 0 for one that may be folded."""
    return 0 if is_first_sight_healthy(from_state, to_state) else 1


def artifact_marker(row: OutboxRow) -> str:
    return f"t-{row.uid.replace('-', '')[:12]}"


def plan_publish(
    rows: Sequence[OutboxRow], fleet: Registry, run_url: str | None = None, fold_above: int = 20
) -> PublishPlan:
    """The events and artifact versions that publish `rows` (claimed, in log order)."""
    plan = PublishPlan()
    first = [r for r in rows if is_first_sight_healthy(r.transition.from_state, r.transition.to_state)]
    fold = len(first) > fold_above
    if fold:
        plan.folded = first
        ids = [r.agent_id for r in first]
        plan.events.append(
            EventSpec(
                event=FLEET_FIRST_SEEN,
                resource=fleet_resource(),
                payload={
                    "count": len(first),
                    "state": AgentState.HEALTHY.value,
                    "agents": ids[:MAX_FOLDED_NAMES],
                    "more": max(0, len(ids) - MAX_FOLDED_NAMES),
                    "run_url": run_url,
                },
                occurred=first[-1].transition.at,
                id=derived_event_id(first[0].uid, f"first-seen/{first[-1].uid}"),
            )
        )
    folded = {r.id for r in plan.folded}
    for row in rows:
        if row.id in folded:
            continue
        t = row.transition
        agent = fleet.get(t.agent_id)
        plan.events.append(
            EventSpec(
                event=agent_event_name(t.to_state.value),
                resource=agent_resource(t.agent_id, agent),
                payload={**t.payload(), "seq": row.seq, "transition": row.uid},
                occurred=t.at,
                id=derived_event_id(row.uid),
            )
        )
        marker = artifact_marker(row)
        plan.artifacts.append(
            ArtifactVersion(
                row_id=row.id,
                key=f"agent-{t.agent_id}",
                markdown=transition_markdown(t, agent, run_url),
                description=f"{t.agent_id}: {t.from_state.value} -> {t.to_state.value} ({marker})",
                marker=marker,
            )
        )
    return plan
