"""The one exception tree of agentwatch (the domain and its Prefect layer alike).

    AgentwatchError
    ├── RegistryError        a registry file that cannot be used; carries every problem found
    ├── UnknownAgent         an operator named an agent the registry does not have
    ├── StoreError           the state store cannot be reached or written
    │   └── StoreConflict    a compare-and-swap write lost to another writer
    ├── EngineUnavailable    the Docker engine (or another backend) cannot be reached
    ├── ContainerOpFailed    the engine refused an operation on one container
    ├── BadAnswer            an agent answered, but not as its protocol says (a probe's reason)
    ├── MonitorIncomplete    a monitor cycle committed its states, but the Prefect API failed a later step
    └── BootstrapError       bootstrap cannot do what the registry asks

A probe never raises for a failed target: it returns a ProbeResult (BadAnswer is caught by the
probe and becomes its reason). These exceptions are for bad configuration, unreachable
infrastructure and bugs. The only exception classes defined elsewhere are private signals raised
and caught within one module (`_Failed` of the acp and mcp probes, `_Legacy`, `_BodyTooLarge`).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "AgentwatchError",
    "BadAnswer",
    "BootstrapError",
    "ContainerOpFailed",
    "EngineUnavailable",
    "MonitorIncomplete",
    "Problem",
    "RegistryError",
    "StoreConflict",
    "StoreError",
    "UnknownAgent",
]


class AgentwatchError(Exception):
    """Base class of every error agentwatch raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a registry: where (agent id and field path) and what."""

    agent: str | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"agent {self.agent!r}" if self.agent else "registry"
        field = f" field {self.field!r}" if self.field else ""
        return f"{where}{field}: {self.message}"


class RegistryError(AgentwatchError):
    """A registry file was rejected whole. `problems` names every problem found."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s)\n{lines}")


class UnknownAgent(AgentwatchError):
    """An operator command named an agent id that is not in the registry."""

    def __init__(self, agent_id: str, source: str, known: list[str]) -> None:
        self.agent_id = agent_id
        more = ", ..." if len(known) > 10 else ""
        hint = f" (known: {', '.join(known[:10])}{more})" if known else " (it has no agents)"
        super().__init__(f"no agent {agent_id!r} in {source}{hint}")


class StoreError(AgentwatchError):
    """The state store cannot be reached or written."""


class StoreConflict(StoreError):
    """A compare-and-swap write found the row changed by another writer."""


class EngineUnavailable(AgentwatchError):
    """A backend engine (the Docker engine) cannot be reached; never an agent failure."""


class ContainerOpFailed(AgentwatchError):
    """The engine refused an operation on one container (gone, conflict, engine error)."""


class BadAnswer(AgentwatchError):
    """The target answered, but not as its protocol says; the message is the failure's reason."""


class MonitorIncomplete(AgentwatchError):
    """The cycle's states are committed, but the Prefect API failed a later step (named in the
    message); what it could not deliver is kept and goes out with the next run."""


class BootstrapError(AgentwatchError):
    """Bootstrap cannot do what the registry asks (a route's URL is missing, a deployment is absent)."""
