"""Incidents as a state machine: sequences of fleet states walked cycle by cycle, time injected, and
the alerts each cycle raises (kind, agent, routes) checked after every step."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from agentwatch.alerts import Alert, Incident, plan_alerts
from agentwatch.models import AgentRecord
from agentwatch.models import AgentState as S
from agentwatch.registry import Registry, parse_registry

T0 = datetime(2025, 6, 2, 12, 0, tzinfo=UTC)  # the `quiet` silence runs 12:00-13:00

FLEET = """
agents:
  - {id: host-1, labels: {team: infra}}
  - {id: web-1, labels: {team: web}, depends_on: [host-1]}
  - {id: web-2, labels: {team: web}, depends_on: [host-1]}
  - {id: solo, labels: {team: web}}
  - {id: quiet, labels: {team: web, maint: "yes"}}
alerts:
  repeat_interval: 1h
  routes:
    - {name: ops, kind: slack, url_env: OPS}
    - {name: web, kind: discord, url_env: WEB, match: {labels: {team: web}}}
  silences:
    - {match: {labels: {maint: "yes"}}, start: "2025-06-02T12:00:00Z", end: "2025-06-02T13:00:00Z", reason: upgrade}
"""

Step = tuple[float, Mapping[str, S]]  # (minutes after T0, states that change in this cycle)
Seen = list[tuple[str, str, tuple[str, ...]]]


def walk(registry: Registry, steps: list[Step]) -> tuple[list[Seen], list[list[Alert]]]:
    """Run plan_alerts once per step, keeping records and incidents as the store would."""
    records: dict[str, AgentRecord] = {}
    incidents: dict[str, Incident] = {}
    seen: list[Seen] = []
    raw: list[list[Alert]] = []
    for minutes, states in steps:
        now = T0 + timedelta(minutes=minutes)
        for agent_id, state in states.items():
            records[agent_id] = AgentRecord(
                agent_id, state=state, since=now, reason=f"{state.value} reason", paused=state is S.PAUSED
            )
        plan = plan_alerts(registry, records, incidents, now)
        for change in plan.changes:
            stored = incidents.get(change.agent_id)
            assert (stored.version if stored else 0) == change.version, "stale compare-and-swap version"
            if change.after is None:
                del incidents[change.agent_id]
            else:
                incidents[change.agent_id] = replace(change.after, version=change.version + 1)
        seen.append([(a.kind.value, a.agent_id, a.routes) for a in plan.alerts])
        raw.append(plan.alerts)
    return seen, raw


BOTH = ("ops", "web")
CASES = [
    pytest.param(
        [(0, {"solo": S.HEALTHY}), (1, {"solo": S.UNHEALTHY}), (2, {}), (3, {"solo": S.HEALTHY}), (4, {})],
        [[], [("down", "solo", BOTH)], [], [("resolved", "solo", BOTH)], []],
        id="down-then-resolved-once",
    ),
    pytest.param(
        [(0, {"solo": S.HEALTHY}), (1, {"solo": S.DEGRADED}), (2, {"solo": S.HEALTHY})],
        [[], [], []],
        id="degraded-is-not-down",
    ),
    pytest.param(
        [
            (0, {"solo": S.FAILED}),
            (1, {"solo": S.STARTING}),
            (2, {"solo": S.FAILED}),
            (3, {"solo": S.STARTING}),
            (4, {"solo": S.HEALTHY}),
        ],
        [[("down", "solo", BOTH)], [], [], [], [("resolved", "solo", BOTH)]],
        id="restart-loop-is-one-incident",
    ),
    pytest.param(
        [
            (0, {"solo": S.UNHEALTHY}),
            (59, {}),
            (60, {}),
            (119, {}),
            (120, {"solo": S.FAILED}),
            (121, {"solo": S.HEALTHY}),
        ],
        [
            [("down", "solo", BOTH)],
            [],
            [("reminder", "solo", BOTH)],
            [],
            [("reminder", "solo", BOTH)],
            [("resolved", "solo", BOTH)],
        ],
        id="reminders-every-repeat-interval",
    ),
    pytest.param(
        [
            (10, {"quiet": S.HEALTHY}),
            (11, {"quiet": S.UNHEALTHY}),
            (50, {}),
            (65, {}),
            (66, {}),
            (70, {"quiet": S.HEALTHY}),
        ],
        [[], [], [], [("down", "quiet", BOTH)], [], [("resolved", "quiet", BOTH)]],
        id="silenced-then-alerted-when-silence-ends",
    ),
    pytest.param(
        [(10, {"quiet": S.UNHEALTHY}), (20, {"quiet": S.HEALTHY}), (70, {})],
        [[], [], []],
        id="silenced-and-recovered-inside-silence",
    ),
    pytest.param(
        [(0, {"solo": S.PAUSED}), (1, {}), (300, {})],
        [[], [], []],
        id="paused-is-never-alerted",
    ),
    pytest.param(
        [
            (0, {"host-1": S.HEALTHY, "web-1": S.HEALTHY, "web-2": S.HEALTHY}),
            (1, {"host-1": S.UNHEALTHY, "web-1": S.UNHEALTHY}),
            (2, {"web-2": S.FAILED}),
            (3, {"host-1": S.HEALTHY, "web-2": S.HEALTHY}),
            (4, {"web-1": S.HEALTHY}),
        ],
        [
            [],
            [("down", "host-1", ("ops",))],
            [],
            [("resolved", "host-1", ("ops",)), ("down", "web-1", BOTH)],
            [("resolved", "web-1", BOTH)],
        ],
        id="depends-on-holds-back-dependants",
    ),
]


@pytest.mark.parametrize(("steps", "expected"), CASES)
def test_sequences(steps: list[Step], expected: list[Seen]) -> None:
    seen, _ = walk(parse_registry(FLEET), steps)
    assert seen == expected


def test_no_reminders_when_repeat_interval_is_zero() -> None:
    registry = parse_registry(FLEET.replace("repeat_interval: 1h", "repeat_interval: 0s"))
    seen, _ = walk(registry, [(0, {"solo": S.UNHEALTHY}), (600, {}), (6000, {})])
    assert seen == [[("down", "solo", BOTH)], [], []]


def test_dependency_message_names_its_dependants() -> None:
    _, alerts = walk(parse_registry(FLEET), [(1, {"host-1": S.UNHEALTHY, "web-1": S.UNHEALTHY, "web-2": S.HEALTHY})])
    [down] = alerts[0]
    assert down.agent_id == "host-1"
    assert down.dependants == (("web-1", True), ("web-2", False))


def test_late_down_says_why() -> None:
    _, alerts = walk(parse_registry(FLEET), [(11, {"quiet": S.UNHEALTHY}), (61, {})])
    [late] = alerts[1]
    assert late.since == T0 + timedelta(minutes=11)
    assert "held back" in late.note


def test_no_route_holds_back() -> None:
    registry = parse_registry(FLEET.replace("    - {name: ops, kind: slack, url_env: OPS}\n", ""))
    records = {"host-1": AgentRecord("host-1", state=S.UNHEALTHY, since=T0)}
    plan = plan_alerts(registry, records, {}, T0)
    assert plan.alerts == []
    assert plan.held_back == [("host-1", "no route matches it")]
    assert [c.after.notified_at if c.after else "-" for c in plan.changes] == [None]


def test_without_alerts_section_nothing_happens() -> None:
    registry = parse_registry("agents:\n  - {id: a-1}\n")
    plan = plan_alerts(registry, {"a-1": AgentRecord("a-1", state=S.FAILED, since=T0)}, {}, T0)
    assert plan.alerts == [] and plan.changes == []
