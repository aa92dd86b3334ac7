"""Checks across a validated registry: every agent id that `depends_on` or `alerts:` names exists,
and dependencies do not loop (a loop would hold back every alert of the agents on it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import Problem

if TYPE_CHECKING:  # registry.py calls this module: no import cycle at run time
    from .registry import Registry

__all__ = ["reference_problems"]


def reference_problems(registry: Registry) -> list[Problem]:
    """Problems with the agent ids the registry refers to, named by agent and field."""
    known = set(registry.ids)
    problems = []
    for agent in registry.agents:
        for dep in agent.depends_on:
            if dep == agent.id:
                problems.append(Problem(agent.id, "depends_on", "an agent cannot depend on itself"))
            elif dep not in known:
                problems.append(Problem(agent.id, "depends_on", f"no agent {dep!r} in the registry"))
    if registry.alerts is not None:
        for path, agent_id in registry.alerts.named_agents():
            if agent_id not in known:
                problems.append(Problem(None, path, f"no agent {agent_id!r} in the registry"))
    graph = {a.id: [d for d in a.depends_on if d in known and d != a.id] for a in registry.agents}
    for loop in _dependency_loops(graph):
        problems.append(Problem(loop[0], "depends_on", "dependencies form a loop: " + " -> ".join(loop)))
    return problems


def _dependency_loops(graph: dict[str, list[str]]) -> list[list[str]]:
    """Each loop once, as a path that starts and ends at the same agent (depth-first, iterative)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = finished
    loops: list[list[str]] = []
    for root in graph:
        if root in state:
            continue
        path: list[str] = [root]
        stack = [iter(graph[root])]
        state[root] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                loops.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(graph.get(nxt, [])))
    return loops
