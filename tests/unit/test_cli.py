"""The `agentwatch` command table (cli/app.py) and what its tables print."""

from __future__ import annotations

import pytest

from cli.app import COMMANDS, build_parser
from cli.check import CHECK_COLUMNS
from cli.output import print_rows
from cli.status import STATUS_COLUMNS


def test_the_command_table_lists_every_command_once_in_help_order() -> None:
    names = [c.name for c in COMMANDS]
    assert names == [
        "validate",
        "check",
        "bootstrap",
        "reconcile",
        "shutdown",
        "heartbeat-server",
        "pause",
        "resume",
        "status",
        "uptime",
    ]
    assert build_parser().parse_args(["status", "--json"]).command == "status"


def test_the_fleet_tables_show_the_reason_before_the_long_columns() -> None:
    assert CHECK_COLUMNS == ("id", "state", "failures", "reason", "since", "latency_ms")
    assert STATUS_COLUMNS == (
        "id",
        "state",
        "missed",
        "uptime_24h",
        "reason",
        "since",
        "last_beat",
        "seconds_since",
        "paused",
    )


def test_a_long_reason_is_wrapped_not_cut(capsys: pytest.CaptureFixture[str]) -> None:
    reason = "connection refused " * 20 + "the end"
    print_rows([{"id": "a", "state": "unhealthy", "reason": reason}], as_json=False, columns=CHECK_COLUMNS)
    out = capsys.readouterr().out
    assert len(out.splitlines()) > 3  # header, rule, and the row on several lines
    words = [w for line in out.splitlines()[2:] for w in line.split()]
    assert " ".join(words) == f"a unhealthy {reason.strip()}"
