"""The watchdog automations' shape, without a server: the zombie guard (Prefect's recipe: missing
flow-run heartbeats -> Crashed) and "monitor stalled" armed by bootstrap."""

from __future__ import annotations

import uuid
from datetime import timedelta
from types import SimpleNamespace

import prefect.settings
import pytest
from prefect.client.schemas.objects import StateType
from prefect.events import Posture
from prefect.events.actions import ChangeFlowRunState
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

from agentwatch.events import MONITOR_ARMED, MONITOR_CYCLE, MONITOR_RESOURCE_ID
from agentwatch.registry import parse_registry
from deployments.automations import (
    ZOMBIE_NAME,
    configured_heartbeat,
    monitor_stalled_automation,
    wanted_automations,
    zombie_automation,
    zombie_within,
)

ALIVE = {
    "prefect.flow-run.heartbeat",
    "prefect.flow-run.Pending",
    "prefect.flow-run.Submitting",
    "prefect.flow-run.Running",
    "prefect.flow-run.Retrying",
    "prefect.flow-run.Cancelling",
}


@pytest.mark.parametrize(
    ("heartbeat", "within"),
    [(30, 75), (60, 150), (10, 75)],  # below Prefect's 30 s minimum, the engine beats every 30 s anyway
    ids=["default", "slower", "below-minimum"],
)
def test_zombie_window_is_two_and_a_half_heartbeats(heartbeat: int, within: int) -> None:
    assert zombie_within(heartbeat) == timedelta(seconds=within)
    assert zombie_automation(heartbeat).trigger.within == timedelta(seconds=within)  # type: ignore[union-attr]


def test_zombie_guard_is_one_proactive_timer_per_agentwatch_run() -> None:
    automation = zombie_automation()
    trigger = automation.trigger
    assert automation.name == ZOMBIE_NAME and "agentwatch" in automation.tags
    assert trigger.posture is Posture.Proactive and trigger.threshold == 1  # type: ignore[union-attr]
    assert trigger.for_each == {"prefect.resource.id"}  # type: ignore[union-attr]
    assert trigger.match.root == {"prefect.resource.id": "prefect.flow-run.*"}  # type: ignore[union-attr]
    # Scoped by the tag agentwatch's deployments give their runs (a related resource of role `tag`).
    assert trigger.match_related.root == {  # type: ignore[union-attr]
        "prefect.resource.role": "tag",
        "prefect.resource.id": "prefect.tag.agentwatch",
    }
    # Every sign of life (re)starts the timer, Pending included: a run killed while submitting
    # never sends a heartbeat. Any other flow-run event (a final state) settles it.
    assert trigger.after == ALIVE  # type: ignore[union-attr]
    assert trigger.expect == ALIVE | {"prefect.flow-run.*"}  # type: ignore[union-attr]


def test_zombie_guard_proposes_crashed_never_forces_it() -> None:
    [action] = zombie_automation().actions
    assert isinstance(action, ChangeFlowRunState)
    assert (action.state, action.name, action.force) == (StateType.CRASHED, "Crashed", False)
    assert action.message is not None and "no heartbeat or state change for 1m15s" in action.message


@pytest.mark.parametrize(("interval", "within"), [(30, 90), (10, 30)])
def test_monitor_stalled_is_armed_by_bootstrap_as_well_as_by_cycles(interval: int, within: int) -> None:
    trigger = monitor_stalled_automation([], timedelta(seconds=interval)).trigger
    assert trigger.posture is Posture.Proactive  # type: ignore[union-attr]
    assert trigger.match.root == {"prefect.resource.id": MONITOR_RESOURCE_ID}  # type: ignore[union-attr]
    assert trigger.after == trigger.expect == {MONITOR_CYCLE, MONITOR_ARMED}  # type: ignore[union-attr]
    assert trigger.for_each == {"prefect.resource.id"}  # type: ignore[union-attr]
    assert trigger.within == timedelta(seconds=within)  # type: ignore[union-attr]


def test_wanted_automations_include_the_zombie_guard_with_the_given_heartbeat() -> None:
    registry = parse_registry("agents: []\n")
    wanted = {a.name: a for a in wanted_automations(registry, {}, uuid.uuid4(), timedelta(seconds=30), 60)}
    assert wanted[ZOMBIE_NAME].trigger.within == timedelta(seconds=150)  # type: ignore[union-attr]
    assert "agentwatch: monitor stalled" in wanted
    assert wanted_automations(registry, {}, None, timedelta(seconds=30))[-1].trigger.within == timedelta(  # type: ignore[union-attr]
        seconds=75
    )


@pytest.mark.parametrize(
    ("user_set", "value", "expected"),
    [(False, 180, 30), (True, 45, 45), (True, 180, 180), (True, 10, 30)],
    ids=["unset-prefect-default", "user-45", "user-180", "user-below-minimum"],
)
def test_configured_heartbeat_is_the_users_setting_else_30(
    monkeypatch: pytest.MonkeyPatch, user_set: bool, value: int, expected: int
) -> None:
    flows = SimpleNamespace(heartbeat_frequency=value, model_fields_set={"heartbeat_frequency"} if user_set else set())
    monkeypatch.setattr(prefect.settings, "get_current_settings", lambda: SimpleNamespace(flows=flows))
    assert configured_heartbeat() == expected


def test_configured_heartbeat_reads_prefect_settings() -> None:
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: 45}):
        assert configured_heartbeat() == 45
