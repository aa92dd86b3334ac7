"""Reconcile planning on values: containers, records and budgets in, actions out; time injected."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agentwatch.docker.budget import BudgetRules, RestartBudget
from agentwatch.docker.labels import with_label_agents
from agentwatch.docker.reconcile import Action, Kind, ReconcileOptions, plan_reconcile
from agentwatch.docker.shutdown import plan_shutdown
from agentwatch.docker.state import ContainerInfo
from agentwatch.models import AgentRecord
from agentwatch.models import AgentState as S
from agentwatch.registry import Registry, parse_registry

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
RULES = BudgetRules(max_restarts=2, window=timedelta(minutes=10), backoff=timedelta(seconds=10))
MANAGED = {"agentwatch.managed": "true"}


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def box(name: str, status: str = "running", *, labels: Mapping[str, str] = MANAGED, **fields: Any) -> ContainerInfo:
    fields.setdefault("created", at(-3600))
    fields.setdefault("started_at", at(-3600))
    if status != "running":
        fields.setdefault("finished_at", at(-5))
    return ContainerInfo(id=name.ljust(64, "0"), name=name, status=status, labels=dict(labels), **fields)


def fleet(*names: str) -> Registry:
    agents = "\n".join(f"  - id: {n}\n    probe: {{docker: {{container: {n}}}}}" for n in names)
    return parse_registry(f"agents:\n{agents}\n" if names else "agents: []\n")


def plan(
    registry: Registry,
    listed: list[ContainerInfo],
    *,
    records: Mapping[str, AgentRecord] | None = None,
    budgets: Mapping[str, RestartBudget] | None = None,
    now: float = 0,
    **options: Any,
) -> list[Action]:
    opts = ReconcileOptions(rules=RULES, **options)
    return plan_reconcile(registry, listed, {}, records or {}, budgets or {}, opts, at(now))


def kinds(actions: list[Action]) -> list[tuple[str, str | None]]:
    return [(a.kind.value, a.agent_id or (a.container.name if a.container else None)) for a in actions]


def record(agent_id: str, state: S, reason: str = "", since: float = -60, **fields: Any) -> AgentRecord:
    return AgentRecord(agent_id, state=state, reason=reason, since=at(since), version=1, **fields)


CASES = [
    pytest.param([box("a", health="healthy")], {}, [], id="healthy-nothing-to-do"),
    pytest.param([box("a", "exited", exit_code=0)], {}, [("record", "a")], id="exit-0-recorded-not-restarted"),
    pytest.param([box("a", "exited", exit_code=3)], {}, [("record", "a"), ("start", "a")], id="exit-3-started"),
    pytest.param(
        [box("a", "exited", exit_code=137, oom_killed=True)], {}, [("record", "a"), ("start", "a")], id="oom-started"
    ),
    pytest.param([box("a", health="unhealthy")], {}, [("restart", "a")], id="unhealthy-restarted"),
    pytest.param([box("a", health="starting")], {}, [], id="starting-left"),
    pytest.param([box("a", "restarting")], {}, [], id="engine-restart-policy-left-alone"),
    pytest.param([], {}, [("record", "a"), ("leave", "a")], id="missing-recorded-failed"),
    pytest.param(
        [box("a", "exited", exit_code=3, labels={})], {}, [("record", "a"), ("leave", "a")], id="unmanaged-not-touched"
    ),
    pytest.param(
        [box("a")], {"a": record("a", S.UNHEALTHY, "HTTP 500")}, [("restart", "a")], id="unhealthy-by-own-probe"
    ),
    pytest.param([box("a")], {"a": record("a", S.FAILED, "exited with code 1")}, [], id="stale-failed-record"),
    pytest.param(
        [box("a", "exited", exit_code=143, finished_at=at(-70))],
        {"a": record("a", S.STOPPED, "stopped by shutdown", since=-60)},
        [],
        id="recorded-stop-stays-stopped",
    ),
    pytest.param(
        [box("a", "exited", exit_code=143, finished_at=at(-10))],
        {"a": record("a", S.STOPPED, "stopped by shutdown", since=-60)},
        [("record", "a"), ("start", "a")],
        id="crash-after-recorded-stop",
    ),
    pytest.param(
        [box("a", "exited", exit_code=3)],
        {"a": record("a", S.FAILED, "exited with code 3")},
        [("start", "a")],
        id="already-recorded",
    ),
    pytest.param(
        [box("a", "exited", exit_code=3)], {"a": record("a", S.PAUSED, paused=True)}, [("leave", "a")], id="paused"
    ),
]


@pytest.mark.parametrize(("listed", "records", "expected"), CASES)
def test_agent_plans(listed: list[ContainerInfo], records: dict[str, AgentRecord], expected: list[tuple]) -> None:
    assert kinds(plan(fleet("a"), listed, records=records)) == expected


def test_restart_reason_and_state() -> None:
    actions = plan(fleet("a"), [box("a", "exited", exit_code=3)])
    recorded, started = actions
    assert (recorded.state, recorded.reason) == (S.FAILED, "exited with code 3")
    assert started.state is S.STARTING
    assert started.budget is not None and started.budget.restarts == (at(0),)
    assert "restart 1 of 2" in started.reason


def test_restart_unhealthy_off_only_records() -> None:
    assert kinds(plan(fleet("a"), [box("a", "exited", exit_code=3)], restart_unhealthy=False)) == [("record", "a")]


def test_backoff_defers_then_budget_runs_out() -> None:
    crashed = [box("a", "exited", exit_code=3)]
    once = {"a": RestartBudget("a", restarts=(at(0),), version=1)}
    assert kinds(plan(fleet("a"), crashed, budgets=once, now=5)) == [("record", "a"), ("defer", "a")]
    assert kinds(plan(fleet("a"), crashed, budgets=once, now=10)) == [("record", "a"), ("start", "a")]
    twice = {"a": RestartBudget("a", restarts=(at(0), at(10)), version=2)}
    (spent,) = plan(fleet("a"), crashed, budgets=twice, now=60)
    assert spent.kind is Kind.EXHAUSTED and spent.notify
    assert spent.state is S.FAILED and spent.reason.startswith("restart budget exhausted")
    assert "exited with code 3" in spent.reason
    noted = {"a": RestartBudget("a", restarts=(at(0), at(10)), exhausted_at=at(60), version=3)}
    (again,) = plan(fleet("a"), crashed, budgets=noted, now=70)
    assert again.kind is Kind.EXHAUSTED and not again.notify


def test_a_due_retry_nobody_wants_is_forgotten() -> None:
    due = {"a": RestartBudget("a", restarts=(at(0),), retry_at=at(10), version=1)}
    (forget,) = plan(fleet("a"), [box("a", "exited", exit_code=0)], budgets=due, now=20)[-1:]
    assert forget.kind is Kind.LEAVE and forget.budget is not None
    assert forget.budget.retry_at is None and forget.budget.restarts == (at(0),)
    assert kinds(plan(fleet("a"), [box("a", "exited", exit_code=0)], budgets=due, now=5)) == [("record", "a")]


def test_clean_run_resets_budget() -> None:
    used = {"a": RestartBudget("a", restarts=(at(0),), version=1)}
    healthy = [box("a", health="healthy", started_at=at(0))]
    assert kinds(plan(fleet("a"), healthy, budgets=used, now=60)) == []
    assert kinds(plan(fleet("a"), healthy, budgets=used, now=121)) == [("reset", "a")]


def test_orphans() -> None:
    listed = [
        box("old-orphan", created=at(-120)),
        box("young-orphan", created=at(-5)),
        box("other", labels={"agentwatch.agent": "nobody-knows"}),  # labelled, not managed: never touched
        box("a", health="healthy"),
    ]
    actions = plan(fleet("a"), listed, orphan_min_age=timedelta(seconds=60))
    assert kinds(actions) == [("remove", "old-orphan"), ("leave", "young-orphan")]
    assert "younger than 1m" in actions[1].reason
    assert kinds(plan(fleet("a"), listed, remove_orphans=False)) == []


def test_label_agent_containers_are_not_orphans() -> None:
    newest = box("s1", labels={**MANAGED, "agentwatch.agent": "s"}, health="healthy", created=at(-10))
    older = box("s0", "exited", labels={**MANAGED, "agentwatch.agent": "s"}, exit_code=0, created=at(-900))
    registry, _ = with_label_agents(parse_registry("agents: []\n"), [newest, older])
    assert kinds(plan(registry, [newest, older], orphan_min_age=timedelta(0))) == []


def test_labels_off_a_label_agent_container_is_an_orphan() -> None:
    labelled = box("s1", labels={**MANAGED, "agentwatch.agent": "ghost"}, health="healthy")
    registry, _ = with_label_agents(parse_registry("agents: []\n"), [labelled], register=False)
    (removed,) = plan(registry, [labelled], orphan_min_age=timedelta(0))
    assert removed.kind is Kind.REMOVE and "agent 'ghost' is not in the fleet" in removed.reason


def test_a_container_claiming_a_registry_agent_is_never_that_agent() -> None:
    """Issue 9, class 1: labelled agentwatch.agent=web-1 (an HTTP agent of the registry), managed,
    exited 1: it is not web-1's (nothing recorded, no start under web-1's budget), nor removed."""
    impostor = box("impostor", "exited", labels={**MANAGED, "agentwatch.agent": "web-1"}, exit_code=1)
    registry, _ = with_label_agents(
        parse_registry("agents:\n  - id: web-1\n    probe: {http: {url: 'http://127.0.0.1:1/'}}\n"), [impostor]
    )
    healthy = {"web-1": record("web-1", S.HEALTHY)}
    for scope in (None, frozenset({"web-1"})):
        (left,) = plan(registry, [impostor], records=healthy, orphan_min_age=timedelta(0), agent_ids=scope)
        assert (left.kind, left.agent_id, left.state, left.budget) == (Kind.LEAVE, None, None, None)
        assert "claims registry agent 'web-1'" in left.reason
    (stop,) = plan_shutdown(registry, [box("impostor", labels={**MANAGED, "agentwatch.agent": "web-1"})])
    assert stop.agent_id is None  # stopped with the fleet, never recorded as web-1
    assert plan_shutdown(registry, [impostor], agent_ids=["web-1"]) == []


def test_scope_by_agent_ids() -> None:
    listed = [box("a", "exited", exit_code=3), box("b", "exited", exit_code=3)]
    actions = plan(fleet("a", "b"), listed, agent_ids=frozenset({"b", "ghost"}))
    assert kinds(actions) == [("leave", "ghost"), ("record", "b"), ("start", "b")]


def test_shutdown_targets_only_managed_containers() -> None:
    listed = [
        box("a"),
        box("b", "exited", exit_code=0),
        box("unmanaged", labels={"agentwatch.agent": "c"}),
        box("orphan"),
    ]
    targets = plan_shutdown(fleet("a", "b"), listed)
    assert [(t.container.name, t.agent_id, t.needs_stop) for t in targets] == [
        ("a", "a", True),
        ("b", "b", False),
        ("orphan", None, True),
    ]
    assert [t.container.name for t in plan_shutdown(fleet("a", "b"), listed, agent_ids=["a"])] == ["a"]


def test_a_missing_container_is_named_as_the_probe_names_it() -> None:
    registry = parse_registry("agents:\n  - id: a\n    probe: {docker: {container: sess-a}}\n")
    recorded, left = plan(registry, [])
    assert (recorded.kind, recorded.reason) == (Kind.RECORD, "container 'sess-a' not found")
    assert left.kind is Kind.LEAVE
