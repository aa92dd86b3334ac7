"""Label registration: containers labelled `agentwatch.agent=<id>` join the fleet at each run.

    agentwatch.agent=<id>                 required: the agent's id (a slug)
    agentwatch.managed=true               agentwatch may stop, restart and remove the container
    agentwatch.name=<text>                display name
    agentwatch.probe.http=<url>           probe over HTTP instead of the container's own state
    agentwatch.probe.http.expect_status=N
    agentwatch.probe.tcp=<host>:<port>
    agentwatch.<policy field>=<value>     failure_threshold, success_threshold, start_grace, timeout,
                                          interval, max_backoff
    agentwatch.label.<key>=<value>        the agent's labels (alert routing)

Without a probe label the agent gets a docker probe on its own container. A command probe is never
taken from a label: whoever can start a container could otherwise run commands on the monitor's
host. A container whose labels do not validate is left out with a Problem naming it; it never
fails the run. When several containers carry the same id, the newest running one (else the newest)
registers it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from ..errors import Problem
from ..registry import POLICY_FIELDS, AgentSpec, Registry
from .state import AGENT_LABEL, ContainerInfo

__all__ = ["agents_from_containers", "is_docker_agent", "spec_from_labels", "with_label_agents"]

_PREFIX = "agentwatch."
_EPOCH = datetime.min.replace(tzinfo=UTC)


def is_docker_agent(agent: AgentSpec) -> bool:
    """True for agents backed by a container: a docker probe, or registered by container labels."""
    return agent.source == "docker" or (agent.probe is not None and agent.probe.kind == "docker")


def spec_from_labels(info: ContainerInfo) -> dict[str, Any]:
    """The raw AgentSpec fields a container's labels describe (validated by the caller)."""
    labels = info.labels
    raw: dict[str, Any] = {"id": labels.get(AGENT_LABEL, "").strip(), "source": "docker"}
    if name := labels.get(_PREFIX + "name"):
        raw["name"] = name
    for field in POLICY_FIELDS:
        if (value := labels.get(_PREFIX + field)) is not None:
            raw[field] = value
    raw["labels"] = {
        k.removeprefix(_PREFIX + "label."): v for k, v in labels.items() if k.startswith(_PREFIX + "label.")
    }
    if url := labels.get(_PREFIX + "probe.http"):
        http: dict[str, Any] = {"url": url}
        if (status := labels.get(_PREFIX + "probe.http.expect_status")) is not None:
            http["expect_status"] = status
        raw["probe"] = {"http": http}
    elif tcp := labels.get(_PREFIX + "probe.tcp"):
        host, _, port = tcp.rpartition(":")
        raw["probe"] = {"tcp": {"host": host, "port": port}}
    else:
        raw["probe"] = {"docker": {"container": info.id}}
    return raw


def _preference(info: ContainerInfo) -> tuple[bool, datetime]:
    return (info.running, info.created or _EPOCH)


def agents_from_containers(
    containers: Iterable[ContainerInfo], defaults: Mapping[str, Any] | None = None
) -> tuple[list[AgentSpec], list[Problem]]:
    """One AgentSpec per agent id found on container labels, policy resolved against `defaults`."""
    chosen: dict[str, ContainerInfo] = {}
    for info in containers:
        agent_id = info.agent_label
        if agent_id is None:
            continue
        if agent_id not in chosen or _preference(info) > _preference(chosen[agent_id]):
            chosen[agent_id] = info
    agents: list[AgentSpec] = []
    problems: list[Problem] = []
    for agent_id, info in sorted(chosen.items()):
        try:
            spec = AgentSpec.model_validate(spec_from_labels(info))
        except ValidationError as exc:
            for err in exc.errors():
                field = ".".join(str(p) for p in err["loc"])
                message = err["msg"].removeprefix("Value error, ")
                problems.append(
                    Problem(agent_id, field, f"{message} (labels of container {info.name or info.short_id})")
                )
            continue
        agents.append(spec.with_policy(dict(defaults or {})))
    return agents, problems


def with_label_agents(registry: Registry, containers: Iterable[ContainerInfo]) -> tuple[Registry, list[Problem]]:
    """The registry plus the agents its containers' labels register; a registry entry wins on its id."""
    agents, problems = agents_from_containers(containers, registry.defaults.given())
    return registry.merged(agents), problems
