"""Chat messages: a one-line headline and a few `field: value` lines, the same for every chat.

Rendered here, in the monitor, and carried in the alert event's payload; the automation only
forwards them. Nothing secret reaches a message: route URLs are never known to the monitor, and
credentials in a URL that a probe put into a reason (`https://user:pass@host`) are masked.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from ..durations import format_duration
from ..models import AgentState
from .incidents import Alert, AlertKind

if TYPE_CHECKING:
    from ..registry import AgentSpec

__all__ = ["MAX_TEXT", "agent_message", "clean", "fleet_message"]

MAX_TEXT = 1500  # Discord allows 2,000 characters per message; leave room for the headline
MAX_NAMES = 10
_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s:@]+:[^/\s@]+@")
_ICON = {
    AlertKind.DOWN: "🔴",
    AlertKind.REMINDER: "⏰",
    AlertKind.RESOLVED: "✅",
    AlertKind.FLAPPING: "🔁",
    AlertKind.SETTLED: "🔂",
}
_DOWN = {AgentState.UNHEALTHY: "is unhealthy", AgentState.FAILED: "failed"}


def clean(text: str, limit: int = 300) -> str:
    """One safe line: no URL credentials, no template braces (the webhook block substitutes
    `{{...}}`), no line breaks, at most `limit` characters."""
    text = _URL_CREDENTIALS.sub(r"\1***@", text)
    text = text.replace("{{", "{ {").replace("}}", "} }")
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def agent_message(alert: Alert, agent: AgentSpec | None, now: datetime, run_url: str | None) -> tuple[str, str]:
    """(headline, text) for one agent's alert."""
    name = clean(agent.display_name if agent else alert.agent_id, 80)
    who = name if name == alert.agent_id else f"{name} ({alert.agent_id})"
    age = _age(now - alert.since)
    if alert.kind is AlertKind.RESOLVED:
        headline = f"{_ICON[alert.kind]} {who} recovered after {age} down"
        fields = [("state", alert.state.value), ("was", clean(alert.reason) or "-")]
    elif alert.kind is AlertKind.REMINDER:
        headline = f"{_ICON[alert.kind]} {who} is still down after {age} ({alert.state.value})"
        fields = [("reason", clean(alert.reason) or "-"), ("reminder", str(alert.reminders))]
    elif alert.kind is AlertKind.FLAPPING:
        headline = f"{_ICON[alert.kind]} {who} is flapping: {clean(alert.reason, 80)}"
        fields = [("state now", alert.state.value)]
    elif alert.kind is AlertKind.SETTLED:
        headline = f"{_ICON[alert.kind]} {who} settled {alert.state.value} after {age} of flapping"
        fields = [("state", alert.state.value), ("reason", clean(alert.reason) or "-")]
    else:
        headline = f"{_ICON[alert.kind]} {who} {_DOWN.get(alert.state, 'is ' + alert.state.value)}"
        fields = [("reason", clean(alert.reason) or "-")]
    fields.append(("since", f"{_when(alert.since)} ({age} ago)"))
    if alert.dependants:
        down = [d for d, is_down in alert.dependants if is_down]
        listed = _names([f"{d} (down)" if is_down else d for d, is_down in alert.dependants])
        label = f"dependants ({len(down)} down, their alerts held back)" if down else "dependants"
        fields.append((label, listed))
    if agent is not None and agent.labels:
        fields.append(("labels", clean(", ".join(f"{k}={v}" for k, v in sorted(agent.labels.items())))))
    if alert.note:
        fields.append(("note", clean(alert.note)))
    if run_url:
        fields.append(("monitor run", run_url))
    return headline, _text(fields)


def fleet_message(kind: AlertKind, alerts: Sequence[Alert], now: datetime, run_url: str | None) -> tuple[str, str]:
    """(headline, text) for many agents at once: counts and the first ids, never one line each."""
    count = len(alerts)
    if kind is AlertKind.RESOLVED:
        headline = f"{_ICON[kind]} {count} agents recovered"
    elif kind is AlertKind.REMINDER:
        headline = f"{_ICON[kind]} {count} agents are still down"
    elif kind is AlertKind.FLAPPING:
        headline = f"{_ICON[kind]} {count} agents are flapping"
    elif kind is AlertKind.SETTLED:
        headline = f"{_ICON[kind]} {count} agents settled after flapping"
    else:
        headline = f"{_ICON[kind]} {count} agents are down"
    states = Counter(a.state.value for a in alerts)
    fields = [
        ("states", ", ".join(f"{n} {s}" for s, n in states.most_common())),
        ("agents", _names([a.agent_id for a in alerts])),
    ]
    reasons = Counter(clean(a.reason, 120) for a in alerts if a.kind is not AlertKind.RESOLVED and a.reason)
    if reasons:
        reason, n = reasons.most_common(1)[0]
        fields.append(("most common reason", f"{reason} ({n} of {count})"))
    first = min(a.since for a in alerts)
    fields.append(("since", f"{_when(first)} ({_age(now - first)} ago)"))
    if run_url:
        fields.append(("monitor run", run_url))
    return headline, _text(fields)


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(names[:MAX_NAMES])
    return shown + (f" and {len(names) - MAX_NAMES} more" if len(names) > MAX_NAMES else "")


def _text(fields: list[tuple[str, str]]) -> str:
    text = "\n".join(f"{k}: {v}" for k, v in fields)
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def _when(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S %Z").strip()


def _age(delta: timedelta) -> str:
    # Whole seconds below a minute, whole minutes above: a chat reader wants "12m", not "12m3s".
    seconds = max(0, int(delta.total_seconds()))
    if seconds >= 120:
        seconds -= seconds % 60
    return format_duration(timedelta(seconds=seconds))
