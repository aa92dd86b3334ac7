"""The registry's `alerts:` section and `depends_on`: shape, defaults, and problems named by agent and field."""

from __future__ import annotations

from datetime import timedelta

import pytest

from agentwatch.errors import RegistryError
from agentwatch.registry import Registry, parse_registry

AGENTS = """
agents:
  - id: host-1
    labels: {team: infra}
  - id: web-1
    labels: {team: web}
    depends_on: [host-1]
  - id: web-2
    labels: {team: web, tier: gold}
"""


def registry(alerts: str = "", agents: str = AGENTS) -> Registry:
    return parse_registry(agents + alerts)


def problems(alerts: str = "", agents: str = AGENTS) -> list[str]:
    with pytest.raises(RegistryError) as info:
        parse_registry(agents + alerts)
    return [str(p) for p in info.value.problems]


def test_defaults_and_routes() -> None:
    reg = registry(
        """
alerts:
  routes:
    - {name: ops, kind: slack, url_env: SLACK_OPS_URL}
    - {name: web, kind: teams, url_secret: teams-web-url, match: {labels: {team: web}}}
    - {name: gold, kind: discord, url_env: DISCORD_URL, match: {agents: [host-1], labels: {tier: gold}}}
"""
    )
    assert reg.alerts is not None
    assert reg.alerts.group_threshold == 5
    assert reg.alerts.repeat_interval == timedelta(hours=4)
    assert reg.alerts.routes_for("host-1", {"team": "infra"}) == ("ops", "gold")
    assert reg.alerts.routes_for("web-1", {"team": "web"}) == ("ops", "web")
    assert reg.alerts.routes_for("web-2", {"team": "web", "tier": "gold"}) == ("ops", "web", "gold")
    web1 = reg.get("web-1")
    assert web1 is not None and web1.depends_on == ["host-1"]


def test_no_alerts_section_is_none() -> None:
    assert registry().alerts is None


@pytest.mark.parametrize(
    ("alerts", "expected"),
    [
        pytest.param(
            "alerts: {routes: [{name: ops, kind: slack}]}",
            "registry field 'alerts.routes.0': give exactly one of url_env",
            id="no-url-source",
        ),
        pytest.param(
            "alerts: {routes: [{name: ops, kind: slack, url_env: A, url_secret: b}]}",
            "registry field 'alerts.routes.0': give exactly one of url_env",
            id="two-url-sources",
        ),
        pytest.param(
            "alerts: {routes: [{name: ops, kind: slack, url_env: 'https://hooks.slack.com/x'}]}",
            "url_env must name an environment variable",
            id="url-inline-in-url-env",
        ),
        pytest.param(
            "alerts: {routes: [{name: ops, kind: email, url_env: A}]}",
            "registry field 'alerts.routes.0.kind'",
            id="unknown-kind",
        ),
        pytest.param(
            "alerts: {routes: [{name: Ops, kind: slack, url_env: A}]}",
            "is not a slug",
            id="route-name-not-slug",
        ),
        pytest.param(
            "alerts: {routes: [{name: a, kind: slack, url_env: A}, {name: a, kind: teams, url_env: B}]}",
            "duplicate route name(s): a",
            id="duplicate-route",
        ),
        pytest.param(
            "alerts: {routes: [{name: ops, kind: slack, url_env: A, url: 'https://x'}]}",
            "registry field 'alerts.routes.0.url': unknown field",
            id="inline-url-rejected",
        ),
        pytest.param(
            "alerts: {routes: [{name: ops, kind: slack, url_env: A, match: {agents: [nope]}}]}",
            "registry field 'alerts.routes.ops.match.agents': no agent 'nope' in the registry",
            id="route-unknown-agent",
        ),
        pytest.param(
            "alerts: {silences: [{match: {agents: [web-1]}, start: '2025-01-01T00:00:00Z'}]}",
            "`start` and `end` are both needed",
            id="silence-no-end",
        ),
        pytest.param(
            "alerts: {silences: [{match: {agents: [web-1]}, start: '2025-01-02T00:00:00Z', end: '2025-01-01T00:00:00Z'}]}",
            "`end` must be after `start`",
            id="silence-end-before-start",
        ),
        pytest.param(
            "alerts: {silences: [{match: {agents: [web-1]}, cron: '0 2 * * *'}]}",
            "`cron` and a `duration` of more than 0s are both needed",
            id="silence-cron-no-duration",
        ),
        pytest.param(
            "alerts: {silences: [{match: {agents: [web-1]}, cron: '0 25 * * *', duration: 1h}]}",
            "not a cron expression",
            id="silence-bad-cron",
        ),
        pytest.param(
            "alerts: {silences: [{match: {agents: [web-1]}, cron: '0 2 * * *', duration: 1h, timezone: Mars/Base}]}",
            "unknown timezone 'Mars/Base'",
            id="silence-bad-timezone",
        ),
        pytest.param(
            "alerts: {silences: [{cron: '0 2 * * *', duration: 1h}]}",
            "registry field 'alerts.silences.0.match': Field required",
            id="silence-without-match",
        ),
        pytest.param(
            "alerts: {silences: [{match: {}, cron: '0 2 * * *', duration: 1h}]}",
            "a silence needs `match` with agents or labels",
            id="silence-empty-match",
        ),
        pytest.param(
            "alerts: {silences: [{match: {agents: [ghost]}, cron: '0 2 * * *', duration: 1h}]}",
            "registry field 'alerts.silences.0.match.agents': no agent 'ghost' in the registry",
            id="silence-unknown-agent",
        ),
        pytest.param("alerts: {group_threshold: 0}", "alerts.group_threshold", id="threshold-zero"),
        pytest.param("alerts: {repeat_interval: soon}", "alerts.repeat_interval", id="bad-repeat"),
    ],
)
def test_alerts_problems(alerts: str, expected: str) -> None:
    found = problems(alerts)
    assert any(expected in p for p in found), found


@pytest.mark.parametrize(
    ("agents", "expected"),
    [
        pytest.param(
            "agents:\n  - {id: a-1, depends_on: [a-1]}\n",
            ["agent 'a-1' field 'depends_on': an agent cannot depend on itself"],
            id="self",
        ),
        pytest.param(
            "agents:\n  - {id: a-1, depends_on: [b-9]}\n",
            ["agent 'a-1' field 'depends_on': no agent 'b-9' in the registry"],
            id="unknown",
        ),
        pytest.param(
            "agents:\n  - {id: a-1, depends_on: [b-1]}\n  - {id: b-1, depends_on: [c-1]}\n  - {id: c-1, depends_on: [a-1]}\n",
            ["agent 'a-1' field 'depends_on': dependencies form a loop: a-1 -> b-1 -> c-1 -> a-1"],
            id="loop",
        ),
        pytest.param(
            "agents:\n  - {id: a-1, depends_on: [b-1, c-1]}\n  - {id: b-1}\n  - {id: c-1, depends_on: [b-1]}\n",
            [],
            id="diamond-is-fine",
        ),
    ],
)
def test_depends_on(agents: str, expected: list[str]) -> None:
    if not expected:
        parse_registry(agents)
        return
    assert problems("", agents) == expected


def test_every_problem_at_once() -> None:
    found = problems(
        "alerts: {routes: [{name: ops, kind: slack}], silences: [{match: {agents: [ghost]}, cron: '* * * * *', duration: 1m}]}",
        "agents:\n  - {id: a-1, depends_on: [zz]}\n",
    )
    # Rejected whole, with every problem named: the model's first, then the ids nobody defines.
    assert found == [
        "registry field 'alerts.routes.0': give exactly one of url_env (an environment variable) or url_secret (a Secret block)",
        "agent 'a-1' field 'depends_on': no agent 'zz' in the registry",
        "registry field 'alerts.silences.0.match.agents': no agent 'ghost' in the registry",
    ]


def test_references_are_named_alike_whether_or_not_the_rest_validated() -> None:
    alerts = "alerts: {routes: [{name: ops, kind: KIND, url_env: X, match: {agents: [ghost]}}]}"
    agents = "agents:\n  - {id: a-1, depends_on: [a-2]}\n  - {id: a-2, depends_on: [a-1]TIMEOUT}\n"
    references = [
        "registry field 'alerts.routes.ops.match.agents': no agent 'ghost' in the registry",
        "agent 'a-1' field 'depends_on': dependencies form a loop: a-1 -> a-2 -> a-1",
    ]
    assert problems(alerts.replace("KIND", "slack"), agents.replace("TIMEOUT", "")) == references
    assert problems(alerts.replace("KIND", "pager"), agents.replace("TIMEOUT", ", timeout: nope")) == [
        "agent 'a-2' field 'timeout': not a duration: 'nope' (use e.g. 5s, 2m, 1h or plain seconds)",
        "registry field 'alerts.routes.0.kind': Input should be 'slack', 'teams', 'discord' or 'webhook'",
        *references,
    ]
