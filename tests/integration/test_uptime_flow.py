"""The `uptime-report` flow on a real Prefect test server with a real SQLite store: transitions
written through StateStore.commit (times relative to now, so the flow's own clock applies), the
`agentwatch-uptime` artifact read back through the client."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from agentwatch.models import AgentRecord, Transition
from agentwatch.models import AgentState as S
from agentwatch.store import StateStore
from deployments.definitions import UPTIME
from flows.uptime import UPTIME_ARTIFACT, uptime_report

from .prefect_reads import artifact_versions

pytestmark = pytest.mark.integration

H = timedelta(hours=1)
D = timedelta(days=1)


async def write_log(store: StateStore, agent_id: str, steps: list[tuple[datetime, S]]) -> None:
    record = AgentRecord(agent_id)
    for when, state in steps:
        new = record.evolve(state=state, since=when, paused=state is S.PAUSED)
        [record] = (await store.commit([(new, Transition(agent_id, record.state, state, "", 0, when))])).saved


async def test_uptime_report_writes_the_artifact(prefect_server: str, state_db: str, tmp_path: Path) -> None:
    registry = tmp_path / "fleet.yaml"
    ids = ["up-steady", "up-blip", "up-paused", "up-down", "up-new"]
    registry.write_text(
        yaml.safe_dump({"agents": [{"id": a, "probe": {"tcp": {"host": "127.0.0.1", "port": 9}}} for a in ids]})
    )
    now = datetime.now(UTC)
    began = now - 40 * D  # before the 30-day window: every window is monitored whole
    async with StateStore(state_db) as store:
        await write_log(store, "up-steady", [(began, S.HEALTHY)])
        # Down 2 h, 20 h ago: 22/24 h, 166/168 h, 718/720 h whenever the flow reads it.
        await write_log(store, "up-blip", [(began, S.HEALTHY), (now - 20 * H, S.UNHEALTHY), (now - 18 * H, S.HEALTHY)])
        # Paused 6 h: left out, so 100% however long the pause.
        await write_log(store, "up-paused", [(began, S.HEALTHY), (now - 12 * H, S.PAUSED), (now - 6 * H, S.HEALTHY)])
        # Failed for the last 12 h: about half of the last day.
        await write_log(store, "up-down", [(began, S.HEALTHY), (now - 12 * H, S.FAILED)])

    rows = {r["id"]: r for r in await uptime_report(str(registry))}

    assert rows["up-steady"]["uptime_30d"] == 100.0
    assert (rows["up-blip"]["uptime_24h"], rows["up-blip"]["uptime_7d"], rows["up-blip"]["uptime_30d"]) == (
        91.666,
        98.809,
        99.722,
    )
    assert rows["up-paused"]["uptime_24h"] == 100.0 and rows["up-paused"]["monitored_24h_s"] == 18 * 3600
    assert rows["up-down"]["uptime_24h"] == pytest.approx(50.0, abs=0.1)
    assert rows["up-new"]["uptime_24h"] is None

    latest = (await artifact_versions(UPTIME_ARTIFACT))[-1]
    assert latest.type == "table"
    table = json.loads(latest.data) if isinstance(latest.data, str) else latest.data
    assert [r["id"] for r in table] == ["up-down", "up-blip", "up-steady", "up-paused", "up-new"]  # worst first
    assert table[1] == {
        "id": "up-blip",
        "state": "healthy",
        "24h": "91.66%",
        "7d": "98.80%",
        "30d": "99.72%",
        "monitored (30d)": "30d",
    }
    assert table[-1]["24h"] == "-"
    assert latest.description.startswith("Uptime of 5 agents at ")
    assert "1 not monitored in the last 24 h" in latest.description


def test_the_deployment_runs_daily() -> None:
    deployment = UPTIME.runner("fleet.yaml")
    assert deployment.name == "uptime-report"
    assert deployment.parameters == {"registry_path": "fleet.yaml"}
    [schedule] = deployment.schedules
    assert schedule.schedule.cron == "5 0 * * *"
