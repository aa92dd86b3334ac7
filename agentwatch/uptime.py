"""Availability from the transition log: time healthy / time monitored, per agent, over a window.

The log says when each state began; a state lasts until the next transition, the last one until
`now`. Left out of both sides of the ratio:

- time paused or unmanaged (nobody was watching, on purpose);
- time before the agent's first transition (monitoring had not begun).

Every other state is monitored time that is not healthy: starting, degraded, unhealthy, failed,
stopped and unknown alike (the monitor could not say the agent was up).

Pure: the caller reads the marks once for the whole fleet (agentwatch.store.history) and passes
`now`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from .models import AgentRecord, AgentState

if TYPE_CHECKING:
    from .registry import AgentSpec

__all__ = [
    "LONGEST",
    "NOT_MONITORED",
    "WINDOWS",
    "Availability",
    "Mark",
    "availability",
    "fleet_availability",
    "fleet_uptime",
    "format_percent",
    "percent_text",
    "report_table",
    "span_text",
    "uptime",
    "uptime_fields",
    "uptime_rows",
    "with_uptime",
]

Mark = tuple[datetime, AgentState]  # a transition: when, and the state it entered

WINDOWS: tuple[tuple[str, timedelta], ...] = (
    ("24h", timedelta(hours=24)),
    ("7d", timedelta(days=7)),
    ("30d", timedelta(days=30)),
)
LONGEST = max(w for _, w in WINDOWS)
NOT_MONITORED = frozenset({AgentState.PAUSED, AgentState.UNMANAGED})


@dataclass(frozen=True, slots=True)
class Availability:
    """Healthy and monitored time over one window. No monitored time: no ratio (None), not 0 or 1."""

    healthy: timedelta = timedelta(0)
    monitored: timedelta = timedelta(0)

    @property
    def ratio(self) -> float | None:
        if self.monitored <= timedelta(0):
            return None
        return self.healthy / self.monitored

    @property
    def percent(self) -> float | None:
        """0-100, rounded down to 3 decimals: 99.9996% never reads as 100."""
        ratio = self.ratio
        # The epsilon absorbs float error (0.29 * 100 = 28.999999999999996), not a real shortfall.
        return None if ratio is None else math.floor(ratio * 100_000 + 1e-9) / 1000

    def __add__(self, other: Availability) -> Availability:
        return Availability(self.healthy + other.healthy, self.monitored + other.monitored)


def availability(
    marks: Sequence[Mark], now: datetime, window: timedelta, current: AgentState | None = None
) -> Availability:
    """Healthy / monitored time in [now - window, now).

    `marks`: the agent's transitions (at, state entered), in any order, including the last one
    before the window if there is one (the state the window starts in). `current`: the agent's
    state now, from its record; it holds from the last transition on (the record and the log are
    written together, so they agree unless the log lost rows; then the record wins).
    """
    return uptime(marks, now, current, (("", window),))[""]


def uptime(
    marks: Sequence[Mark],
    now: datetime,
    current: AgentState | None = None,
    windows: Sequence[tuple[str, timedelta]] = WINDOWS,
) -> dict[str, Availability]:
    """Availability over each window (see `availability`), by its label (`24h`, `7d`, `30d`)."""
    spans = _monitored_spans(marks, now, current)
    out = {}
    for label, window in windows:
        start = now - window
        healthy = monitored = timedelta(0)
        for begin, end, is_healthy in spans:
            if end <= start:
                continue
            span = end - begin if begin >= start else end - start
            monitored += span
            if is_healthy:
                healthy += span
        out[label] = Availability(healthy, monitored)
    return out


def _monitored_spans(
    marks: Sequence[Mark], now: datetime, current: AgentState | None
) -> list[tuple[datetime, datetime, bool]]:
    """(begin, end, healthy) of every monitored stretch before `now`, from the first mark on."""
    ordered = sorted((m for m in marks if m[0] < now), key=lambda m: m[0])  # stable: log order on ties
    spans = []
    for i, (at, state) in enumerate(ordered):
        last = i + 1 == len(ordered)
        end = now if last else ordered[i + 1][0]
        if last and current is not None:
            state = current
        if end > at and state not in NOT_MONITORED:
            spans.append((at, end, state is AgentState.HEALTHY))
    return spans


def fleet_uptime(
    marks: Mapping[str, Sequence[Mark]],
    records: Mapping[str, AgentRecord],
    now: datetime,
    windows: Sequence[tuple[str, timedelta]] = WINDOWS,
) -> dict[str, dict[str, Availability]]:
    """Every agent's uptime (of `marks`, as agentwatch.store.history reads them, and `records`),
    each agent's record giving its state now."""
    out = {}
    for agent_id in {*marks, *records}:
        record = records.get(agent_id)
        out[agent_id] = uptime(marks.get(agent_id, ()), now, record.state if record else None, windows)
    return out


def fleet_availability(reports: Iterable[Mapping[str, Availability]]) -> dict[str, Availability]:
    """The fleet's availability per window: every agent's healthy time over every agent's
    monitored time (an agent watched for longer weighs more)."""
    total: dict[str, Availability] = {}
    for report in reports:
        for label, value in report.items():
            total[label] = total.get(label, Availability()) + value
    return total


def format_percent(value: Availability | None) -> str:
    """`99.95%`, `100%`, or `-` when nothing was monitored (see percent_text)."""
    return percent_text(value.percent if value is not None else None)


def percent_text(percent: float | None) -> str:
    """A percent for people: two decimals rounded down (an agent down at all never shows 100%),
    `100%`, or `-` for None (nothing monitored)."""
    if percent is None:
        return "-"
    if percent >= 100:
        return "100%"
    return f"{math.floor(percent * 100 + 1e-6) / 100:.2f}%"


def uptime_fields(report: Mapping[str, Availability] | None) -> dict[str, float | None]:
    """`uptime_24h`, `uptime_7d`, `uptime_30d`: percents (None: not monitored in that window), the
    columns a status row or a JSON consumer gets."""
    return {f"uptime_{label}": (report[label].percent if report and label in report else None) for label, _ in WINDOWS}


def with_uptime(
    rows: Sequence[Mapping[str, Any]], uptimes: Mapping[str, Mapping[str, Availability]], window: str = "24h"
) -> list[dict[str, Any]]:
    """The fleet table's rows with an `uptime_<window>` column: `99.95%`, or `-` for an agent not
    monitored in that window (`fleet_uptime` gives `uptimes`). In the rows it comes before the
    reason, as it always has for JSON readers; tables order their columns themselves
    (agentwatch.render.fleet_columns)."""
    key = f"uptime_{window}"
    out = []
    for row in rows:
        cell = format_percent(uptimes.get(row["id"], {}).get(window))
        out.append({**{k: v for k, v in row.items() if k != "reason"}, key: cell, "reason": row.get("reason")})
    return out


def uptime_rows(
    agents: Sequence[AgentSpec],
    records: Mapping[str, AgentRecord],
    uptimes: Mapping[str, Mapping[str, Availability]],
) -> list[dict[str, Any]]:
    """One row per agent, in registry order: id, name, state, the percents (`uptime_fields`), and
    the healthy and monitored seconds behind each (`healthy_24h_s`, `monitored_24h_s`, ...)."""
    rows = []
    for agent in agents:
        record = records.get(agent.id)
        report = uptimes.get(agent.id, {})
        row: dict[str, Any] = {
            "id": agent.id,
            "name": agent.display_name,
            "state": record.state.value if record is not None else AgentState.UNKNOWN.value,
            **uptime_fields(report),
        }
        for label, _ in WINDOWS:
            value = report.get(label, Availability())
            row[f"healthy_{label}_s"] = round(value.healthy.total_seconds(), 3)
            row[f"monitored_{label}_s"] = round(value.monitored.total_seconds(), 3)
        rows.append(row)
    return rows


def report_table(rows: Sequence[Mapping[str, Any]], now: datetime, cap: int) -> tuple[list[dict[str, Any]], str]:
    """The daily report (`agentwatch-uptime`): its table, worst 24 h first (then 7 d, 30 d; agents
    not monitored last), at most `cap` rows, and its description: the fleet's figures."""
    fleet = {
        label: Availability(
            timedelta(seconds=sum(r[f"healthy_{label}_s"] for r in rows)),
            timedelta(seconds=sum(r[f"monitored_{label}_s"] for r in rows)),
        )
        for label, _ in WINDOWS
    }

    def worst_first(row: Mapping[str, Any]) -> tuple[float, ...]:
        return tuple(101.0 if row[f"uptime_{label}"] is None else row[f"uptime_{label}"] for label, _ in WINDOWS)

    ordered = sorted(rows, key=worst_first)  # stable: registry order among equals
    table = [
        {
            "id": r["id"],
            "state": r["state"],
            **{label: percent_text(r[f"uptime_{label}"]) for label, _ in WINDOWS},
            "monitored (30d)": span_text(timedelta(seconds=r["monitored_30d_s"])),
        }
        for r in ordered[:cap]
    ]
    figures = ", ".join(f"{label} {format_percent(fleet[label])}" for label, _ in WINDOWS)
    unwatched = sum(1 for r in rows if r["uptime_24h"] is None)
    lines = [
        f"Uptime of {len(rows):,} agents at {now:%Y-%m-%d %H:%M} UTC. Fleet: {figures} "
        "(time healthy / time monitored; paused and unmanaged time left out).",
    ]
    if unwatched:
        lines.append(f"{unwatched:,} not monitored in the last 24 h (paused, unmanaged or not seen yet).")
    if len(rows) > cap:
        lines.append(f"Showing {cap:,} of {len(rows):,}, worst 24 h first; `agentwatch uptime` lists all.")
    return table, " ".join(lines)


def span_text(value: timedelta) -> str:
    """`12d3h`, `5h20m`, `42s`, `-` for none: how long an agent was watched, at a glance."""
    seconds = int(value.total_seconds())
    if seconds <= 0:
        return "-"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    return f"{minutes}m{secs}s" if minutes and secs else (f"{minutes}m" if minutes else f"{secs}s")
