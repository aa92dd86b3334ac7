"""One cycle, one pass (Docker side): the monitor's shape, as flows/monitor.py wires it,
on a real engine, store and Prefect API. The engine is listed once per cycle (by
`discover_docker_agents`, with the cycle's one connection), and `reconcile_in_cycle` acts with
what the cycle holds: it makes no engine connection of its own, loads no registry file and reads
no records from the store; it inspects only the containers it may act on."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prefect import flow

import flows.reconcile
from agentwatch.cycle import apply_results
from agentwatch.docker import BudgetRules, ContainerInfo, DockerEngine
from agentwatch.docker.rules import settle_results
from agentwatch.models import AgentState, Transition
from agentwatch.probes import probe_many
from agentwatch.registry import load_registry
from agentwatch.settings import get_settings
from agentwatch.store import StateStore
from flows.reconcile import reconcile_in_cycle
from tasks.containers import discover_docker_agents
from tasks.publishing import publish_pending

from .docker_support import RunContainer, status_is, wait_until, write_registry

pytestmark = [pytest.mark.integration, pytest.mark.docker]


class CountingEngine(DockerEngine):
    """The cycle's one engine connection, counting what is asked of it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.listings = 0
        self.inspected: list[str] = []

    async def list_containers(self, labels: Mapping[str, str | None]) -> list[ContainerInfo]:
        self.listings += 1
        return await super().list_containers(labels)

    async def inspect(self, ref: str) -> ContainerInfo | None:
        self.inspected.append(ref)
        return await super().inspect(ref)


def forbidden(what: str) -> Any:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"reconcile_in_cycle {what}")

    return fail


async def cycle(path: str, monkeypatch: pytest.MonkeyPatch) -> tuple[list[Transition], CountingEngine, int]:
    """One monitor cycle of Docker agents, as a flow run; `monkeypatch` forbids, from the reconcile
    step on, what reconcile_in_cycle must not do."""

    @flow(name="one-pass-cycle")
    async def run() -> tuple[list[Transition], CountingEngine, int]:
        settings = get_settings()
        registry = load_registry(path)
        engine = CountingEngine(timeout=settings.docker_timeout, scope=settings.docker_scope)
        async with engine, StateStore(settings.resolved_database_url()) as store:
            docker = await discover_docker_agents(registry, engine)
            fleet = docker.fleet
            records = await store.load()
            budgets = await store.load_restart_budgets()
            results = await probe_many(fleet.agents, docker=engine)
            now = datetime.now(UTC)
            rules = BudgetRules.from_settings(settings)
            results = settle_results(results, fleet, records, budgets, docker.bound, rules, now)
            commit = await store.commit(apply_results(fleet, records, results, now), run_id="one-pass")
            records = {**records, **{r.agent_id: r for r in commit.saved}}
            await publish_pending(store, fleet)
            listed = engine.listings
            probed = len(engine.inspected)
            monkeypatch.setattr(flows.reconcile, "load_fleet", forbidden("loaded the registry"))
            monkeypatch.setattr(StateStore, "load", forbidden("read the store's records"))
            monkeypatch.setattr(DockerEngine, "from_settings", forbidden("made an engine connection"))
            transitions = await reconcile_in_cycle(
                fleet, store, engine, docker, records, budgets, results, commit.transitions, None
            )
            assert engine.listings == listed
            del engine.inspected[:probed]
        return transitions, engine, listed

    return await run()


async def test_reconcile_in_cycle_uses_what_the_cycle_holds(
    prefect_server: str,
    state_db: str,
    labels_on: None,
    run_container: RunContainer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AGENTWATCH_RESTART_BACKOFF", "0s")
    crash = run_container("crash", "exit 3")
    first = wait_until(crash, status_is("exited"))["StartedAt"]
    session = run_container("session", "exec /bin/agent", agent="session-1")
    orphan = run_container("orphan", "exec /bin/agent")  # managed, no agent: young, left alone
    for box in (session, orphan):
        wait_until(box, status_is("running"))
    path = write_registry(tmp_path / "fleet.yaml", [{"id": "crasher", "probe": {"docker": {"container": crash.name}}}])

    with monkeypatch.context() as patched:
        transitions, engine, listings = await cycle(path, patched)

    assert listings == 2  # one listing per cycle: managed + agent-labelled containers
    assert engine.inspected == [crash.name]  # reconcile looked again at what it acts on, only that
    assert [(t.agent_id, t.from_state, t.to_state) for t in transitions] == [
        ("crasher", AgentState.FAILED, AgentState.STARTING)
    ]
    wait_until(crash, lambda state: state["StartedAt"] != first)  # started again
    async with StateStore(get_settings().resolved_database_url()) as store:
        record = (await store.load(["crasher"]))["crasher"]
    assert record.state is AgentState.STARTING and record.reason.startswith("restarted: exited with code 3")
