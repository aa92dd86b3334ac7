"""The domain half of a monitor cycle: which agents are due, folding results, fleet rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from agentwatch.cycle import apply_results, batched, fleet_rows, select_due
from agentwatch.models import AgentRecord, AgentState, ProbeResult
from agentwatch.registry import validate_registry
from agentwatch.render import fleet_summary, transition_markdown

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def registry(**extra):
    return validate_registry(
        {
            "agents": [
                {"id": "a", "probe": {"command": "true"}, "interval": "30s", **extra},
                {"id": "b", "probe": {"command": "true"}},
                {"id": "c", "transport": "stdio"},
            ]
        }
    )


@pytest.mark.parametrize(
    ("records", "force", "due"),
    [
        pytest.param({}, False, ["a", "b", "c"], id="never-checked-all-due"),
        pytest.param(
            {"a": AgentRecord("a", last_checked=T0, next_check=T0 + timedelta(seconds=30))},
            False,
            ["b", "c"],
            id="interval-not-run-out",
        ),
        pytest.param(
            {"a": AgentRecord("a", last_checked=T0, next_check=T0 + timedelta(seconds=30))},
            True,
            ["a", "b", "c"],
            id="forced",
        ),
        pytest.param(
            {"b": AgentRecord("b", state=AgentState.PAUSED, paused=True)},
            True,
            ["a", "c"],
            id="paused-never-probed-even-forced",
        ),
        pytest.param(
            {"b": AgentRecord("b", state=AgentState.PAUSED, paused=True, paused_until=T0)},
            False,
            ["a", "b", "c"],
            id="expired-pause-due",
        ),
    ],
)
def test_select_due(records: dict, force: bool, due: list[str]) -> None:
    assert [a.id for a in select_due(registry(), records, T0 + timedelta(seconds=1), force=force)] == due


@pytest.mark.parametrize(
    ("n", "size", "shape"),
    [(0, 10, []), (5, 10, [5]), (10, 10, [10]), (11, 10, [6, 5]), (201, 100, [67, 67, 67]), (3, 1, [1, 1, 1])],
)
def test_batched_spreads_evenly_within_the_size(n: int, size: int, shape: list[int]) -> None:
    agents = list(registry().agents) * (n // 3 + 1)
    batches = batched(agents[:n], size)
    assert [len(b) for b in batches] == shape
    assert [a for b in batches for a in b] == agents[:n]


def test_apply_results_returns_only_changes_with_transitions() -> None:
    reg = registry()
    healthy = AgentRecord("b", state=AgentState.HEALTHY, since=T0, first_seen=T0, version=3)
    results = [
        ProbeResult("a", ok=False, reason="boom"),
        ProbeResult("b", ok=True, latency_ms=1.0),
        ProbeResult("ghost", ok=True),  # left the registry mid-cycle: ignored
    ]
    changes = apply_results(reg, {"b": healthy}, results, T0)
    assert [(r.agent_id, r.state, t and t.to_state) for r, t in changes] == [
        ("a", AgentState.DEGRADED, AgentState.DEGRADED),
        ("b", AgentState.HEALTHY, None),  # counters and last_checked moved, state did not
    ]
    assert changes[1][0].version == 3  # written back at the version it was read at


def test_fleet_rows_and_summary() -> None:
    reg = registry()
    records = {"a": AgentRecord("a", state=AgentState.UNHEALTHY, since=T0, failures=3, latency_ms=12.345, reason="x")}
    rows = fleet_rows(reg, records)
    assert rows[0] == {
        "id": "a",
        "name": "a",
        "probe": "command",
        "state": "unhealthy",
        "since": "2026-01-01T00:00:00+00:00",
        "failures": 3,
        "latency_ms": 12.3,
        "reason": "x",
    }
    assert rows[1]["state"] == "unknown" and rows[1]["reason"] == "not checked yet"
    assert fleet_summary(rows) == "2 unknown, 1 unhealthy"
    assert fleet_summary([]) == "no agents"


def test_transition_markdown_escapes_table_cells() -> None:
    reg = validate_registry(
        {"agents": [{"id": "web-1", "name": "Web", "labels": {"team": "infra"}, "probe": {"command": "true"}}]}
    )
    changes = apply_results(reg, {}, [ProbeResult("web-1", ok=False, reason="exit code 1: a|b\nc")], T0)
    _, transition = changes[0]
    assert transition is not None
    text = transition_markdown(transition, reg.get("web-1"), "http://127.0.0.1:4200/runs/flow-run/x")
    assert "Web: unknown → degraded" in text
    assert "a\\|b c" in text
    assert "team=infra" in text
    assert "http://127.0.0.1:4200/runs/flow-run/x" in text
