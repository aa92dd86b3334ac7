"""Markdown for people: a reconcile plan or what it did, and a shutdown summary (Prefect artifacts)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from ..render import markdown_cell, markdown_table

__all__ = ["not_run_markdown", "reconcile_markdown", "shutdown_markdown"]

_ICON = {
    "record": "📝",
    "start": "▶️",
    "restart": "🔁",
    "remove": "🗑️",
    "defer": "⏳",
    "exhausted": "⛔",
    "reset": "♻️",
    "leave": "▫️",
}


_CELL = 300  # at most this many characters per cell


def reconcile_markdown(rows: Sequence[Mapping[str, Any]], *, dry_run: bool, settings: Mapping[str, Any]) -> str:
    """The plan of a dry run, or the actions of a real run with their outcomes."""
    counts = Counter(str(row["action"]) for row in rows)
    summary = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())) or "nothing to do"
    title = "Reconcile plan (dry run: nothing was changed)" if dry_run else "Reconcile actions"
    lines = [f"## {title}", "", f"**{summary}**", ""]
    lines += [f"- {k}: `{v}`" for k, v in settings.items()]
    lines.append("")
    shown = [{**row, "action": f"{_ICON.get(str(row['action']), '')} {row['action']}"} for row in rows]
    columns = ["action", "agent", "container", "state", "reason"] + ([] if dry_run else ["outcome"])
    lines += markdown_table(shown, columns, _CELL) if rows else ["No container needs anything."]
    return "\n".join(lines) + "\n"


def shutdown_markdown(rows: Sequence[Mapping[str, Any]], *, leave_running: bool, stop_timeout: str) -> str:
    """What shutdown stopped (or, with leave_running, left running)."""
    counts = Counter(str(row["outcome"]) for row in rows)
    summary = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items())) or "no managed containers"
    if leave_running:
        head = "## Shutdown: leave_running is set, no container was stopped"
    else:
        head = f"## Shutdown: SIGTERM, then SIGKILL after {stop_timeout}"
    lines = [head, "", f"**{summary}**", ""]
    lines += markdown_table(rows, ["agent", "container", "status", "outcome", "reason"], _CELL) if rows else []
    return "\n".join(lines) + "\n"


def not_run_markdown(flow: str, reason: str, settings: Mapping[str, Any] | None = None) -> str:
    """Why a reconcile or shutdown run did nothing at all (the engine could not be reached)."""
    lines = [f"## {flow} did not run", "", f"**{markdown_cell(reason, _CELL)}**", ""]
    lines += [f"- {k}: `{v}`" for k, v in (settings or {}).items()]
    lines += [
        "",
        "No container was listed, started, stopped or removed, and no agent state was recorded. "
        "Agents the engine would tell about stay as they were (the monitor records them `unknown`, "
        "never failed). Run it again once the engine answers.",
    ]
    return "\n".join(lines) + "\n"
