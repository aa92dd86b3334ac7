"""The one table and cell renderer (agentwatch.render): markdown cells and tables for artifacts,
plain-text tables for the CLI, the fleet table's column order."""

from __future__ import annotations

import pytest

from agentwatch.render import fleet_columns, fleet_table, markdown_cell, markdown_table, text_cell, text_table


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        pytest.param("a|b", "a\\|b", id="pipe-escaped"),
        pytest.param("a\nb\r\nc\rd", "a b c d", id="line-breaks-become-spaces"),
        pytest.param(None, "-", id="none-is-a-dash"),
        pytest.param("", "-", id="empty-is-a-dash"),
        pytest.param(0, "0", id="zero-is-shown"),
        pytest.param(12.5, "12.5", id="number"),
    ],
)
def test_markdown_cell(value: object, cell: str) -> None:
    assert markdown_cell(value) == cell


def test_markdown_cell_cuts_before_escaping() -> None:
    assert markdown_cell("x" * 600) == "x" * 500
    assert markdown_cell("abc|def", limit=4) == "abc\\|"  # never a lone backslash escaping the border
    assert markdown_cell(None, empty="") == ""


def test_markdown_table_keeps_the_column_order_given() -> None:
    rows = [{"reason": "a|b\nc", "id": "web-1", "state": "degraded"}, {"id": "db"}]
    assert markdown_table(rows, ["id", "state", "reason"]) == [
        "| id | state | reason |",
        "|---|---|---|",
        "| web-1 | degraded | a\\|b c |",
        "| db | - | - |",
    ]


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        pytest.param(None, "", id="none-is-blank"),
        pytest.param("a|b", "a|b", id="pipe-kept"),
        pytest.param("a\nb", "a b", id="line-break-becomes-space"),
        pytest.param("2025-03-01T12:00:05+00:00", "2025-03-01 12:00:05", id="iso-time-shortened"),
        pytest.param("2025-03-01T13:00:05+01:00", "2025-03-01 12:00:05", id="iso-time-in-utc"),
        pytest.param("2025-03-01Tnot a time at all", "2025-03-01Tnot a time at all", id="not-a-time"),
        pytest.param(3, "3", id="number"),
    ],
)
def test_text_cell(value: object, cell: str) -> None:
    assert text_cell(value) == cell


def test_text_table_aligns_columns_in_the_order_given() -> None:
    rows = [{"state": "healthy", "id": "a", "reason": "ok"}, {"id": "long-id", "state": None, "reason": "x\ny"}]
    assert text_table(rows, ["id", "state", "reason"]).splitlines() == [
        "id       state    reason",
        "-------  -------  ------",
        "a        healthy  ok",
        "long-id           x y",
    ]


def test_text_table_wraps_the_reason_and_never_cuts_it() -> None:
    reason = "unreachable after 3 consecutive health checks: connection refused by 127.0.0.1:9 " * 3
    rows = [{"id": "dead-port", "state": "unhealthy", "reason": reason, "since": "2025-03-01T12:00:05+00:00"}]
    lines = text_table(rows, ["id", "state", "reason", "since"], width=80).splitlines()
    assert max(len(line) for line in lines) <= 80
    assert lines[2].startswith("dead-port  unhealthy  unreachable") and lines[2].endswith("2025-03-01 12:00:05")
    reason_at = lines[0].index("reason")
    continued = [line[reason_at:].strip() for line in lines[3:]]
    assert all(line[:reason_at].strip() == "" for line in lines[3:])  # other columns stay on the first line
    assert " ".join([lines[2][reason_at:].split("  ")[0], *continued]) == reason.strip()


def test_text_table_grows_past_the_width_rather_than_squeezing_the_reason_to_nothing() -> None:
    rows = [{"id": "x" * 100, "reason": "a reason of several words that needs some room"}]
    lines = text_table(rows, ["id", "reason"], width=80).splitlines()
    assert lines[2:] == ["x" * 100 + "  a reason of several words that", " " * 102 + "needs some room"]  # 30 wide


def test_text_table_without_rows_is_its_header() -> None:
    assert text_table([], ["id", "reason"]) == "id  reason\n--  ------\n"


def test_fleet_columns_put_the_reason_before_the_long_columns() -> None:
    check = ("id", "state", "since", "failures", "latency_ms", "reason")
    assert fleet_columns(check) == ["id", "state", "failures", "reason", "since", "latency_ms"]
    status = ("id", "state", "since", "last_beat", "seconds_since", "missed", "paused", "uptime_24h", "reason")
    assert fleet_columns(status) == [
        "id",
        "state",
        "missed",
        "uptime_24h",
        "reason",
        "since",
        "last_beat",
        "seconds_since",
        "paused",
    ]


def test_the_fleet_table_artifact_puts_the_reason_before_the_long_columns() -> None:
    row = {
        "id": "a",
        "name": "Agent A",
        "probe": "http",
        "state": "degraded",
        "since": "2025-03-01T12:00:05+00:00",
        "failures": 1,
        "latency_ms": 12.5,
        "uptime_24h": "99.00%",
        "reason": "HTTP 503",
    }
    shown, description = fleet_table([row], cap=10)
    assert shown == [row]
    assert list(shown[0]) == [
        "id",
        "state",
        "failures",
        "uptime_24h",
        "reason",
        "name",
        "probe",
        "since",
        "latency_ms",
    ]
    assert description == "Fleet: 1 degraded"
