"""Reconcile and shutdown carried out: plans applied against a real SQLite store and a small fake
engine (the real engine is tests/integration/test_docker_flows.py's). Time is injected."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from agentwatch.docker.budget import BudgetRules, RestartBudget
from agentwatch.docker.reconcile import Action, Kind, ReconcileOptions, plan_reconcile
from agentwatch.docker.reconcile_apply import Outcome, apply_reconcile, planned
from agentwatch.docker.shutdown import (
    ShutdownOptions,
    StopOutcome,
    apply_shutdown,
    plan_shutdown,
    record_stops,
)
from agentwatch.docker.state import ContainerInfo
from agentwatch.errors import ContainerOpFailed
from agentwatch.models import AgentRecord
from agentwatch.models import AgentState as S
from agentwatch.registry import Registry, parse_registry
from agentwatch.store import StateStore

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
RULES = BudgetRules(max_restarts=2, window=timedelta(minutes=10), backoff=timedelta(0))
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


class FakeEngine:
    """Records what it was asked; `refuse` names (op, container name) pairs it refuses."""

    def __init__(self, refuse: set[tuple[str, str]] | None = None) -> None:
        self.calls: list[tuple[str, str]] = []
        self.refuse = refuse or set()

    async def _do(self, op: str, container_id: str) -> None:
        name = container_id.rstrip("0")
        self.calls.append((op, name))
        if (op, name) in self.refuse:
            raise ContainerOpFailed(f"{op} {name}: no such container")

    async def start(self, container_id: str) -> None:
        await self._do("start", container_id)

    async def restart(self, container_id: str, timeout: float) -> None:
        await self._do("restart", container_id)

    async def stop(self, container_id: str, timeout: float) -> None:
        await self._do("stop", container_id)

    async def remove(self, container_id: str) -> None:
        await self._do("remove", container_id)


class Watcher:
    def __init__(self) -> None:
        self.totals: list[int] = []
        self.seen: list[Any] = []

    async def begin(self, total: int) -> None:
        self.totals.append(total)

    async def done(self, outcome: Any) -> None:
        self.seen.append(outcome)


@pytest_asyncio.fixture(loop_scope="function")
async def store(tmp_path: Path) -> AsyncIterator[StateStore]:
    s = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    yield s
    await s.close()


async def reconcile(
    store: StateStore,
    registry: Registry,
    listed: list[ContainerInfo],
    engine: FakeEngine,
    now: float = 0,
    watcher: Watcher | None = None,
    **options: Any,
) -> tuple[list[Action], Any]:
    records = await store.load()
    budgets = await store.load_restart_budgets()
    actions = plan_reconcile(registry, listed, {}, records, budgets, ReconcileOptions(rules=RULES, **options), at(now))
    result = await apply_reconcile(
        actions,
        fleet=registry,
        records=records,
        engine=engine,
        store=store,
        stop_timeout=1.0,
        now=at(now),
        run_id="test",
        watcher=watcher,
        clock=lambda: at(now + 1),
    )
    return actions, result


async def test_exit_is_recorded_before_the_restart_and_the_restart_after(store: StateStore) -> None:
    engine, watcher = FakeEngine(), Watcher()
    _, result = await reconcile(store, fleet("a"), [box("a", "exited", exit_code=3)], engine, watcher=watcher)
    assert engine.calls == [("start", "a")]
    assert [(t.to_state, t.reason.split(";")[0]) for t in result.transitions] == [
        (S.FAILED, "exited with code 3"),
        (S.STARTING, "restarted: exited with code 3"),
    ]
    assert [(r["action"], r["outcome"]) for r in result.rows()] == [("record", "done"), ("start", "done")]
    assert watcher.totals == [1] and [o.ok for o in watcher.seen] == [True]
    record = (await store.load(["a"]))["a"]
    assert (record.state, record.since) == (S.STARTING, at(1))
    budget = (await store.load_restart_budgets(["a"]))["a"]
    assert budget.restarts == (at(0),) and budget.version == 1


async def test_two_runs_from_the_same_budget_restart_once(store: StateStore) -> None:
    registry, crashed = fleet("a"), [box("a", "exited", exit_code=3)]
    records, budgets = await store.load(), await store.load_restart_budgets()
    plans = [
        plan_reconcile(registry, crashed, {}, records, budgets, ReconcileOptions(rules=RULES), T0) for _ in range(2)
    ]
    engine = FakeEngine()
    results = [
        await apply_reconcile(
            plan, fleet=registry, records=records, engine=engine, store=store, stop_timeout=1.0, now=T0
        )
        for plan in plans
    ]
    assert engine.calls == [("start", "a")]
    assert [a.kind for a in results[1].lost] == [Kind.START]
    assert [a.kind for a in results[1].actions] == [Kind.RECORD]  # its record step lost on the record's CAS
    assert results[1].conflicts == ["a"] and results[1].outcomes == []


async def test_a_refused_start_records_no_restart(store: StateStore) -> None:
    engine = FakeEngine(refuse={("start", "a")})
    _, result = await reconcile(store, fleet("a"), [box("a", "exited", exit_code=3)], engine)
    (outcome,) = result.outcomes
    assert not outcome.ok and "no such container" in outcome.detail
    assert [t.to_state for t in result.transitions] == [S.FAILED]
    assert result.rows()[1]["outcome"] == "failed: start a: no such container"
    assert (await store.load(["a"]))["a"].state is S.FAILED


async def test_a_running_orphan_is_stopped_then_removed(store: StateStore) -> None:
    engine, watcher = FakeEngine(refuse={("remove", "orphan")}), Watcher()
    _, result = await reconcile(
        store, fleet(), [box("orphan", created=at(-120))], engine, watcher=watcher, orphan_min_age=timedelta(0)
    )
    assert engine.calls == [("stop", "orphan"), ("remove", "orphan")]
    (outcome,) = result.outcomes
    assert isinstance(outcome, Outcome) and outcome.stopped and not outcome.ok  # stopped, then refused
    assert watcher.seen == [outcome]


async def test_spent_budget_is_recorded_once_with_its_cause(store: StateStore) -> None:
    registry, crashed, engine = fleet("a"), [box("a", "exited", exit_code=3)], FakeEngine()
    await store.save_restart_budget(RestartBudget("a", restarts=(at(-60), at(-30))))
    _, first = await reconcile(store, registry, crashed, engine)
    assert engine.calls == [] and [a.kind for a in first.actions] == [Kind.EXHAUSTED]
    assert [a.agent_id for a in first.newly_exhausted] == ["a"]
    record = (await store.load(["a"]))["a"]
    assert record.state is S.FAILED and record.reason.startswith("restart budget exhausted: 2 of 2 restarts")
    budget = (await store.load_restart_budgets(["a"]))["a"]
    assert budget.exhausted_at == T0 and budget.retry_at == at(-60) + RULES.window
    _, again = await reconcile(store, registry, crashed, engine, now=5)
    assert [a.kind for a in again.actions] == [Kind.EXHAUSTED] and again.newly_exhausted == []
    assert again.transitions == []


async def test_a_clean_run_resets_the_budget_and_departed_agents_lose_theirs(store: StateStore) -> None:
    await store.save_restart_budget(RestartBudget("a", restarts=(at(-200),)))
    await store.save_restart_budget(RestartBudget("gone", restarts=(at(-200),)))
    _, result = await reconcile(store, fleet("a"), [box("a", health="healthy", started_at=at(-180))], FakeEngine())
    assert [a.kind for a in result.actions] == [Kind.RESET]
    budgets = await store.load_restart_budgets()
    assert list(budgets) == ["a"] and budgets["a"].empty and budgets["a"].version == 2


def test_a_dry_run_is_only_planned() -> None:
    actions = plan_reconcile(
        fleet("a"), [box("a", "exited", exit_code=3)], {}, {}, {}, ReconcileOptions(rules=RULES), T0
    )
    assert [(r["action"], r["outcome"]) for r in planned(actions).rows()] == [
        ("record", "planned"),
        ("start", "planned"),
    ]


async def test_shutdown_stops_records_and_reports(store: StateStore) -> None:
    registry = fleet("a", "b", "c")
    listed = [box("a"), box("b"), box("c", "exited", exit_code=0), box("orphan")]
    engine, watcher = FakeEngine(refuse={("stop", "b")}), Watcher()
    options = ShutdownOptions(stop_timeout=timedelta(seconds=1))
    result = await apply_shutdown(plan_shutdown(registry, listed), options, engine, watcher)
    assert sorted(engine.calls) == [("stop", "a"), ("stop", "b"), ("stop", "orphan")]
    assert watcher.totals == [3] and all(isinstance(o, StopOutcome) for o in watcher.seen)
    assert [t.container.name for t in result.stopped] == ["a", "orphan"]
    assert [(r["container"], r["outcome"]) for r in result.rows()] == [
        ("a", "stopped"),
        ("b", "failed"),
        ("c", "not running"),
        ("orphan", "stopped"),
    ]
    commit = await record_stops(store, registry, result, T0, run_id="test")
    assert [(t.agent_id, t.to_state) for t in commit.transitions] == [("a", S.STOPPED)]
    record: AgentRecord = (await store.load(["a"]))["a"]
    assert record.reason == "stopped by shutdown (SIGTERM, SIGKILL after 1s)"


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        pytest.param(ShutdownOptions(leave_running=True), "leave_running", id="parameter"),
        pytest.param(
            ShutdownOptions(leave_by_setting=True), "leave_running (AGENTWATCH_SHUTDOWN_LEAVE_RUNNING)", id="setting"
        ),
    ],
)
async def test_shutdown_leave_running_stops_nothing(options: ShutdownOptions, reason: str) -> None:
    engine = FakeEngine()
    result = await apply_shutdown(plan_shutdown(fleet("a"), [box("a")]), options, engine)
    assert engine.calls == [] and result.stopped == [] and result.assertions() == []
    assert [(r["outcome"], r["reason"]) for r in result.rows()] == [("left running", reason)]
