"""Prefect tasks that put the monitor's findings where people and automations look: events on
`agentwatch.agent.<id>`, one keyed artifact per agent (`agent-<id>`), one fleet table per run."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from prefect import task
from prefect.artifacts import acreate_markdown_artifact, acreate_table_artifact
from prefect.cache_policies import NONE
from prefect.events import emit_event

from agentwatch.cycle import FleetRow
from agentwatch.events import agent_event_name, agent_resource
from agentwatch.models import Transition
from agentwatch.registry import AgentSpec, Registry
from agentwatch.render import fleet_table, transition_markdown
from agentwatch.settings import get_settings


def emit_transition(transition: Transition, agent: AgentSpec | None) -> None:
    emit_event(
        event=agent_event_name(transition.to_state.value),
        resource=agent_resource(transition.agent_id, agent),
        occurred=transition.at,
        payload=transition.payload(),
    )


@task(name="publish-transitions", cache_policy=NONE)
async def publish_transitions(
    transitions: Sequence[Transition], registry: Registry, concurrency: int = 20, run_url: str | None = None
) -> int:
    """Emit one event and write one artifact version per transition. Returns how many were published."""
    semaphore = asyncio.Semaphore(concurrency)

    async def one(transition: Transition) -> None:
        agent = registry.get(transition.agent_id)
        emit_transition(transition, agent)
        async with semaphore:
            await acreate_markdown_artifact(
                key=f"agent-{transition.agent_id}",
                markdown=transition_markdown(transition, agent, run_url),
                description=f"{transition.agent_id}: {transition.from_state.value} -> {transition.to_state.value}",
            )

    await asyncio.gather(*(one(t) for t in transitions))
    return len(transitions)


@task(name="write-fleet-table", cache_policy=NONE)
async def write_fleet_table(rows: list[FleetRow], key: str = "agentwatch-fleet", cap: int | None = None) -> None:
    """The fleet as one table artifact per run: every agent, or past `cap` the worst first."""
    shown, description = fleet_table(rows, cap if cap is not None else get_settings().fleet_table_rows)
    await acreate_table_artifact(table=shown, key=key, description=description)
