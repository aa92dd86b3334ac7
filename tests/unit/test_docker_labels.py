"""Label registration and the rules the monitor shares with reconcile (recorded stops, spent budgets,
which agents to reconcile after a cycle)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agentwatch.docker.budget import BudgetRules, RestartBudget
from agentwatch.docker.labels import agents_from_containers, bind_containers, with_label_agents
from agentwatch.docker.observe import container_result
from agentwatch.docker.recording import Assertion, asserted_evaluations
from agentwatch.docker.rules import reconcile_candidates, settle_results
from agentwatch.docker.state import ContainerInfo
from agentwatch.models import AgentRecord, ProbeResult, Transition
from agentwatch.models import AgentState as S
from agentwatch.registry import parse_registry

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
RULES = BudgetRules(max_restarts=1)


def box(name: str, labels: dict[str, str], status: str = "running", created: float = 0, **fields: Any) -> ContainerInfo:
    return ContainerInfo(
        id=name.ljust(64, "0"),
        name=name,
        status=status,
        labels=labels,
        created=T0 + timedelta(seconds=created),
        **fields,
    )


def test_labels_make_an_agent() -> None:
    labels = {
        "agentwatch.agent": "coder-1",
        "agentwatch.name": "Coder one",
        "agentwatch.failure_threshold": "5",
        "agentwatch.timeout": "2s",
        "agentwatch.label.team": "infra",
        "agentwatch.probe.http": "http://127.0.0.1:8080/health",
        "agentwatch.probe.http.expect_status": "204",
    }
    published = (("0.0.0.0", 8080),)  # the container's own port, published on this host
    (agent,), problems = agents_from_containers([box("c1", labels, published=published)], {"success_threshold": 2})
    assert problems == []
    assert (agent.id, agent.display_name, agent.source) == ("coder-1", "Coder one", "docker")
    assert agent.policy.failure_threshold == 5 and agent.policy.success_threshold == 2
    assert agent.policy.timeout == timedelta(seconds=2)
    assert agent.labels == {"team": "infra"}
    assert agent.probe is not None and agent.probe.http is not None and agent.probe.http.expect_status == 204


def test_default_probe_is_the_container_itself() -> None:
    (agent,), _ = agents_from_containers([box("c1", {"agentwatch.agent": "a"})])
    assert agent.probe is not None and agent.probe.docker is not None
    assert agent.probe.docker.container == "c1".ljust(64, "0")


RUNS_A_COMMAND = "touch /tmp/agentwatch-label-pwned"
HOSTILE_PROBE_LABELS = {
    "probe.command": {"agentwatch.probe.command": RUNS_A_COMMAND},
    "probe.acp": {"agentwatch.probe.acp": RUNS_A_COMMAND},
    "probe.acp.command": {"agentwatch.probe.acp.command": RUNS_A_COMMAND},
    "command": {"agentwatch.command": RUNS_A_COMMAND},
    "probe-json": {"agentwatch.probe": '{"command": "' + RUNS_A_COMMAND + '"}'},
    "probe.kind": {"agentwatch.probe.kind": "command", "agentwatch.probe.command": RUNS_A_COMMAND},
}


@pytest.mark.parametrize("status", ["running", "exited"])
@pytest.mark.parametrize("labels", HOSTILE_PROBE_LABELS.values(), ids=HOSTILE_PROBE_LABELS.keys())
def test_a_command_probe_is_never_taken_from_a_label(labels: dict[str, str], status: str) -> None:
    """README: "A command probe is never taken from a label (whoever starts a container would run
    commands on the monitor's host)". Neither is an acp probe, which runs `sh -c` too."""
    info = box("c1", {"agentwatch.agent": "a", **labels}, status=status)
    agents, _ = agents_from_containers([info])
    fleet, _ = with_label_agents(parse_registry("agents: []\n"), [info])
    for agent in [*agents, *fleet.agents]:
        assert agent.probe is not None
        assert (agent.probe.kind, agent.probe.command, agent.probe.acp) == ("docker", None, None)
        assert agent.probe.docker is not None and agent.probe.docker.container == info.id


def test_a_command_label_never_replaces_a_probe_label() -> None:
    labels = {
        "agentwatch.agent": "a",
        "agentwatch.probe.http": "http://127.0.0.1:8080/health",
        "agentwatch.probe.command": RUNS_A_COMMAND,
        "agentwatch.probe.tcp": "127.0.0.1:8080",
    }
    (agent,), _ = agents_from_containers([box("c1", labels, published=(("0.0.0.0", 8080),))])
    assert agent.probe is not None and (agent.probe.kind, agent.probe.command, agent.probe.acp) == ("http", None, None)


def test_bad_labels_are_problems_not_failures() -> None:
    agents, problems = agents_from_containers(
        [box("c1", {"agentwatch.agent": "Not A Slug"}), box("c2", {"agentwatch.agent": "b", "agentwatch.timeout": "x"})]
    )
    assert agents == []
    assert {p.agent for p in problems} == {"Not A Slug", "b"}
    assert any("c2" in p.message for p in problems)


def test_newest_running_container_registers_a_shared_id() -> None:
    old, new, dead = (
        box("old", {"agentwatch.agent": "a"}, created=0),
        box("new", {"agentwatch.agent": "a"}, created=10),
        box("dead", {"agentwatch.agent": "a"}, status="exited", created=20),
    )
    (agent,), _ = agents_from_containers([old, dead, new])
    assert agent.probe is not None and agent.probe.docker is not None
    assert agent.probe.docker.container.startswith("new")


def test_registry_entry_wins() -> None:
    registry = parse_registry("agents:\n  - id: a\n    name: from registry\n    probe: {command: 'true'}\n")
    fleet, problems = with_label_agents(
        registry, [box("c1", {"agentwatch.agent": "a"}), box("c2", {"agentwatch.agent": "b"})]
    )
    assert [(a.id, a.source) for a in fleet.agents] == [("a", "registry"), ("b", "docker")]
    assert fleet.agents[0].display_name == "from registry"
    # The container that claims registry agent a is named in a warning.
    assert [(p.agent, "container c1 claims registry agent 'a'" in p.message) for p in problems] == [("a", True)]


def test_a_container_the_registry_names_is_no_claim() -> None:
    registry = parse_registry("agents:\n  - id: a\n    probe: {docker: {container: c1}}\n")
    fleet, problems = with_label_agents(registry, [box("c1", {"agentwatch.agent": "a"})])
    assert problems == [] and fleet.ids == ["a"]


def test_labels_off_register_nothing_but_still_report_claims() -> None:
    registry = parse_registry("agents:\n  - id: a\n    probe: {http: {url: 'http://127.0.0.1:1/'}}\n")
    listed = [box("c1", {"agentwatch.agent": "a"}), box("c2", {"agentwatch.agent": "b"})]
    fleet, problems = with_label_agents(registry, listed, register=False)
    assert fleet.ids == ["a"] and [p.agent for p in problems] == ["a"]


def test_bind_only_what_the_registry_names_or_labels_registered() -> None:
    registry = parse_registry(
        "agents:\n  - id: web-1\n    probe: {http: {url: 'http://127.0.0.1:1/'}}\n"
        "  - id: d\n    probe: {docker: {container: named}}\n"
    )
    impostor = box("impostor", {"agentwatch.agent": "web-1", "agentwatch.managed": "true"}, "exited", exit_code=1)
    named = box("named", {"agentwatch.agent": "web-1"})
    session = box("session", {"agentwatch.agent": "s-1"})
    fleet, _ = with_label_agents(registry, [impostor, named, session])
    bound = bind_containers(fleet, [impostor, named, session])
    assert bound == {"d": named, "s-1": session}  # web-1 has no container; d's label is no claim of web-1's


@pytest.mark.parametrize("order", [1, -1], ids=["listed-a-first", "listed-b-first"])
def test_one_container_speaks_for_a_label_agent_whatever_the_listing_order(order: int) -> None:
    """The newest running container registers the agent and is bound to it; two created at the same
    instant are told apart by id, never by the order the engine listed them in."""
    labels = {"agentwatch.agent": "s", "agentwatch.probe.http": "http://127.0.0.1:1/"}
    a, b = box("a", labels, addresses=("10.0.0.2",)), box("b", labels, addresses=("10.0.0.3",))
    old = box("old", labels, created=-60)
    exited_newer = box("newer", labels, status="exited", created=60)
    listed = [a, b, old, exited_newer][::order]
    fleet, _ = with_label_agents(parse_registry("agents: []\n"), listed)
    (agent,) = fleet.agents
    assert agent.probe is not None and agent.probe.http is not None and "10.0.0.3" in agent.probe.http.url
    assert bind_containers(fleet, listed) == {"s": b}


FLEET = parse_registry(
    "agents:\n  - id: d\n    probe: {docker: {container: d}}\n  - id: h\n    probe: {http: {url: 'http://127.0.0.1:1/'}}\n"
)


def exited(code: int, finished: float) -> ContainerInfo:
    return box("d", {}, status="exited", exit_code=code, finished_at=T0 + timedelta(seconds=finished))


@pytest.mark.parametrize(
    ("finished", "record", "state", "reason"),
    [
        pytest.param(
            -10,
            AgentRecord("d", S.STOPPED, since=T0, reason="stopped by shutdown"),
            S.STOPPED,
            "stopped by shutdown",
            id="recorded-stop",
        ),
        pytest.param(
            10,
            AgentRecord("d", S.STOPPED, since=T0, reason="stopped by shutdown"),
            S.FAILED,
            "exited with code 143",
            id="crashed-after",
        ),
        pytest.param(
            -10, AgentRecord("d", S.HEALTHY, since=T0), S.FAILED, "exited with code 143", id="no-stop-recorded"
        ),
    ],
)
def test_recorded_stop_stays_a_stop(finished: float, record: AgentRecord, state: S, reason: str) -> None:
    container = exited(143, finished)
    result = container_result("d", "d", container)
    (settled,) = settle_results([result], FLEET, {"d": record}, {}, {"d": container}, RULES, T0)
    assert (settled.asserted, settled.reason) == (state, reason)


def test_spent_budget_keeps_agent_failed() -> None:
    spent = {"d": RestartBudget("d", restarts=(T0,))}
    unhealthy = ProbeResult("d", ok=False, reason="db down")
    (settled,) = settle_results([unhealthy], FLEET, {}, spent, {}, RULES, T0 + timedelta(seconds=1))
    assert (settled.asserted, settled.reason) == (S.FAILED, "restart budget exhausted: db down")
    (later,) = settle_results([unhealthy], FLEET, {}, spent, {}, RULES, T0 + timedelta(minutes=11))
    assert later is unhealthy  # the window moved on: the budget refilled
    healthy = ProbeResult("d", ok=True)
    assert settle_results([healthy], FLEET, {}, spent, {}, RULES, T0)[0] is healthy


def test_label_agent_probed_over_http_is_judged_by_its_exit() -> None:
    fleet, _ = with_label_agents(
        parse_registry("agents: []"),
        # Running when listed (so probed over HTTP), exited by the time of the probe.
        [box("s", {"agentwatch.agent": "s", "agentwatch.probe.http": "http://127.0.0.1:1/"}, addresses=("10.0.0.2",))],
    )
    assert fleet.agents[0].probe is not None and fleet.agents[0].probe.kind == "http"
    refused = ProbeResult("s", ok=False, reason="connection refused")
    containers = {"s": box("s", {}, status="exited", exit_code=0)}
    (settled,) = settle_results([refused], fleet, {}, {}, containers, RULES, T0)
    assert settled.asserted is S.STOPPED


def test_reconcile_candidates() -> None:
    def t(agent: str, to: S, reason: str = "") -> Transition:
        return Transition(agent, S.HEALTHY, to, reason, 1, T0)

    transitions = [t("d", S.FAILED), t("h", S.UNHEALTHY)]
    assert reconcile_candidates(FLEET, transitions, {}, {}, T0) == ["d"]  # h has no container
    known = {"d": RestartBudget("d", restarts=(T0,), exhausted_at=T0, retry_at=T0 + timedelta(minutes=10))}
    assert reconcile_candidates(FLEET, [t("d", S.FAILED, "restart budget exhausted: x")], {}, known, T0) == []
    due = {"d": RestartBudget("d", retry_at=T0)}
    down = {"d": AgentRecord("d", S.FAILED)}
    assert reconcile_candidates(FLEET, [], down, due, T0) == ["d"]
    assert reconcile_candidates(FLEET, [], {"d": AgentRecord("d", S.HEALTHY)}, due, T0) == []


def test_a_budget_the_monitor_found_spent_first_goes_to_reconcile() -> None:
    """Reconcile has not seen the spent budget (no `exhausted_at`): it records it once and schedules
    the retry; a spent budget it already recorded is not news."""
    crashed = [Transition("d", S.STARTING, S.FAILED, "restart budget exhausted: exited with code 3", 1, T0)]
    counted = {"d": RestartBudget("d", restarts=(T0,))}
    assert reconcile_candidates(FLEET, crashed, {}, counted, T0) == ["d"]
    known = {"d": RestartBudget("d", restarts=(T0,), exhausted_at=T0, retry_at=T0 + timedelta(minutes=10))}
    assert reconcile_candidates(FLEET, crashed, {}, known, T0) == []


def test_assertions_go_through_the_policy() -> None:
    (evaluation,) = asserted_evaluations(
        FLEET, {}, [Assertion("d", S.STOPPED, "stopped by shutdown"), Assertion("zz", S.STOPPED, "")], T0
    )
    rec, transition = evaluation.record, evaluation.transition
    assert rec.state is S.STOPPED and transition is not None and transition.to_state is S.STOPPED
    paused = {"d": AgentRecord("d", S.PAUSED, since=T0, first_seen=T0, paused=True, version=1)}
    assert asserted_evaluations(FLEET, paused, [Assertion("d", S.STOPPED, "x")], T0) == []
