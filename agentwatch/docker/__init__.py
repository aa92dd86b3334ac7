"""The Docker backend: container-backed agents.

- `engine`: the one place that talks to the Docker engine (docker-py in a thread pool; errors
  translated to None, ContainerOpFailed or EngineUnavailable).
- `state`: a container's inspect document read into a value, ContainerInfo.
- `probe`: the docker probe (engine state -> ProbeResult).
- `labels`: label registration (`agentwatch.agent=<id>` -> AgentSpec), and what a label may not do.
- `targets`: where a label-registered probe may connect (the container itself).
- `fleet`: containers bound to agents, and the rules the monitor shares with reconcile.
- `budget`, `reconcile`, `shutdown`: pure planning; the Prefect flows carry the plans out.
- `report`: the markdown of plans and outcomes.
"""

from __future__ import annotations

from .budget import BudgetRules, RestartBudget
from .engine import ContainerOpFailed, DockerEngine
from .labels import agents_from_containers, is_docker_agent, with_label_agents
from .probe import container_result, probe_docker
from .state import AGENT_LABEL, MANAGED_LABEL, ContainerInfo
from .targets import HostAllowList

__all__ = [
    "AGENT_LABEL",
    "MANAGED_LABEL",
    "BudgetRules",
    "ContainerInfo",
    "ContainerOpFailed",
    "DockerEngine",
    "HostAllowList",
    "RestartBudget",
    "agents_from_containers",
    "container_result",
    "is_docker_agent",
    "probe_docker",
    "with_label_agents",
]
