"""Human-readable renderings of transitions and the fleet (artifacts, CLI, chat)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .cycle import FleetRow
from .models import AgentState, Transition
from .registry import AgentSpec
from .uptime import Availability, format_percent

__all__ = ["STATE_ICON", "fleet_summary", "fleet_table", "transition_markdown", "with_uptime"]

STATE_ICON = {
    AgentState.HEALTHY: "🟢",
    AgentState.DEGRADED: "🟡",
    AgentState.STARTING: "🔵",
    AgentState.UNHEALTHY: "🔴",
    AgentState.FAILED: "🔴",
    AgentState.STOPPED: "⚪",
    AgentState.PAUSED: "⏸️",
    AgentState.UNMANAGED: "▫️",
    AgentState.UNKNOWN: "❔",
}


def transition_markdown(transition: Transition, agent: AgentSpec | None = None, run_url: str | None = None) -> str:
    """The body of one version of the keyed `agent-<id>` artifact: what changed, why, since when."""
    t = transition
    name = agent.display_name if agent else t.agent_id
    lines = [
        f"## {STATE_ICON.get(t.to_state, '')} {name}: {t.from_state.value} → {t.to_state.value}",
        "",
        "| field | value |",
        "|---|---|",
        f"| agent | `{t.agent_id}` |",
        f"| state | **{t.to_state.value}** (was {t.from_state.value}) |",
        f"| since | {t.at.isoformat(timespec='seconds')} |",
        f"| consecutive failures | {t.failures} |",
        f"| reason | {_cell(t.reason) or '-'} |",
    ]
    if agent is not None:
        if agent.probe is not None:
            lines.append(f"| probe | {agent.probe.kind} |")
        if agent.labels:
            labels = ", ".join(f"{k}={v}" for k, v in sorted(agent.labels.items()))
            lines.append(f"| labels | {_cell(labels)} |")
    if run_url:
        lines.append(f"| monitor run | [{run_url}]({run_url}) |")
    return "\n".join(lines) + "\n"


def fleet_summary(rows: Sequence[FleetRow]) -> str:
    """A one-line count of agents per state, e.g. `3 healthy, 1 unhealthy`."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    order = [s.value for s in AgentState]
    return ", ".join(f"{counts[s]} {s}" for s in order if s in counts) or "no agents"


# Worst first: the rows a reader of a capped fleet table must not miss.
_SEVERITY = {
    s.value: i
    for i, s in enumerate(
        [
            AgentState.FAILED,
            AgentState.UNHEALTHY,
            AgentState.DEGRADED,
            AgentState.STARTING,
            AgentState.UNKNOWN,
            AgentState.STOPPED,
            AgentState.PAUSED,
            AgentState.UNMANAGED,
            AgentState.HEALTHY,
        ]
    )
}


def fleet_table(rows: Sequence[FleetRow], cap: int) -> tuple[list[FleetRow], str]:
    """The rows of the fleet table artifact and its description. Past `cap` agents, the table keeps
    the agents that are not healthy first (worst first, then registry order) and says how many it
    left out, so it stays readable, and under the server's event size limit, at any fleet size."""
    summary = fleet_summary(rows)
    if len(rows) <= cap:
        return list(rows), f"Fleet: {summary}"
    order = sorted(range(len(rows)), key=lambda i: (_SEVERITY.get(rows[i]["state"], 0), i))
    shown = [rows[i] for i in order[:cap]]
    return shown, f"Fleet: {summary}. Showing {cap} of {len(rows)} agents, worst first; `agentwatch status` lists all."


def with_uptime(
    rows: Sequence[FleetRow], uptimes: Mapping[str, Mapping[str, Availability]], window: str = "24h"
) -> list[FleetRow]:
    """The fleet table's rows with an `uptime_<window>` column before the reason: `99.95%`, or `-`
    for an agent not monitored in that window (agentwatch.uptime.fleet_uptime gives `uptimes`)."""
    key = f"uptime_{window}"
    out = []
    for row in rows:
        cell = format_percent(uptimes.get(row["id"], {}).get(window))
        reason = row.get("reason")
        out.append({**{k: v for k, v in row.items() if k != "reason"}, key: cell, "reason": reason})
    return out


def _cell(text: str) -> str:
    # A table cell cannot hold a pipe or a newline.
    return text.replace("|", "\\|").replace("\n", " ")[:500]
