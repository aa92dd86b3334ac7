"""Uptime from the transition log: known answers computed by hand, the bounded store read behind
them (real SQLite, rows written through StateStore.commit), and where it shows (status, the
`uptime` command, the fleet table column, the report table)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from agentwatch.models import AgentRecord, Transition
from agentwatch.models import AgentState as S
from agentwatch.registry import parse_registry
from agentwatch.render import fleet_table
from agentwatch.status import read_status, read_uptime
from agentwatch.store import StateStore
from agentwatch.uptime import (
    Availability,
    availability,
    fleet_availability,
    fleet_uptime,
    format_percent,
    percent_text,
    report_table,
    span_text,
    uptime,
    uptime_fields,
    uptime_rows,
    with_uptime,
)

T0 = datetime(2025, 6, 1, 0, 0, tzinfo=UTC)  # hour 0 of the fixtures
H = timedelta(hours=1)
D = timedelta(days=1)


def at(hours: float) -> datetime:
    return T0 + hours * H


def case(
    name: str,
    marks: list[tuple[float, S]],
    healthy: float,
    monitored: float,
    now: float = 24,
    window: float = 24,
    current: S | None = None,
) -> Any:
    """Marks as (hour, state), answers in hours; `now` and `window` in hours (24 and 24 unless said)."""
    return pytest.param(marks, now, window, current, healthy, monitored, id=name)


UP = S.HEALTHY  # short, so that each case stays on a line
KNOWN = [
    # The brief's example: 20 h healthy of 22 h monitored.
    case("paused time left out", [(0, UP), (10, S.UNHEALTHY), (12, S.PAUSED), (14, UP)], 20, 22),
    case("always healthy", [(0, UP)], 24, 24),
    case("before the first transition left out", [(6, UP), (18, S.FAILED)], 12, 18),
    case("state at the window's start from the row before it", [(-5, S.UNHEALTHY), (2, UP)], 22, 24),
    case("older rows before that one change nothing", [(-30, UP), (-5, S.UNHEALTHY), (2, UP)], 22, 24),
    case("unmanaged all along: nothing monitored", [(0, S.UNMANAGED)], 0, 0),
    case("no transitions: nothing monitored", [], 0, 0),
    case(
        "degraded, starting, stopped and unknown count as not healthy",
        [(0, S.STARTING), (1, UP), (10, S.DEGRADED), (11, UP), (12, S.STOPPED), (16, S.UNKNOWN), (18, UP)],
        9 + 1 + 6,
        24,
    ),
    case("the record's state holds from the last transition on", [(0, UP), (20, UP)], 20, 24, current=S.UNHEALTHY),
    case("a pause that lasts until now", [(0, UP), (12, S.PAUSED)], 12, 12, current=S.PAUSED),
    case("transitions after now are not counted", [(0, UP), (30, S.FAILED)], 24, 24),
    case("two rows at one instant: the later one holds", [(0, UP), (10, S.UNHEALTHY), (10, UP)], 24, 24),
    case("7 days: one bad day", [(-240, UP), (72, S.UNHEALTHY), (96, UP)], 144, 168, now=168, window=168),
    case("a window shorter than the history", [(0, UP), (100, S.UNHEALTHY), (106, UP)], 18, 24, now=124),
]


@pytest.mark.parametrize(("marks", "now", "window", "current", "healthy", "monitored"), KNOWN)
def test_availability_known_answers(
    marks: list[tuple[float, S]], now: float, window: float, current: S | None, healthy: float, monitored: float
) -> None:
    got = availability([(at(h), s) for h, s in marks], at(now), window * H, current)
    assert got == Availability(healthy * H, monitored * H)


def test_the_briefs_example_reads_as_20_of_22() -> None:
    got = availability(
        [(at(0), S.HEALTHY), (at(10), S.UNHEALTHY), (at(12), S.PAUSED), (at(14), S.HEALTHY)], at(24), 24 * H
    )
    assert got.ratio == pytest.approx(20 / 22)
    assert got.percent == 90.909
    assert format_percent(got) == "90.90%"


def test_three_windows_over_thirty_days() -> None:
    # Monitoring began 40 days ago, healthy; failed for 12 h 20 days ago; paused for 2 days 5
    # days ago; unhealthy for the last 6 h.
    now = T0 + 40 * D
    marks = [
        (T0, S.HEALTHY),
        (now - 20 * D, S.FAILED),
        (now - 20 * D + 12 * H, S.HEALTHY),
        (now - 5 * D, S.PAUSED),
        (now - 3 * D, S.HEALTHY),
        (now - 6 * H, S.UNHEALTHY),
    ]
    got = uptime(marks, now, S.UNHEALTHY)
    assert got["24h"] == Availability(18 * H, 24 * H)
    assert got["7d"] == Availability(7 * D - 2 * D - 6 * H, 7 * D - 2 * D)
    assert got["30d"] == Availability(30 * D - 2 * D - 12 * H - 6 * H, 30 * D - 2 * D)
    assert uptime_fields(got) == {"uptime_24h": 75.0, "uptime_7d": 95.0, "uptime_30d": 97.321}


@pytest.mark.parametrize(
    ("percent", "text"),
    [(None, "-"), (100.0, "100%"), (99.999, "99.99%"), (29.0, "29.00%"), (57.29, "57.29%"), (0.0, "0.00%")],
)
def test_percent_text_rounds_down(percent: float | None, text: str) -> None:
    assert percent_text(percent) == text


def test_a_moment_down_is_never_100_percent() -> None:
    almost = Availability(30 * D - timedelta(seconds=1), 30 * D)
    assert almost.percent == 99.999
    assert format_percent(almost) == "99.99%"
    assert format_percent(Availability(0.29 * H, H)) == "29.00%"  # no float shortfall
    assert format_percent(Availability()) == "-"


def test_fleet_availability_weighs_monitored_time() -> None:
    a = {"24h": Availability(24 * H, 24 * H)}
    b = {"24h": Availability(0 * H, 8 * H)}
    assert fleet_availability([a, b]) == {"24h": Availability(24 * H, 32 * H)}


def test_report_table_worst_first_capped_with_the_fleets_figures() -> None:
    registry = parse_registry("agents: [{id: good}, {id: bad}, {id: new}, {id: meh}]")
    now = at(24)
    records = {a: AgentRecord(a, state=S.HEALTHY) for a in ("good", "bad", "meh")}
    marks = {
        "good": [(at(0), S.HEALTHY)],
        "bad": [(at(0), S.UNHEALTHY), (at(18), S.HEALTHY)],
        "meh": [(at(0), S.HEALTHY), (at(12), S.DEGRADED), (at(18), S.HEALTHY)],
    }
    rows = uptime_rows(registry.agents, records, fleet_uptime(marks, records, now))
    table, description = report_table(rows, now, cap=2)
    assert [r["id"] for r in table] == ["bad", "meh"]
    assert table[0] == {
        "id": "bad",
        "state": "healthy",
        "24h": "25.00%",
        "7d": "25.00%",
        "30d": "25.00%",
        "monitored (30d)": "1d",
    }
    assert "Uptime of 4 agents at 2025-06-02 00:00 UTC. Fleet: 24h 66.66%" in description  # 48 h of 72
    assert "1 not monitored in the last 24 h" in description
    assert "Showing 2 of 4, worst 24 h first" in description
    full, _ = report_table(rows, now, cap=10)
    assert [r["id"] for r in full] == ["bad", "meh", "good", "new"]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "-"),
        (42, "42s"),
        (120, "2m"),
        (150, "2m30s"),
        (3600, "1h"),
        (5 * 3600 + 1200, "5h20m"),
        (86400 * 3, "3d"),
        (86400 * 12 + 3 * 3600 + 5, "12d3h"),
    ],
)
def test_span_text(seconds: int, text: str) -> None:
    assert span_text(timedelta(seconds=seconds)) == text


def test_fleet_table_column() -> None:
    rows = [
        {"id": "a", "state": "healthy", "reason": "ok"},
        {"id": "b", "state": "unknown", "reason": "not checked yet"},
    ]
    shown = with_uptime(rows, {"a": {"24h": Availability(23 * H, 24 * H)}})
    assert shown == [
        {"id": "a", "state": "healthy", "uptime_24h": "95.83%", "reason": "ok"},
        {"id": "b", "state": "unknown", "uptime_24h": "-", "reason": "not checked yet"},
    ]
    assert list(shown[0]) == ["id", "state", "uptime_24h", "reason"]  # as the rows always were (JSON)
    # The table puts the reason before the long columns, so it is not the one cut off.
    table, _ = fleet_table([{**shown[0], "since": "2025-06-01T00:00:00+00:00", "name": "A"}], cap=10)
    assert list(table[0]) == ["id", "state", "uptime_24h", "reason", "since", "name"]


# --- the store read -------------------------------------------------------------------------


async def write_log(store: StateStore, agent_id: str, steps: list[tuple[datetime, S]]) -> None:
    """Commit each state change as the monitor would: record and transition in one transaction."""
    record = AgentRecord(agent_id)
    for when, state in steps:
        new = record.evolve(state=state, since=when, paused=state is S.PAUSED)
        result = await store.commit([(new, Transition(agent_id, record.state, state, "", 0, when))])
        [record] = result.saved


async def test_state_marks_reads_the_window_and_the_row_before_it(tmp_path: Path) -> None:
    since = at(0)
    async with StateStore(f"sqlite:///{tmp_path}/state.db") as store:
        await write_log(
            store, "a", [(at(-50), S.HEALTHY), (at(-20), S.FAILED), (at(3), S.HEALTHY), (at(5), S.DEGRADED)]
        )
        await write_log(store, "b", [(at(-1), S.UNHEALTHY), (at(-1), S.HEALTHY)])  # two at one instant
        await write_log(store, "c", [(at(2), S.HEALTHY)])  # monitoring began inside the window
        await write_log(store, "d", [(at(-9), S.PAUSED)])  # nothing inside the window
        expected = {
            "a": [(at(-20), S.FAILED), (at(3), S.HEALTHY), (at(5), S.DEGRADED)],
            "b": [(at(-1), S.HEALTHY)],
            "c": [(at(2), S.HEALTHY)],
            "d": [(at(-9), S.PAUSED)],
        }
        assert await store.state_marks(since) == expected
        assert await store.state_marks(since, ["a", "c", "nobody"]) == {"a": expected["a"], "c": expected["c"]}
        many = {"b", *(f"x-{i}" for i in range(600))}  # past the IN-list size: the fleet is read whole
        assert await store.state_marks(since, many) == {"b": expected["b"]}


def drop_history_indexes(conn: sa.Connection) -> None:
    for name in ("ix_transitions_at", "ix_transitions_agent_id_at"):
        conn.execute(sa.text(f"DROP INDEX {name}"))


async def test_an_older_store_gets_the_history_indexes_when_opened(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/state.db"
    async with StateStore(url) as store:
        await write_log(store, "a", [(at(0), S.HEALTHY)])
        await store._run(drop_history_indexes, begin=True)
    async with StateStore(url) as store:
        assert await store.state_marks(at(-1)) == {"a": [(at(0), S.HEALTHY)]}
        names = await store._run(lambda c: {i["name"] for i in sa.inspect(c).get_indexes("transitions")})
    assert {"ix_transitions_at", "ix_transitions_agent_id_at"} <= names


REGISTRY = "agents:\n  - {id: a, probe: {tcp: {host: 127.0.0.1, port: 9}}}\n  - {id: c}\n  - {id: never}\n"


async def test_status_and_uptime_rows_carry_the_percents(tmp_path: Path) -> None:
    registry = parse_registry(REGISTRY)
    now = at(24)
    async with StateStore(f"sqlite:///{tmp_path}/state.db") as store:
        await write_log(
            store, "a", [(at(0), S.HEALTHY), (at(10), S.UNHEALTHY), (at(12), S.PAUSED), (at(14), S.HEALTHY)]
        )
        await write_log(store, "c", [(at(18), S.UNMANAGED)])
        status = {r["id"]: r for r in await read_status(store, registry, now)}
        rows = {r["id"]: r for r in await read_uptime(store, registry, now)}
        one = await read_status(store, registry, now, ["a"])
    assert status["a"]["uptime_24h"] == 90.909
    assert status["a"]["uptime_7d"] == status["a"]["uptime_30d"] == 90.909
    assert status["c"]["uptime_24h"] is None and status["never"]["uptime_24h"] is None
    assert one[0]["uptime_24h"] == 90.909
    assert rows["a"] == {
        "id": "a",
        "name": "a",
        "state": "healthy",
        "uptime_24h": 90.909,
        "uptime_7d": 90.909,
        "uptime_30d": 90.909,
        "healthy_24h_s": 72000.0,
        "monitored_24h_s": 79200.0,
        "healthy_7d_s": 72000.0,
        "monitored_7d_s": 79200.0,
        "healthy_30d_s": 72000.0,
        "monitored_30d_s": 79200.0,
    }
    assert rows["never"]["state"] == "unknown" and rows["never"]["uptime_30d"] is None


def test_uptime_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import asyncio

    from cli import main

    url = f"sqlite:///{tmp_path}/state.db"
    monkeypatch.setenv("AGENTWATCH_DATABASE_URL", url)
    (tmp_path / "fleet.yaml").write_text(REGISTRY)
    now = datetime.now(UTC)

    async def seed() -> None:
        async with StateStore(url) as store:
            await write_log(store, "a", [(now - 2 * H, S.HEALTHY), (now - H, S.UNHEALTHY)])

    asyncio.run(seed())
    assert main(["uptime", "--json", "--registry", str(tmp_path / "fleet.yaml")]) == 0
    rows = {r["id"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"a", "c", "never"}
    assert rows["a"]["state"] == "unhealthy"
    assert rows["a"]["uptime_24h"] == pytest.approx(50, abs=0.1)  # 1 h of 2, give or take the run
    # The registry as `status` finds it: $AGENTWATCH_REGISTRY.
    monkeypatch.setenv("AGENTWATCH_REGISTRY", str(tmp_path / "fleet.yaml"))
    assert main(["uptime"]) == 0
    table = capsys.readouterr().out
    assert "uptime_30d" in table and re.search(r"\b(49\.9\d|50\.00)%", table), table
    assert main(["status"]) == 0
    assert "uptime_24h" in capsys.readouterr().out
