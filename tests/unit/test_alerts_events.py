"""Alert events: grouping per route above the threshold, message text, and no secret in any of it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from agentwatch.alerts import Alert, AlertKind, agent_message, alert_events, clean
from agentwatch.models import AgentState as S
from agentwatch.registry import Registry, parse_registry

NOW = datetime(2025, 6, 2, 12, 30, tzinfo=UTC)
SINCE = NOW - timedelta(minutes=12, seconds=5)
SECRET_URL = "https://hooks.slack.com/services/T000/B000/very-secret-token"


def fleet(n: int, threshold: int = 5) -> Registry:
    agents = "".join(f"  - {{id: a-{i}, name: Agent {i}, labels: {{team: t{i % 2}}}}}\n" for i in range(n))
    return parse_registry(
        f"agents:\n{agents}alerts:\n  group_threshold: {threshold}\n  routes:\n"
        "    - {name: ops, kind: slack, url_env: AW_TEST_SECRET_URL}\n"
        "    - {name: even, kind: webhook, url_secret: even-url, match: {labels: {team: t0}}}\n"
    )


def alerts(registry: Registry, kind: AlertKind, ids: list[str], state: S = S.UNHEALTHY) -> list[Alert]:
    assert registry.alerts is not None
    out = []
    for agent_id in ids:
        agent = registry.get(agent_id)
        assert agent is not None
        routes = registry.alerts.routes_for(agent_id, agent.labels)
        out.append(Alert(kind, agent_id, routes, state, "unhealthy after 3 consecutive failed health checks", SINCE))
    return out


@pytest.mark.parametrize(
    ("down", "expected"),
    [
        # a-0..a-(n-1); even-numbered agents also go to route "even".
        pytest.param(1, {("ops", "agentwatch.alert.down"): 1, ("even", "agentwatch.alert.down"): 1}, id="one"),
        pytest.param(5, {("ops", "agentwatch.alert.down"): 5, ("even", "agentwatch.alert.down"): 3}, id="at-threshold"),
        pytest.param(6, {("ops", "agentwatch.fleet.degraded"): 1, ("even", "agentwatch.alert.down"): 3}, id="one-over"),
        pytest.param(
            20, {("ops", "agentwatch.fleet.degraded"): 1, ("even", "agentwatch.fleet.degraded"): 1}, id="twenty"
        ),
    ],
)
def test_grouping_per_route(down: int, expected: dict[tuple[str, str], int]) -> None:
    registry = fleet(20)
    events = alert_events(alerts(registry, AlertKind.DOWN, [f"a-{i}" for i in range(down)]), registry, NOW)
    counts: dict[tuple[str, str], int] = {}
    for event in events:
        counts[(event.route, event.event)] = counts.get((event.route, event.event), 0) + 1
    assert counts == expected


def test_grouped_payload_has_counts_and_first_ids() -> None:
    registry = fleet(20)
    group = alerts(registry, AlertKind.DOWN, [f"a-{i}" for i in range(18)]) + alerts(
        registry, AlertKind.DOWN, ["a-18", "a-19"], S.FAILED
    )
    [ops] = [e for e in alert_events(group, registry, NOW, "http://ui/runs/1") if e.route == "ops"]
    assert ops.agent_id is None
    assert ops.payload["count"] == 20
    assert ops.payload["states"] == {"unhealthy": 18, "failed": 2}
    assert ops.payload["agents"] == [f"a-{i}" for i in range(10)] and ops.payload["more"] == 10
    assert ops.payload["headline"] == "🔴 20 agents are down"
    assert "agents: a-0, a-1, a-2, a-3, a-4, a-5, a-6, a-7, a-8, a-9 and 10 more" in ops.payload["text"]
    assert "states: 18 unhealthy, 2 failed" in ops.payload["text"]
    assert "monitor run: http://ui/runs/1" in ops.payload["text"]


@pytest.mark.parametrize(
    ("kind", "event", "headline"),
    [
        (AlertKind.RESOLVED, "agentwatch.fleet.recovered", "✅ 7 agents recovered"),
        (AlertKind.REMINDER, "agentwatch.fleet.reminder", "⏰ 7 agents are still down"),
    ],
)
def test_grouping_applies_to_every_kind(kind: AlertKind, event: str, headline: str) -> None:
    registry = fleet(7)
    events = [
        e for e in alert_events(alerts(registry, kind, [f"a-{i}" for i in range(7)]), registry, NOW) if e.route == "ops"
    ]
    assert [(e.event, e.payload["headline"]) for e in events] == [(event, headline)]


def test_down_message_reads_well() -> None:
    registry = fleet(1)
    [alert] = alerts(registry, AlertKind.DOWN, ["a-0"])
    alert = Alert(
        alert.kind,
        alert.agent_id,
        alert.routes,
        alert.state,
        alert.reason,
        alert.since,
        (("b-1", True), ("b-2", False)),
    )
    headline, text = agent_message(alert, registry.get("a-0"), NOW, "http://127.0.0.1:4200/runs/flow-run/x")
    assert headline == "🔴 Agent 0 (a-0) is unhealthy"
    assert "\n" not in headline
    assert text.splitlines() == [
        "reason: unhealthy after 3 consecutive failed health checks",
        "since: 2025-06-02 12:17:55 UTC (12m ago)",
        "dependants (1 down, their alerts held back): b-1 (down), b-2",
        "labels: team=t0",
        "monitor run: http://127.0.0.1:4200/runs/flow-run/x",
    ]


def test_resolved_and_reminder_headlines() -> None:
    registry = fleet(1)
    [down] = alerts(registry, AlertKind.DOWN, ["a-0"])
    resolved = Alert(AlertKind.RESOLVED, "a-0", down.routes, S.HEALTHY, down.reason, down.since)
    assert agent_message(resolved, registry.get("a-0"), NOW, None)[0] == "✅ Agent 0 (a-0) recovered after 12m down"
    reminder = Alert(
        AlertKind.REMINDER, "a-0", down.routes, S.FAILED, down.reason, NOW - timedelta(hours=4), reminders=1
    )
    assert (
        agent_message(reminder, registry.get("a-0"), NOW, None)[0] == "⏰ Agent 0 (a-0) is still down after 4h (failed)"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("GET https://bob:hunter2@api.example/x failed", "GET https://***@api.example/x failed"),
        ("body said {{name}}", "body said { {name} }"),
        ("line one\nline two", "line one line two"),
        ("x" * 400, "x" * 299 + "…"),
    ],
)
def test_clean(text: str, expected: str) -> None:
    assert clean(text) == expected


def test_no_secret_in_any_event(monkeypatch: pytest.MonkeyPatch) -> None:
    # The route's URL lives in the environment (or a Secret block) and is read only by bootstrap.
    monkeypatch.setenv("AW_TEST_SECRET_URL", SECRET_URL)
    registry = fleet(8)
    many = alerts(registry, AlertKind.DOWN, [f"a-{i}" for i in range(8)])
    one = alerts(registry, AlertKind.RESOLVED, ["a-0"])
    leaky = [Alert(AlertKind.DOWN, "a-1", ("ops",), S.FAILED, f"POST https://u:{SECRET_URL[-17:]}@x/y: 500", SINCE)]
    payloads = [e.payload for batch in (many + one + leaky, leaky) for e in alert_events(batch, registry, NOW)]
    assert any(p.get("agent") == "a-1" and "***@x/y" in p["reason"] for p in payloads)
    dumped = json.dumps(payloads, ensure_ascii=False)
    assert SECRET_URL not in dumped
    assert "very-secret-token" not in dumped
    assert "AW_TEST_SECRET_URL" not in dumped


def test_the_same_decision_is_the_same_event_id_and_a_new_one_is_not() -> None:
    # A run that posted its alerts and died before saving its incidents, and the next run that
    # decides the same again, must make one event on the server: one chat message.
    from dataclasses import replace

    from agentwatch.alerts import alert_event_id

    registry = fleet(20)
    decided = alerts(registry, AlertKind.DOWN, ["a-0", "a-1"])
    first = [alert_event_id(e) for e in alert_events(decided, registry, NOW)]
    again = [alert_event_id(e) for e in alert_events(decided, registry, NOW + timedelta(seconds=30))]
    assert first == again
    assert len(set(first)) == len(first) == 3  # a-0 to routes ops and even, a-1 to ops: all distinct
    reminder = [replace(a, kind=AlertKind.REMINDER, reminders=1) for a in decided]
    second_reminder = [replace(a, kind=AlertKind.REMINDER, reminders=2) for a in decided]
    ids = {alert_event_id(e) for e in alert_events(reminder, registry, NOW)}
    assert not ids & set(first)
    assert not ids & {alert_event_id(e) for e in alert_events(second_reminder, registry, NOW)}
    # A new incident of the same agent (it recovered and went down again) is a new alert.
    later = [replace(a, since=SINCE + timedelta(hours=1)) for a in decided]
    assert not {alert_event_id(e) for e in alert_events(later, registry, NOW)} & set(first)
    # Grouped: the same members give the same id.
    many = alerts(registry, AlertKind.DOWN, [f"a-{i}" for i in range(8)])
    assert {alert_event_id(e) for e in alert_events(many, registry, NOW)} == {
        alert_event_id(e) for e in alert_events(list(reversed(many)), registry, NOW + timedelta(minutes=1))
    }
