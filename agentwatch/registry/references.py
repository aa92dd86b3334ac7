"""Checks across a registry: every agent id that `depends_on` or `alerts:` names exists, and
dependencies do not loop (a loop would hold back every alert of the agents on it).

A registry that validated is checked through its models (`reference_problems`); one that did not
is checked on its document as far as it reads (`raw_reference_problems`), so a rejected file
names every problem at once, its dangling references included.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import Problem
from .specs import Registry

__all__ = ["raw_reference_problems", "reference_problems"]


def reference_problems(registry: Registry) -> list[Problem]:
    """Problems with the agent ids the registry refers to, named by agent and field."""
    named = registry.alerts.named_agents() if registry.alerts is not None else []
    return _problems(registry.ids, [(a.id, list(a.depends_on)) for a in registry.agents], named)


def raw_reference_problems(raw: Mapping[str, Any]) -> list[Problem]:
    """The same checks on a registry document that did not validate: every agent id it names
    (`id`, `depends_on`, `alerts.routes[].match.agents`, `alerts.silences[].match.agents`) that
    reads as a string; what does not read is the validation's problem, not a reference's."""
    agents = [a for a in _list(raw.get("agents")) if isinstance(a, Mapping) and isinstance(a.get("id"), str)]
    depends = [(a["id"], _strings(a.get("depends_on"))) for a in agents]
    alerts = raw.get("alerts")
    named: list[tuple[str, str]] = []
    if isinstance(alerts, Mapping):
        for i, route in enumerate(_list(alerts.get("routes"))):
            name = route.get("name") if isinstance(route, Mapping) and isinstance(route.get("name"), str) else i
            named += [(f"alerts.routes.{name}.match.agents", a) for a in _match_agents(route)]
        for i, silence in enumerate(_list(alerts.get("silences"))):
            named += [(f"alerts.silences.{i}.match.agents", a) for a in _match_agents(silence)]
    return _problems([a["id"] for a in agents], depends, named)


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _strings(value: Any) -> list[str]:
    return [v for v in _list(value) if isinstance(v, str)]


def _match_agents(entry: Any) -> list[str]:
    match = entry.get("match") if isinstance(entry, Mapping) else None
    return _strings(match.get("agents")) if isinstance(match, Mapping) else []


def _problems(
    ids: Sequence[str], depends: Sequence[tuple[str, list[str]]], named: Sequence[tuple[str, str]]
) -> list[Problem]:
    known = set(ids)
    problems = []
    for agent_id, deps in depends:
        for dep in deps:
            if dep == agent_id:
                problems.append(Problem(agent_id, "depends_on", "an agent cannot depend on itself"))
            elif dep not in known:
                problems.append(Problem(agent_id, "depends_on", f"no agent {dep!r} in the registry"))
    for path, agent_id in named:
        if agent_id not in known:
            problems.append(Problem(None, path, f"no agent {agent_id!r} in the registry"))
    graph = {agent_id: [d for d in deps if d in known and d != agent_id] for agent_id, deps in depends}
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
