"""The one table and cell renderer: markdown for artifacts, plain text for the CLI and chat.

Every cell goes through one of two functions, once: `markdown_cell` (no pipe, no line break, at
most `limit` characters) and `text_cell` (no line break; ISO times shortened). Tables are built
from rows (mappings) and a column order: `markdown_table` for artifacts, `text_table` for people
at a terminal, where the reason column wraps instead of being cut off.

The fleet table puts the short, telling columns and the reason first and the long or rarely read
ones (times, latency, probe kind, name) after it (`fleet_columns`), so a reader sees why an agent
is in its state without scrolling.
"""

from __future__ import annotations

import textwrap
import unicodedata
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from .models import AgentState, Transition
from .registry import AgentSpec

__all__ = [
    "FLEET_LEAD",
    "STATE_ICON",
    "Row",
    "fleet_columns",
    "fleet_summary",
    "fleet_table",
    "markdown_cell",
    "markdown_table",
    "text_cell",
    "text_table",
    "transition_markdown",
]

Row = Mapping[str, Any]

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

# The fleet and status tables' first columns, in this order (those a table has); the rest follow
# in the order the rows give them.
FLEET_LEAD = ("id", "state", "failures", "missed", "uptime_24h", "reason")

WRAP_MIN = 30  # the wrapped column never gets narrower than this; the line grows instead


# --- cells ----------------------------------------------------------------------------------


def markdown_cell(value: object, limit: int = 500, empty: str = "-") -> str:
    """One markdown table cell: at most `limit` characters, line breaks as spaces, `|` escaped
    (after cutting, so a cut never leaves a lone backslash); `empty` for None or ''."""
    text = _one_line(value)[:limit]
    return text.replace("|", "\\|") if text else empty


def text_cell(value: object) -> str:
    """One plain-text cell: '' for None, line breaks as spaces, an ISO timestamp shortened to
    `YYYY-MM-DD HH:MM:SS` (UTC, as stored)."""
    text = _one_line(value)
    if len(text) >= 19 and text[10:11] == "T":
        try:
            return datetime.fromisoformat(text).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
        except ValueError:
            pass
    return text


def _one_line(value: object) -> str:
    if value is None:
        return ""
    return str(value).replace("\r\n", " ").replace("\n", " ").replace("\r", " ")


# --- tables ---------------------------------------------------------------------------------


def markdown_table(rows: Sequence[Row], columns: Sequence[str], limit: int = 500) -> list[str]:
    """A markdown table's lines: the header, the separator, one line per row (`markdown_cell`)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(markdown_cell(row.get(c), limit) for c in columns) + " |" for row in rows]
    return lines


def text_table(rows: Sequence[Row], columns: Sequence[str], width: int = 120, wrap: str = "reason") -> str:
    """A plain-text table: a header, a rule, one line per row, columns two spaces apart.

    Other columns never wrap; the `wrap` column (when there is one) takes the width the others
    leave, at least WRAP_MIN, and continues on the next lines: nothing is cut off.
    """
    cells = [[text_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([_width(c), *(_width(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    wrapped = columns.index(wrap) if wrap in columns else -1
    if wrapped >= 0:
        others = sum(widths) - widths[wrapped] + 2 * (len(columns) - 1)
        widths[wrapped] = max(min(widths[wrapped], width - others), min(widths[wrapped], WRAP_MIN))
    lines = [_line(columns, widths), _line(["-" * w for w in widths], widths)]
    for row_cells in cells:
        parts = [_wrap(text, widths[i]) if i == wrapped else [text] for i, text in enumerate(row_cells)]
        for k in range(max(len(p) for p in parts)):
            lines.append(_line([p[k] if k < len(p) else "" for p in parts], widths))
    return "\n".join(lines) + "\n"


def _wrap(text: str, width: int) -> list[str]:
    return textwrap.wrap(text, width, break_on_hyphens=False) or [""]


def _line(cells: Sequence[str], widths: Sequence[int]) -> str:
    return "  ".join(c + " " * (w - _width(c)) for c, w in zip(cells, widths, strict=True)).rstrip()


def _width(text: str) -> int:
    """Terminal columns: wide (East Asian, most emoji) characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


# --- the fleet ------------------------------------------------------------------------------


def transition_markdown(transition: Transition, agent: AgentSpec | None = None, run_url: str | None = None) -> str:
    """The body of one version of the keyed `agent-<id>` artifact: what changed, why, since when."""
    t = transition
    name = agent.display_name if agent else t.agent_id
    fields = [
        ("agent", f"`{t.agent_id}`"),
        ("state", f"**{t.to_state.value}** (was {t.from_state.value})"),
        ("since", t.at.isoformat(timespec="seconds")),
        ("consecutive failures", t.failures),
        ("reason", t.reason),
    ]
    if agent is not None:
        if agent.probe is not None:
            fields.append(("probe", agent.probe.kind))
        if agent.labels:
            fields.append(("labels", ", ".join(f"{k}={v}" for k, v in sorted(agent.labels.items()))))
    if run_url:
        fields.append(("monitor run", f"[{run_url}]({run_url})"))
    lines = [f"## {STATE_ICON.get(t.to_state, '')} {name}: {t.from_state.value} → {t.to_state.value}", ""]
    lines += markdown_table([{"field": k, "value": v} for k, v in fields], ("field", "value"))
    return "\n".join(lines) + "\n"


def fleet_summary(rows: Sequence[Row]) -> str:
    """A one-line count of agents per state, e.g. `3 healthy, 1 unhealthy`."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    order = [s.value for s in AgentState]
    return ", ".join(f"{counts[s]} {s}" for s in order if s in counts) or "no agents"


def fleet_columns(columns: Sequence[str]) -> list[str]:
    """`columns` with those of FLEET_LEAD first, in its order, and the rest after, as given."""
    lead = [c for c in FLEET_LEAD if c in columns]
    return lead + [c for c in columns if c not in lead]


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


def fleet_table(rows: Sequence[Row], cap: int) -> tuple[list[dict[str, Any]], str]:
    """The rows of the fleet (or status) table artifact, their columns in `fleet_columns` order,
    and its description. Past `cap` agents, the table keeps the agents that are not healthy first
    (worst first, then registry order) and says how many it left out, so it stays readable, and
    under the server's event size limit, at any fleet size."""
    summary = fleet_summary(rows)
    description = f"Fleet: {summary}"
    shown: Sequence[Row] = rows
    if len(rows) > cap:
        order = sorted(range(len(rows)), key=lambda i: (_SEVERITY.get(rows[i]["state"], 0), i))
        shown = [rows[i] for i in order[:cap]]
        description += f". Showing {cap} of {len(rows)} agents, worst first; `agentwatch status` lists all."
    return [{c: row[c] for c in fleet_columns(list(row))} for row in shown], description
