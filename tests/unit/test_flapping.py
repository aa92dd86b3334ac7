"""Flapping: the pure decision over transition times (tables, time injected), then whole sequences
walked cycle by cycle through flap_states and plan_alerts as the alert step runs them, with the
store's incident and flap rows kept as it would keep them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agentwatch.alerts import AlertPlan, Incident, alert_events, plan_alerts
from agentwatch.alerts.step import decide_alerts, record_alerts
from agentwatch.errors import RegistryError
from agentwatch.flapping import (
    FlapChange,
    FlapMemory,
    FlapPhase,
    Flip,
    assess,
    change_times,
    flap_lookback,
    flap_states,
)
from agentwatch.models import AgentRecord, Transition
from agentwatch.models import AgentState as S
from agentwatch.registry import Registry, parse_registry
from agentwatch.store import StateStore

T0 = datetime(2025, 6, 2, 12, 0, tzinfo=UTC)
M = timedelta(minutes=1)


def t(minutes: float) -> datetime:
    return T0 + minutes * M


# --- the decision ---------------------------------------------------------------------------

STEADY, FLAPPING, SETTLED = FlapPhase.STEADY, FlapPhase.FLAPPING, FlapPhase.SETTLED
BURST = [0, 1, 2, 3, 4, 5]
ASSESS = [
    # (id, change minutes, now minute, remembered episode since (minute) or None, phase, since, changes)
    ("5 changes in 10m: not yet", [0, 1, 2, 3, 4], 4, None, STEADY, None, 0),
    ("the 6th change within 10m starts it", BURST, 5, None, FLAPPING, 5, 6),
    ("6 changes a little over 10m apart: not flapping", [0, 2, 4, 6, 8, 10], 10, None, STEADY, None, 0),
    ("6 changes just under 10m apart", [0, 2, 4, 6, 8, 9.9], 10, None, FLAPPING, 9.9, 6),
    ("it starts at the first change past the threshold", [*BURST, 6, 7], 7, None, FLAPPING, 5, 8),
    ("a burst over and done before anyone looked", BURST, 15, None, STEADY, None, 0),
    ("an old burst, a quiet window, a few changes", [*BURST, 30, 31], 31, None, STEADY, None, 0),
    ("an old burst, a quiet window, a new burst", [*BURST, *range(30, 37)], 36, None, FLAPPING, 35, 7),
    ("remembered, changed 9m ago: still flapping", [*BURST, 8], 17, 5, FLAPPING, 5, 6),
    ("remembered, no change for 10m: settled", [*BURST, 8], 18, 5, SETTLED, 5, 6),
    ("remembered, nothing in the read window: settled", [], 40, 5, SETTLED, 5, 6),
]


@pytest.mark.parametrize(
    ("changes", "now", "remembered", "phase", "since", "count"), [c[1:] for c in ASSESS], ids=[c[0] for c in ASSESS]
)
def test_assess(
    changes: list[float], now: float, remembered: float | None, phase: FlapPhase, since: float | None, count: int
) -> None:
    memory = FlapMemory("a", t(remembered), 6, notified_at=t(remembered), version=1) if remembered is not None else None
    state = assess("a", [t(m) for m in changes], memory, t(now))
    assert state.phase is phase
    assert state.since == (t(since) if since is not None else None)
    assert state.changes == count


def test_threshold_zero_turns_detection_off_and_settles_an_episode() -> None:
    times = [t(m) for m in range(10)]
    assert assess("a", times, None, t(9), threshold=0).phase is FlapPhase.STEADY
    memory = FlapMemory("a", t(5), 6, t(5), 1)
    assert assess("a", times, memory, t(9), threshold=0).phase is FlapPhase.SETTLED


def test_pauses_and_listing_do_not_count_as_changes() -> None:
    changes: list[Flip] = [
        (t(0), S.UNKNOWN, S.HEALTHY),
        (t(1), S.HEALTHY, S.PAUSED),
        (t(2), S.PAUSED, S.UNKNOWN),
        (t(3), S.UNKNOWN, S.UNMANAGED),
        (t(4), S.HEALTHY, S.DEGRADED),
    ]
    assert change_times(changes) == [t(0), t(4)]


def test_policy_fields_defaults_bounds_and_lookback() -> None:
    registry = parse_registry(
        "defaults: {flap_window: 30m}\nagents:\n  - {id: a}\n  - {id: b, flap_threshold: 2, flap_window: 1h}\n"
    )
    a, b = registry.agents
    assert (a.policy.flap_threshold, a.policy.flap_window) == (5, timedelta(minutes=30))
    assert (b.policy.flap_threshold, b.policy.flap_window) == (2, timedelta(hours=1))
    assert flap_lookback(registry) == timedelta(hours=1)
    assert parse_registry("agents: [{id: a}]").agents[0].policy.flap_window == timedelta(minutes=10)
    for bad, says in [
        ("flap_window: 30s", "flap_window must be at least 1m and at most 24h"),
        ("flap_window: 2d", "flap_window must be at least 1m and at most 24h"),
        ("flap_threshold: -1", "greater than or equal to 0"),
        ("flap_threshold: 1001", "less than or equal to 1000"),
    ]:
        with pytest.raises(RegistryError) as caught:
            parse_registry(f"agents: [{{id: a, {bad}}}]")
        assert says in str(caught.value) and "'a'" in str(caught.value)


# --- sequences through the alert step --------------------------------------------------------

FLEET = """
agents:
  - {id: flappy}
  - {id: other}
  - {id: quiet, labels: {maint: "yes"}}
  - {id: hushed, labels: {maint: "long"}}
  - {id: loose, flap_threshold: 0}
alerts:
  repeat_interval: 1h
  routes:
    - {name: ops, kind: slack, url_env: OPS}
  silences:
    - {match: {labels: {maint: "yes"}}, start: "2025-06-02T12:00:00Z", end: "2025-06-02T12:07:30Z", reason: upgrade}
    - {match: {labels: {maint: "long"}}, start: "2025-06-02T12:00:00Z", end: "2025-06-02T13:00:00Z", reason: move}
"""


class AlertStep:
    """The alert step over an in-memory store: records, the transition log, incidents, flap rows."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.records: dict[str, AgentRecord] = {}
        self.log: dict[str, list[Flip]] = {}
        self.incidents: dict[str, Incident] = {}
        self.flaps: dict[str, FlapMemory] = {}

    def cycle(self, minute: float, states: Mapping[str, S]) -> AlertPlan:
        now = t(minute)
        changed = set()
        for agent_id, state in states.items():
            old = self.records.get(agent_id)
            if old is None or old.state is not state:
                self.log.setdefault(agent_id, []).append((now, old.state if old else S.UNKNOWN, state))
                self.records[agent_id] = AgentRecord(agent_id, state=state, since=now, reason=f"{state.value} reason")
                changed.add(agent_id)
        # What tasks/alerting.py reads: the agents with new rows or an open incident, their log
        # over the longest flap_window, and the flap rows.
        only = changed | set(self.incidents)
        since = now - flap_lookback(self.registry)
        recent = {a: [c for c in self.log.get(a, []) if c[0] >= since] for a in only | set(self.flaps)}
        flapping = flap_states(self.registry, recent, self.flaps, now, only)
        plan = plan_alerts(self.registry, self.records, self.incidents, now, only=only, flapping=flapping)
        for change in plan.changes:
            stored = self.incidents.get(change.agent_id)
            assert (stored.version if stored else 0) == change.version, "stale incident version"
            if change.after is None:
                del self.incidents[change.agent_id]
            else:
                self.incidents[change.agent_id] = replace(change.after, version=change.version + 1)
        for flap in plan.flap_changes:
            memory = self.flaps.get(flap.agent_id)
            assert (memory.version if memory else 0) == flap.version, "stale flap version"
            if flap.after is None:
                del self.flaps[flap.agent_id]
            else:
                self.flaps[flap.agent_id] = replace(flap.after, version=flap.version + 1)
        return plan


def walk(steps: list[tuple[float, Mapping[str, S]]], agent: str = "flappy") -> list[tuple[float, list[str]]]:
    """(minute, the alerts of that cycle as `kind:state`) for every step that alerted."""
    step = AlertStep(parse_registry(FLEET))
    seen = []
    for minute, states in steps:
        plan = step.cycle(minute, states)
        kinds = [f"{a.kind.value}:{a.state.value}" for a in plan.alerts if a.agent_id == agent]
        if kinds:
            seen.append((minute, kinds))
    return seen


U, H = S.UNHEALTHY, S.HEALTHY


def flips(agent: str, start: S, first: int, last: int) -> list[tuple[float, Mapping[str, S]]]:
    """One change a minute from `first` to `last`, starting with `start`."""
    other = U if start is H else H
    return [(m, {agent: start if (m - first) % 2 == 0 else other}) for m in range(first, last + 1)]


def quiet(last: int, until: int) -> list[tuple[float, Mapping[str, S]]]:
    return [(m, {}) for m in range(last + 1, until + 1)]


def test_flapping_starts_at_the_6th_change_holds_alerts_then_settles_once() -> None:
    # Changes at minutes 0-7 (healthy, unhealthy, ... unhealthy), then it stays unhealthy.
    steps = flips("flappy", H, 0, 7) + quiet(7, 30) + [(31, {"flappy": H})] + quiet(31, 40)
    assert walk(steps) == [
        (1, ["down:unhealthy"]),  # changes 1-5 alert as usual
        (2, ["resolved:healthy"]),
        (3, ["down:unhealthy"]),
        (4, ["resolved:healthy"]),
        (5, ["flapping:unhealthy"]),  # the 6th change within 10m: one alert, and no `down`
        # minutes 6-7: two more changes, nothing sent
        (17, ["settled:unhealthy"]),  # 10 minutes without a change: one message, its state then
        (31, ["resolved:healthy"]),  # it settled down, so its recovery is told
    ]


def test_settling_healthy_is_one_message_and_nothing_after() -> None:
    steps = flips("flappy", H, 0, 8) + quiet(8, 30)
    assert walk(steps) == [
        (1, ["down:unhealthy"]),
        (2, ["resolved:healthy"]),
        (3, ["down:unhealthy"]),
        (4, ["resolved:healthy"]),
        (5, ["flapping:unhealthy"]),
        (18, ["settled:healthy"]),
    ]


def test_each_episode_alerts_once_and_a_new_one_alerts_again() -> None:
    steps = flips("flappy", H, 0, 8) + quiet(8, 20) + flips("flappy", U, 21, 27) + quiet(27, 40)
    seen = walk(steps)
    assert [kinds for _, kinds in seen].count(["flapping:unhealthy"]) == 1
    assert [m for m, kinds in seen if kinds[0].startswith(("flapping", "settled"))] == [5, 18, 26, 37]


def test_a_held_flapping_alert_goes_out_when_the_silence_ends() -> None:
    # `quiet` is silenced until 12:07:30: its flapping alert waits for that, then goes out.
    steps = flips("quiet", H, 0, 9) + quiet(9, 25)
    assert walk(steps, "quiet") == [(8, ["flapping:healthy"]), (19, ["settled:unhealthy"])]


def test_no_settled_message_when_nobody_was_told_it_flapped() -> None:
    # Silenced (until 13:00) for the whole episode: no flapping alert, so no settled one; alerts
    # resume as usual: the incident it opened while silenced alerts late, once the silence is over.
    steps = flips("hushed", H, 0, 7) + quiet(7, 61)
    assert walk(steps, "hushed") == [(60, ["down:unhealthy"])]


def test_flap_threshold_zero_never_flaps() -> None:
    steps = flips("loose", H, 0, 9)
    assert [k for _, k in walk(steps, "loose")] == [["down:unhealthy"], ["resolved:healthy"]] * 4 + [["down:unhealthy"]]


def test_other_agents_are_decided_as_before_while_one_flaps() -> None:
    steps = flips("flappy", H, 0, 8)
    steps[6] = (6, {**steps[6][1], "other": U})
    assert walk(steps, "other") == [(6, ["down:unhealthy"])]


def test_held_back_says_why() -> None:
    step = AlertStep(parse_registry(FLEET))
    for minute, states in flips("flappy", H, 0, 6):
        step.cycle(minute, states)
    plan = step.cycle(7, {"flappy": U})
    assert plan.alerts == []
    assert plan.held_back == [("flappy", "flapping since 2025-06-02 12:05 UTC")]


def test_the_flapping_and_settled_events_and_messages() -> None:
    registry = parse_registry(FLEET)
    step = AlertStep(registry)
    plans = [step.cycle(m, s) for m, s in flips("flappy", H, 0, 5)]
    [flapping] = plans[-1].alerts
    [event] = alert_events([flapping], registry, t(5))
    assert event.event == "agentwatch.alert.flapping"
    assert event.payload["headline"] == "🔁 flappy is flapping: 6 state changes within 10m"
    assert "state now: unhealthy" in event.payload["text"]
    assert "held until it has been stable for 10m" in event.payload["text"]
    plans = [step.cycle(m, {}) for m in range(6, 16)]
    [settled] = plans[-1].alerts
    [event] = alert_events([settled], registry, t(15))
    assert event.event == "agentwatch.alert.settled"
    assert event.payload["headline"] == "🔂 flappy settled unhealthy after 10m of flapping"
    many = [replace(flapping, agent_id=f"a-{i}") for i in range(6)]
    [fleet] = alert_events(many, registry, t(5))
    assert (fleet.event, fleet.payload["headline"]) == ("agentwatch.fleet.flapping", "🔁 6 agents are flapping")


# --- the store -------------------------------------------------------------------------------


async def test_flap_rows_compare_and_swap_and_recent_changes(tmp_path: Path) -> None:
    async with StateStore(f"sqlite:///{tmp_path}/state.db") as store:
        began = FlapMemory("a", t(5), 6)
        assert await store.save_flaps([FlapChange("a", 0, began)]) == ["a"]
        assert await store.save_flaps([FlapChange("a", 0, began)]) == []  # another run began it first
        told = replace(began, notified_at=t(5))
        assert await store.save_flaps([FlapChange("a", 1, told)]) == ["a"]
        assert await store.load_flaps() == {"a": replace(told, version=2)}
        assert await store.save_flaps([FlapChange("a", 1, None)]) == []  # stale
        assert await store.save_flaps([FlapChange("b", 0, FlapMemory("b", t(1), 7))]) == ["b"]
        assert await store.drop_missing_flaps(["a"]) == ["b"]
        assert await store.save_flaps([FlapChange("a", 2, None)]) == ["a"]
        assert await store.load_flaps() == {}

        record = AgentRecord("a")
        for minute, state in [(0, H), (1, U), (2, H), (20, U)]:
            new = record.evolve(state=state, since=t(minute))
            [record] = (await store.commit([(new, Transition("a", record.state, state, "", 0, t(minute)))])).saved
        assert await store.recent_changes(["a", "b"], t(1)) == {"a": [(t(1), H, U), (t(2), U, H), (t(20), H, U)]}
        assert await store.recent_changes([], t(0)) == {}


async def test_the_alert_steps_reads_and_writes_through_a_real_store(tmp_path: Path) -> None:
    """The alert step (agentwatch.alerts.step, what tasks/alerting.py runs) for flapping, against SQLite: one flapping alert at the
    6th change, nothing while it flaps, one settled message after a quiet window."""
    registry = parse_registry(FLEET)
    seen: list[tuple[int, str]] = []
    async with StateStore(f"sqlite:///{tmp_path}/state.db") as store:
        record = AgentRecord("flappy")
        for minute in range(0, 20):
            now = t(minute)
            changed = set()
            if minute <= 7:  # a change a minute: healthy, unhealthy, ... unhealthy
                state = H if minute % 2 == 0 else U
                new = record.evolve(state=state, since=now)
                [record] = (await store.commit([(new, Transition("flappy", record.state, state, "", 0, now))])).saved
                changed.add("flappy")
            records = await store.load()
            # Publish what was committed (the alert step consumes published rows), then the step itself.
            claimed = await store.claim_unpublished("test", now=now, lease=timedelta(minutes=1), max_costly=100)
            await store.mark_published("test", [r.id for r in claimed], now)
            decided = await decide_alerts(store, registry, records, now)
            assert {r for r in decided.rows} == {r.id for r in claimed}
            assert await record_alerts(store, decided, now) == ()
            assert await store.unalerted() == []
            assert decided.plan is not None
            plan = decided.plan
            seen.extend((minute, f"{a.kind.value}:{a.state.value}") for a in plan.alerts)
        assert await store.load_flaps() == {}
    assert seen == [
        (1, "down:unhealthy"),
        (2, "resolved:healthy"),
        (3, "down:unhealthy"),
        (4, "resolved:healthy"),
        (5, "flapping:unhealthy"),
        (17, "settled:unhealthy"),
    ]
