"""The fleet's status as operators read it: one row per agent from the state store (state, last
beat, missed beats, pause, uptime, reason), the uptime rows, and how a row reads in a table.

Read-only: operator actions (pause, resume) are in agentwatch.maintenance.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from .beats import Beat
from .heartbeat.watch import clock_start
from .models import AgentRecord
from .probes.heartbeat import check_heartbeat
from .registry import Registry
from .store import StateStore
from .uptime import LONGEST, WINDOWS, Availability, fleet_uptime, percent_text, span_text, uptime_fields, uptime_rows

__all__ = ["read_status", "read_uptime", "status_display", "status_rows", "uptime_display"]


def status_rows(
    registry: Registry,
    records: Mapping[str, AgentRecord],
    beats: Mapping[str, Beat],
    now: datetime,
    uptimes: Mapping[str, Mapping[str, Availability]] | None = None,
) -> list[dict[str, Any]]:
    """One row per agent: state, since, last beat, seconds since it, missed beats, pause, uptime
    (percent over 24 h, 7 d, 30 d: agentwatch.uptime), reason.

    Missed beats are counted at `now` (not at the last monitor run); they are None for agents
    that do not beat and while a pause lasts.
    """
    rows = []
    for agent in registry.agents:
        rec = records.get(agent.id)
        beat = beats.get(agent.id)
        spec = agent.probe.heartbeat if agent.probe is not None else None
        last = beat.last_seen if beat is not None else None
        missed = None
        if spec is not None and not (rec is not None and rec.paused):
            missed = check_heartbeat(agent.id, spec, beat, clock_start(rec, now), now).details["missed"]
        rows.append(
            {
                "id": agent.id,
                "probe": agent.probe.kind if agent.probe is not None else "-",
                "state": rec.state.value if rec is not None else "unknown",
                "since": _iso(rec.since if rec is not None else None),
                "last_beat": _iso(last),
                "seconds_since": round((now - last).total_seconds(), 1) if last is not None else None,
                "missed": missed,
                "paused": bool(rec and rec.paused),
                "paused_until": _iso(rec.paused_until if rec is not None else None),
                "sticky": bool(rec and rec.sticky),
                **uptime_fields((uptimes or {}).get(agent.id)),
                "reason": rec.reason if rec is not None else "not checked yet",
            }
        )
    return rows


async def read_status(
    store: StateStore, registry: Registry, now: datetime, agent_ids: list[str] | None = None
) -> list[dict[str, Any]]:
    """Status rows from the store as it is now, for the whole registry or some of its agents."""
    wanted = [a for a in registry.agents if agent_ids is None or a.id in agent_ids]
    ids = [a.id for a in wanted]
    records = await store.load(ids)
    beats = await store.load_beats(ids)
    uptimes = fleet_uptime(await store.state_marks(now - LONGEST, ids), records, now)
    return status_rows(registry.model_copy(update={"agents": wanted}), records, beats, now, uptimes)


async def read_uptime(store: StateStore, registry: Registry, now: datetime) -> list[dict[str, Any]]:
    """Every agent's availability over 24 h, 7 d and 30 d (agentwatch.uptime.uptime_rows), from one
    bounded read of the transition log."""
    ids = registry.ids
    records = await store.load(ids)
    uptimes = fleet_uptime(await store.state_marks(now - LONGEST, ids), records, now)
    return uptime_rows(registry.agents, records, uptimes)


def status_display(row: Mapping[str, Any]) -> dict[str, Any]:
    """A status row for a table: the pause as one cell (sticky, until when, or plain yes), the
    24 h uptime as a percent."""
    paused = ""
    if row["paused"]:
        paused = ("sticky " if row["sticky"] else "") + (
            f"until {row['paused_until']}" if row["paused_until"] else "yes"
        )
    return {**row, "paused": paused, "uptime_24h": percent_text(row.get("uptime_24h"))}


def uptime_display(row: Mapping[str, Any]) -> dict[str, Any]:
    """An uptime row for a table: percents, and the time monitored over 30 d at a glance."""
    shown = {f"uptime_{label}": percent_text(row[f"uptime_{label}"]) for label, _ in WINDOWS}
    return {**row, **shown, "monitored_30d": span_text(timedelta(seconds=row["monitored_30d_s"]))}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value is not None else None
