"""Incidents in the state store (SQLite and PostgreSQL): round trip, compare-and-swap, forgetting departed agents."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from agentwatch.alerts import Incident, IncidentChange
from agentwatch.models import AgentState
from agentwatch.store import StateStore

T0 = datetime(2025, 6, 2, 12, 0, 0, 250000, tzinfo=UTC)


async def test_round_trip_and_compare_and_swap(store_url: str) -> None:
    async with StateStore(store_url) as store:
        opened = Incident("web-1", T0, AgentState.UNHEALTHY, "connection refused", notified_at=T0)
        assert await store.save_incidents([IncidentChange("web-1", 0, opened)]) == ["web-1"]
        # A second writer that also read "no incident" loses: the row exists now.
        assert await store.save_incidents([IncidentChange("web-1", 0, opened)]) == []

        stored = (await store.load_incidents())["web-1"]
        assert stored == Incident("web-1", T0, AgentState.UNHEALTHY, "connection refused", T0, 0, version=1)

        reminded = IncidentChange(
            "web-1", 1, Incident("web-1", T0, AgentState.UNHEALTHY, "x", T0 + timedelta(hours=4), 1)
        )
        assert await store.save_incidents([reminded]) == ["web-1"]
        assert await store.save_incidents([reminded]) == []  # stale version: another run reminded first
        assert (await store.load_incidents())["web-1"].reminders == 1

        assert await store.save_incidents([IncidentChange("web-1", 1, None)]) == []  # stale delete
        assert await store.save_incidents([IncidentChange("web-1", 2, None)]) == ["web-1"]
        assert await store.load_incidents() == {}


async def test_forget_incidents_of_departed_agents(store_url: str) -> None:
    async with StateStore(store_url) as store:
        changes = [IncidentChange(a, 0, Incident(a, T0, AgentState.FAILED, "")) for a in ("a-1", "b-1")]
        assert sorted(await store.save_incidents(changes)) == ["a-1", "b-1"]
        assert await store.drop_missing_incidents(["a-1"]) == ["b-1"]
        assert list(await store.load_incidents()) == ["a-1"]
