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
from agentwatch.docker.labels import is_docker_agent
from agentwatch.models import Transition
from agentwatch.registry import AgentSpec, Registry
from agentwatch.render import fleet_summary, transition_markdown

AGENT_RESOURCE = "agentwatch.agent.{}"


def agent_resource(agent_id: str, agent: AgentSpec | None) -> dict[str, str]:
    """The event resource of one agent; labels ride along so automations can route by them."""
    resource = {"prefect.resource.id": AGENT_RESOURCE.format(agent_id)}
    if agent is not None:
        resource["prefect.resource.name"] = agent.display_name
        for key, value in agent.labels.items():
            resource[f"agentwatch.label.{key}"] = value
        if is_docker_agent(agent):
            # What the reconcile automation matches: only container-backed agents can be restarted.
            resource["agentwatch.backend"] = "docker"
    return resource


def emit_transition(transition: Transition, agent: AgentSpec | None) -> None:
    emit_event(
        event=f"agentwatch.agent.{transition.to_state.value}",
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
async def write_fleet_table(rows: list[FleetRow], key: str = "agentwatch-fleet") -> None:
    """The whole fleet as one table artifact per monitor run."""
    await acreate_table_artifact(table=rows, key=key, description=f"Fleet: {fleet_summary(rows)}")
