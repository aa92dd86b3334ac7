"""Human-readable renderings of transitions and the fleet (artifacts, CLI, chat)."""

from __future__ import annotations

from collections.abc import Sequence

from .cycle import FleetRow
from .models import AgentState, Transition
from .registry import AgentSpec

__all__ = ["STATE_ICON", "fleet_summary", "transition_markdown"]

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


def _cell(text: str) -> str:
    # A table cell cannot hold a pipe or a newline.
    return text.replace("|", "\\|").replace("\n", " ")[:500]
