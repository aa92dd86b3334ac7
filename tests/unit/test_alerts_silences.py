"""Silences: one-off windows, recurring cron windows (in their own timezone), matched by agent or label."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from agentwatch.alerts import AlertsConfig, Silence


def silence(**fields: object) -> Silence:
    return Silence.model_validate({"match": {"agents": ["web-1"]}, **fields})


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


WINDOW = {"start": "2025-06-01T22:00:00Z", "end": "2025-06-02T02:00:00Z"}
NIGHTLY = {"cron": "0 2 * * *", "duration": "1h"}
BERLIN = {"cron": "0 2 * * *", "duration": "30m", "timezone": "Europe/Berlin"}
WEEKEND = {"cron": "0 0 * * sat", "duration": "48h"}


@pytest.mark.parametrize(
    ("window", "now", "active"),
    [
        pytest.param(WINDOW, "2025-06-01T21:59:59", False, id="window-before"),
        pytest.param(WINDOW, "2025-06-01T22:00:00", True, id="window-start-inclusive"),
        pytest.param(WINDOW, "2025-06-02T01:59:59", True, id="window-inside"),
        pytest.param(WINDOW, "2025-06-02T02:00:00", False, id="window-end-exclusive"),
        pytest.param(NIGHTLY, "2025-06-03T01:59:59", False, id="cron-before-tick"),
        pytest.param(NIGHTLY, "2025-06-03T02:00:00", True, id="cron-at-tick"),
        pytest.param(NIGHTLY, "2025-06-03T02:59:59", True, id="cron-inside"),
        pytest.param(NIGHTLY, "2025-06-03T03:00:00", False, id="cron-after-duration"),
        # 02:00 in Berlin is 00:00 UTC in summer (CEST) and 01:00 UTC in winter (CET).
        pytest.param(BERLIN, "2025-06-03T00:10:00", True, id="cron-tz-summer"),
        pytest.param(BERLIN, "2025-06-03T01:10:00", False, id="cron-tz-summer-utc-hour"),
        pytest.param(BERLIN, "2025-01-03T01:10:00", True, id="cron-tz-winter"),
        pytest.param(WEEKEND, "2025-06-07T12:00:00", True, id="weekend-saturday"),
        pytest.param(WEEKEND, "2025-06-08T23:59:00", True, id="weekend-sunday-night"),
        pytest.param(WEEKEND, "2025-06-09T00:00:00", False, id="weekend-monday"),
        pytest.param(WEEKEND, "2025-06-06T23:59:00", False, id="weekend-friday"),
    ],
)
def test_active(window: dict[str, str], now: str, active: bool) -> None:
    assert silence(**window).active(utc(now)) is active


def test_naive_start_and_end_are_utc() -> None:
    s = silence(start="2025-06-01 22:00", end="2025-06-01 23:00")
    assert s.start == utc("2025-06-01T22:00:00")
    assert s.active(utc("2025-06-01T22:30:00"))


@pytest.mark.parametrize(
    ("match", "agent", "labels", "silenced"),
    [
        pytest.param({"agents": ["web-1"]}, "web-1", {}, True, id="by-id"),
        pytest.param({"agents": ["web-1"]}, "web-2", {}, False, id="other-id"),
        pytest.param({"labels": {"team": "web"}}, "web-2", {"team": "web", "x": "y"}, True, id="by-label"),
        pytest.param({"labels": {"team": "web", "env": "prod"}}, "web-2", {"team": "web"}, False, id="all-labels"),
        pytest.param({"agents": ["a-1"], "labels": {"team": "web"}}, "web-2", {"team": "web"}, True, id="id-or-label"),
    ],
)
def test_silence_for_matches_agents_and_labels(
    match: dict[str, object], agent: str, labels: dict[str, str], silenced: bool
) -> None:
    config = AlertsConfig.model_validate({"silences": [{"match": match, **WINDOW, "reason": "db upgrade"}]})
    found = config.silence_for(agent, labels, utc("2025-06-01T23:00:00"))
    assert (found is not None) is silenced
    assert config.silence_for(agent, labels, utc("2025-06-02T03:00:00")) is None
