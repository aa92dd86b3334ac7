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

What a label may do, and what it may not:
- It registers a new agent, never one the registry defines: a container labelled with a registry
  agent's id is not that agent (unless the registry names the container in its docker probe); it
  is reported with a Problem and never bound to, probed for, or acted on as that agent.
- A probe label targets only the container itself (agentwatch.docker.targets); a target
  elsewhere is refused with a Problem, and the agent is probed through its container's state.
- A command probe is never taken from a label: whoever can start a container could otherwise run
  commands on the monitor's host.

A container whose labels do not validate is left out with a Problem naming it; it never fails the
run. When several containers carry the same id, one speaks for it (`label_owners`): the newest
running one, else the newest, and between two created at the same instant the greater id, so the
choice never depends on the order the engine lists them in. That one container both registers the
agent and is bound to it (`bind_containers`). Registration is opt-in (AGENTWATCH_DOCKER_LABELS) and
sees only AGENTWATCH_DOCKER_SCOPE.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from pydantic import ValidationError

from ..durations import format_duration
from ..errors import Problem
from ..registry import POLICY_FIELDS, AgentSpec, Registry
from .state import AGENT_LABEL, ContainerInfo
from .targets import HostAllowList, Refused, resolve_target

__all__ = [
    "agents_from_containers",
    "bind_containers",
    "foreign_claims",
    "is_docker_agent",
    "label_memory",
    "label_owners",
    "names_container",
    "remembered_agents",
    "spec_from_labels",
    "with_label_agents",
]

_PREFIX = "agentwatch."
_EPOCH = datetime.min.replace(tzinfo=UTC)


def is_docker_agent(agent: AgentSpec) -> bool:
    """True for agents backed by a container: a docker probe, or registered by container labels."""
    return agent.source == "docker" or (agent.probe is not None and agent.probe.kind == "docker")


def names_container(agent: AgentSpec, info: ContainerInfo) -> bool:
    """True when the agent's docker probe names this container (by name, id or id prefix)."""
    if agent.probe is None or agent.probe.docker is None:
        return False
    ref = agent.probe.docker.container
    return info.id == ref or info.matches(ref)


def spec_from_labels(info: ContainerInfo, allowed: HostAllowList | None = None) -> tuple[dict[str, Any], str | None]:
    """The raw AgentSpec fields a container's labels describe (validated by the caller), and why
    its probe label was refused, if it was (the agent is then probed through its container)."""
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
    probe, refused = _probe(info, allowed or HostAllowList())
    raw["probe"] = probe if probe is not None else {"docker": {"container": info.id}}
    return raw, refused


def _probe(info: ContainerInfo, allowed: HostAllowList) -> tuple[dict[str, Any] | None, str | None]:
    """The http/tcp probe of the labels, pointed at the container itself; None for a docker probe."""
    labels = info.labels
    url = labels.get(_PREFIX + "probe.http")
    tcp = labels.get(_PREFIX + "probe.tcp")
    if not url and not tcp:
        return None, None
    if info.status not in ("running", "paused"):
        # A stopped container has no address to check against, and its exit says all there is.
        return None, None
    if url:
        try:
            parsed = httpx.URL(url.strip())
            host, port = parsed.host, parsed.port or (443 if parsed.scheme == "https" else 80)
        except (httpx.InvalidURL, TypeError, ValueError) as exc:
            return None, f"agentwatch.probe.http {url!r} is not a URL: {exc}"
        target = resolve_target(info, host, port, allowed)
        if isinstance(target, Refused):
            return None, f"agentwatch.probe.http refused: {target.reason}"
        final = str(parsed if target.host == host.lower() else parsed.copy_with(host=target.host))
        http: dict[str, Any] = {"url": final}
        if (status := labels.get(_PREFIX + "probe.http.expect_status")) is not None:
            http["expect_status"] = status
        return {"http": http}, None
    assert tcp is not None
    host, _, port_text = tcp.strip().rpartition(":")
    try:
        port = int(port_text)
    except ValueError:
        return {"tcp": {"host": host, "port": port_text}}, None  # validation names the bad port
    target = resolve_target(info, host, port, allowed)
    if isinstance(target, Refused):
        return None, f"agentwatch.probe.tcp refused: {target.reason}"
    return {"tcp": {"host": target.host, "port": port}}, None


def _rank(info: ContainerInfo) -> tuple[bool, datetime, str]:
    # The id breaks a tie of creation times: the listing's order is no order (two listings merged).
    return (info.running, info.created or _EPOCH, info.id)


def label_owners(containers: Iterable[ContainerInfo]) -> dict[str, ContainerInfo]:
    """The one container that speaks for each agent id found on labels: the newest running one,
    else the newest; a tie of creation times goes to the greater container id."""
    chosen: dict[str, ContainerInfo] = {}
    for info in containers:
        agent_id = info.agent_label
        if agent_id is not None and (agent_id not in chosen or _rank(info) > _rank(chosen[agent_id])):
            chosen[agent_id] = info
    return chosen


def bind_containers(
    fleet: Registry, listed: Iterable[ContainerInfo], inspected: Mapping[str, ContainerInfo | None] | None = None
) -> dict[str, ContainerInfo | None]:
    """Each fleet agent's container: its docker probe's target, else (for an agent registered by
    labels) the container that registered it (`label_owners`). None = a docker probe whose
    container the engine does not have.

    A registry agent is bound only to what its docker probe names: a container labelled with its
    id is not its container (anyone can write a label), so an HTTP agent of the registry has none.
    `inspected` maps docker probe refs the listing did not cover to what `inspect` found.
    """
    listed = list(listed)
    owners = label_owners(listed)
    bound: dict[str, ContainerInfo | None] = {}
    for agent in fleet.agents:
        ref = agent.probe.docker.container if agent.probe and agent.probe.docker else None
        if ref is not None:
            found = next((i for i in listed if i.id == ref or i.matches(ref)), None)
            bound[agent.id] = found if found is not None else (inspected or {}).get(ref)
        elif agent.source == "docker" and agent.id in owners:
            bound[agent.id] = owners[agent.id]
    return bound


def agents_from_containers(
    containers: Iterable[ContainerInfo],
    defaults: Mapping[str, Any] | None = None,
    allowed: HostAllowList | None = None,
) -> tuple[list[AgentSpec], list[Problem]]:
    """One AgentSpec per agent id found on container labels, policy resolved against `defaults`."""
    chosen = label_owners(containers)
    agents: list[AgentSpec] = []
    problems: list[Problem] = []
    for agent_id, info in sorted(chosen.items()):
        where = f"labels of container {info.name or info.short_id}"
        raw, refused = spec_from_labels(info, allowed)
        try:
            spec = AgentSpec.model_validate(raw)
        except ValidationError as exc:
            for err in exc.errors():
                field = ".".join(str(p) for p in err["loc"])
                message = err["msg"].removeprefix("Value error, ")
                problems.append(Problem(agent_id, field, f"{message} ({where})"))
            continue
        if refused:
            problems.append(Problem(agent_id, "probe", f"{refused} ({where}); probed through the container's state"))
        agents.append(spec.with_policy(dict(defaults or {})))
    return agents, problems


def foreign_claims(registry: Registry, containers: Iterable[ContainerInfo]) -> list[Problem]:
    """Containers labelled with the id of an agent the registry defines but whose docker probe
    does not name them: each is reported, and is never that agent."""
    problems = []
    for info in sorted(containers, key=lambda i: i.name):
        agent = registry.get(info.agent_label or "")
        if agent is not None and agent.source == "registry" and not names_container(agent, info):
            problems.append(
                Problem(
                    agent.id,
                    AGENT_LABEL,
                    f"container {info.name or info.short_id} claims registry agent {agent.id!r}, whose probe does "
                    "not name it: ignored (never bound to, probed for or acted on as that agent)",
                )
            )
    return problems


def with_label_agents(
    registry: Registry,
    containers: Iterable[ContainerInfo],
    *,
    register: bool = True,
    allowed: HostAllowList | None = None,
) -> tuple[Registry, list[Problem]]:
    """The registry plus the agents its containers' labels register (none when `register` is
    False); a label never registers, overrides or stands for an id the registry defines."""
    containers = list(containers)
    problems = foreign_claims(registry, containers)
    if not register:
        return registry, problems
    free = [info for info in containers if info.agent_label and registry.get(info.agent_label) is None]
    agents, more = agents_from_containers(free, registry.defaults.given(), allowed)
    return registry.merged(agents), problems + more


def label_memory(fleet: Registry, containers: Mapping[str, ContainerInfo | None]) -> dict[str, str]:
    """What to remember of the label-registered agents of a run whose engine answered: agent id ->
    JSON (name, labels, the container). The monitor stores it, and when the engine is unreachable
    brings those agents back with `remembered_agents`, so they show `unknown` instead of vanishing."""
    memory = {}
    for agent in fleet.agents:
        info = containers.get(agent.id)
        if agent.source != "docker" or info is None:
            continue
        memory[agent.id] = json.dumps(
            {"name": agent.name, "labels": agent.labels, "container": info.id, **agent.given()},
            default=_plain,
            sort_keys=True,
        )
    return memory


def _plain(value: Any) -> str:
    return format_duration(value) if isinstance(value, timedelta) else str(value)


def remembered_agents(registry: Registry, memory: Mapping[str, str]) -> tuple[Registry, list[Problem]]:
    """The registry plus the label-registered agents last seen (from `label_memory`), each probed
    through its last container: with the engine unreachable that says `unknown`, never failed."""
    agents: list[AgentSpec] = []
    problems: list[Problem] = []
    for agent_id, text in sorted(memory.items()):
        if registry.get(agent_id) is not None:
            continue
        try:
            data = json.loads(text)
            container = data.pop("container")
            spec = AgentSpec.model_validate(
                {**data, "id": agent_id, "source": "docker", "probe": {"docker": {"container": container}}}
            )
        except (ValueError, KeyError, TypeError, ValidationError) as exc:
            problems.append(Problem(agent_id, "", f"remembered label agent unreadable: {exc}"))
            continue
        agents.append(spec)
    return registry.merged(agents), problems
