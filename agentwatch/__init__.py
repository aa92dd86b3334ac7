"""agentwatch: keep a fleet of AI agents and agent containers healthy.

The domain package: registry, probes, health policy, state store, Docker backend, alert rendering
and settings. It imports nothing from Prefect; `flows/` and `tasks/` wrap it for Prefect.
"""

from ._version import __version__
from .errors import AgentwatchError, EngineUnavailable, Problem, RegistryError, StoreConflict, StoreError
from .models import AgentRecord, AgentState, ProbeResult, Transition
from .policy import Evaluation, evaluate, is_due
from .registry import AgentSpec, Policy, Registry, load_registry, parse_registry

__all__ = [
    "AgentRecord",
    "AgentSpec",
    "AgentState",
    "AgentwatchError",
    "EngineUnavailable",
    "Evaluation",
    "Policy",
    "Problem",
    "ProbeResult",
    "Registry",
    "RegistryError",
    "StoreConflict",
    "StoreError",
    "Transition",
    "__version__",
    "evaluate",
    "is_due",
    "load_registry",
    "parse_registry",
]
