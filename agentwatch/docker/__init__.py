"""The Docker backend: container-backed agents.

- `engine`: the one place that talks to the Docker engine (docker-py in a thread pool; errors
  translated to None, ContainerOpFailed or EngineUnavailable).
- `state`: a container's inspect document read into a value, ContainerInfo.
- `observe`: what a container's engine state means for its agent (ContainerInfo -> ProbeResult);
  the docker probe itself is agentwatch.probes.docker.
- `labels`: label registration (`agentwatch.agent=<id>` -> AgentSpec), which container speaks for
  an agent (`bind_containers`), and what a label may not do.
- `targets`: where a label-registered probe may connect (the container itself).
- `rules`: the monitor's Docker rules (recorded stops, spent budgets, what to reconcile next).
- `budget`: the restart budget. `recording`: states reconcile and shutdown assert, to the store.
- `reconcile` (plan) and `reconcile_apply` (claim budgets, record, act, record: a ReconcileResult);
  `shutdown` (plan, stop, record: a ShutdownResult). Engine and store are passed in; the Prefect
  flows only run them and show what happened.
- `report`: the markdown of plans and outcomes.
"""

from __future__ import annotations

from .budget import BudgetRules, RestartBudget
from .engine import DockerEngine
from .labels import agents_from_containers, is_docker_agent, with_label_agents
from .observe import container_result
from .state import AGENT_LABEL, MANAGED_LABEL, ContainerInfo
from .targets import HostAllowList

__all__ = [
    "AGENT_LABEL",
    "MANAGED_LABEL",
    "BudgetRules",
    "ContainerInfo",
    "DockerEngine",
    "HostAllowList",
    "RestartBudget",
    "agents_from_containers",
    "container_result",
    "is_docker_agent",
    "with_label_agents",
]
