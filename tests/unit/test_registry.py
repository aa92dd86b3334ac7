"""The registry YAML contract: shape, defaults, durations, unmanaged agents, and whole-file rejection."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from agentwatch.errors import AgentwatchError, Problem, RegistryError
from agentwatch.registry import (
    AgentSpec,
    Policy,
    ProbeSpec,
    Registry,
    load_registry,
    parse_registry,
    validate_registry,
)

GOOD = """
defaults:
  timeout: 5s
  failure_threshold: 4
  interval: 30
agents:
  - id: web-1
    name: Web one
    labels: {team: infra}
    transport: http
    probe:
      http: {url: "http://localhost:8080/health", expect_status: 200}
    failure_threshold: 2
    success_threshold: 2
    start_grace: 2m
    timeout: 10s
    interval: 1h
    max_backoff: 1h30m
  - id: db-1
    probe: {tcp: {host: db.internal, port: 5432}}
  - id: job-1
    probe: {command: "test -f /tmp/ok"}
  - id: box-1
    probe: {docker: {container: x}}
  - id: beat-1
    probe: {heartbeat: {timeout: 30s, max_missed: 3}}
"""


def one_agent(body: str, defaults: str = "") -> AgentSpec:
    text = (f"defaults: {defaults}\n" if defaults else "") + "agents:\n  - id: a-1\n" + body
    return parse_registry(text).agents[0]


def problems_of(text: str) -> list[Problem]:
    with pytest.raises(RegistryError) as info:
        parse_registry(text)
    return info.value.problems


def test_good_registry_shape() -> None:
    reg = parse_registry(GOOD)
    assert reg.ids == ["web-1", "db-1", "job-1", "box-1", "beat-1"]
    web = reg.get("web-1")
    assert web is not None
    assert web.display_name == "Web one"
    assert web.labels == {"team": "infra"}
    assert web.transport == "http"
    assert web.source == "registry"
    assert web.probe is not None and web.probe.kind == "http"
    assert web.probe.http is not None
    assert web.probe.http.url == "http://localhost:8080/health"
    assert web.probe.http.expect_status == 200
    assert web.unmanaged_reason is None

    kinds = {a.id: a.probe.kind for a in reg.agents if a.probe is not None}
    assert kinds == {"web-1": "http", "db-1": "tcp", "job-1": "command", "box-1": "docker", "beat-1": "heartbeat"}
    db, job, box, beat = (reg.get(i) for i in ("db-1", "job-1", "box-1", "beat-1"))
    assert db is not None and db.probe is not None and db.probe.tcp is not None
    assert (db.probe.tcp.host, db.probe.tcp.port) == ("db.internal", 5432)
    assert db.display_name == "db-1"
    assert job is not None and job.probe is not None and job.probe.command is not None
    assert job.probe.command.run == "test -f /tmp/ok"
    assert box is not None and box.probe is not None and box.probe.docker is not None
    assert box.probe.docker.container == "x"
    assert beat is not None and beat.probe is not None and beat.probe.heartbeat is not None
    assert beat.probe.heartbeat.timeout == timedelta(seconds=30)
    assert beat.probe.heartbeat.max_missed == 3
    assert all(a.unmanaged_reason is None for a in reg.agents)
    assert reg.get("nope") is None


def test_defaults_apply_and_agent_values_win() -> None:
    reg = parse_registry(GOOD)
    web, db = reg.get("web-1"), reg.get("db-1")
    assert web is not None and db is not None
    assert web.policy == Policy(
        failure_threshold=2,
        success_threshold=2,
        start_grace=timedelta(minutes=2),
        timeout=timedelta(seconds=10),
        interval=timedelta(hours=1),
        max_backoff=timedelta(hours=1, minutes=30),
    )
    assert db.policy == Policy(
        failure_threshold=4,
        success_threshold=1,
        start_grace=timedelta(0),
        timeout=timedelta(seconds=5),
        interval=timedelta(seconds=30),
        max_backoff=timedelta(seconds=60),
    )


def test_policy_defaults_without_defaults_section() -> None:
    agent = one_agent("    probe: {docker: {container: x}}\n")
    assert agent.policy == Policy()
    assert (agent.policy.failure_threshold, agent.policy.success_threshold) == (3, 1)
    assert agent.policy.timeout == timedelta(seconds=5)
    assert agent.policy.interval == timedelta(0)
    assert agent.policy.max_backoff == timedelta(seconds=60)
    assert agent.policy.start_grace == timedelta(0)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        pytest.param("5s", 5, id="seconds"),
        pytest.param("2m", 120, id="minutes"),
        pytest.param("1h", 3600, id="hours"),
        pytest.param("45", 45, id="plain-seconds-int"),
        pytest.param("'45'", 45, id="plain-seconds-string"),
        pytest.param("2.5", 2.5, id="plain-seconds-float"),
        pytest.param("1h30m", 5400, id="compound"),
        pytest.param("250ms", 0.25, id="milliseconds"),
    ],
)
def test_durations_in_registry(text: str, seconds: float) -> None:
    agent = one_agent(f"    interval: {text}\n    start_grace: {text}\n    probe: {{docker: {{container: x}}}}\n")
    assert agent.policy.interval == timedelta(seconds=seconds)
    assert agent.policy.start_grace == timedelta(seconds=seconds)


def test_duration_default_inherited_by_every_agent() -> None:
    reg = parse_registry(
        "defaults: {timeout: 2m, start_grace: 1h}\n"
        "agents:\n"
        "  - {id: a, probe: {docker: {container: a}}}\n"
        "  - {id: b, timeout: 7s, probe: {docker: {container: b}}}\n"
    )
    a, b = reg.agents
    assert (a.policy.timeout, a.policy.start_grace) == (timedelta(minutes=2), timedelta(hours=1))
    assert (b.policy.timeout, b.policy.start_grace) == (timedelta(seconds=7), timedelta(hours=1))


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        pytest.param('    probe: {http: {url: ""}}\n', "placeholder endpoint ''", id="empty-url"),
        pytest.param(
            "    probe: {http: {url: 'acp://...'}}\n", "placeholder endpoint 'acp://...'", id="acp-placeholder-url"
        ),
        pytest.param(
            "    probe: {http: {url: 'acp://agent.local:9000'}}\n",
            "placeholder endpoint 'acp://agent.local:9000'",
            id="acp-url",
        ),
        pytest.param(
            "    probe: {http: {url: 'http://...'}}\n", "placeholder endpoint 'http://...'", id="dots-placeholder"
        ),
        pytest.param("    endpoint: 'acp://...'\n", "placeholder endpoint 'acp://...'", id="endpoint-no-probe"),
        pytest.param(
            "    transport: stdio\n",
            "stdio transport: supervised by its own process manager",
            id="stdio-no-probe",
        ),
        pytest.param(
            "    transport: STDIO\n    probe: {http: {url: 'http://x:1/'}}\n",
            "stdio transport: supervised by its own process manager",
            id="stdio-wins-over-probe",
        ),
        pytest.param("    name: bare\n", "no probe configured", id="no-probe"),
    ],
)
def test_unmanaged_agents_are_listed_with_reason(body: str, reason: str) -> None:
    reg = parse_registry("agents:\n  - id: a-1\n" + body + "  - id: b-1\n    probe: {docker: {container: b}}\n")
    assert reg.ids == ["a-1", "b-1"]
    a, b = reg.agents
    assert a.unmanaged_reason == reason
    assert b.unmanaged_reason is None


def test_http_probe_optional_fields() -> None:
    agent = one_agent(
        "    probe:\n"
        "      http:\n"
        "        url: '  http://127.0.0.1:8080/healthz  '\n"
        "        body_contains: ok\n"
        "        max_latency: 250ms\n"
        "        target: 10.0.0.7\n"
        "        headers: {X-Token: abc}\n"
    )
    assert agent.probe is not None and agent.probe.http is not None
    http = agent.probe.http
    assert http.url == "http://127.0.0.1:8080/healthz"
    assert http.expect_status is None
    assert http.body_contains == "ok"
    assert http.max_latency == timedelta(milliseconds=250)
    assert http.target == "10.0.0.7"
    assert http.headers == {"X-Token": "abc"}


def test_heartbeat_defaults() -> None:
    agent = one_agent("    probe: {heartbeat: {}}\n")
    assert agent.probe is not None and agent.probe.heartbeat is not None
    assert agent.probe.heartbeat.timeout == timedelta(seconds=30)
    assert agent.probe.heartbeat.max_missed == 3


def test_command_as_mapping() -> None:
    agent = one_agent("    probe: {command: {run: 'true'}}\n")
    assert agent.probe is not None and agent.probe.command is not None
    assert agent.probe.command.run == "true"


BAD = """
defaults: {timeout: 0}
colour: red
agents:
  - id: web-1
    probe: {tcp: {host: a, port: 70000}}
  - id: web-1
    probe: {http: {url: "http://x"}, tcp: {host: a, port: 1}}
  - id: Web_2
    probe: {}
    colour: red
  - id: ok-1
    timeout: abc
    failure_threshold: 0
    probe: {http: {url: "http://x", method: GET}}
  - name: no-id
    probe: {command: "true"}
  - just-a-string
  - id: t0
    timeout: 0
    success_threshold: 1001
    probe: {http: {url: "localhost:8080/health", expect_status: 99}}
  - id: fine-1
    probe: {docker: {container: fine}}
"""

BAD_EXPECTED = [
    ("web-1", "id", "duplicate id (2 agents use it)"),
    (None, "defaults.timeout", "timeout must be more than 0s and at most 10m"),
    (None, "colour", "unknown field"),
    ("web-1", "probe.tcp.port", "less than or equal to 65535"),
    ("web-1", "probe", "give exactly one probe kind of http, tcp, command, docker, heartbeat"),
    ("Web_2", "id", "'Web_2' is not a slug"),
    ("Web_2", "probe", "(got none)"),
    ("Web_2", "colour", "unknown field"),
    ("ok-1", "timeout", "not a duration: 'abc'"),
    ("ok-1", "failure_threshold", "greater than or equal to 1"),
    ("ok-1", "probe.http.method", "unknown field"),
    ("#5", "id", "Field required"),
    ("#6", "", "valid dictionary"),
    ("t0", "timeout", "timeout must be more than 0s and at most 10m"),
    ("t0", "success_threshold", "less than or equal to 1000"),
    ("t0", "probe.http.url", "not an http(s) URL: 'localhost:8080/health'"),
    ("t0", "probe.http.expect_status", "greater than or equal to 100"),
]


@pytest.mark.parametrize(("agent", "field", "message"), BAD_EXPECTED, ids=[f"{a}:{f}" for a, f, _ in BAD_EXPECTED])
def test_bad_file_names_each_problem(agent: str | None, field: str, message: str) -> None:
    with pytest.raises(RegistryError) as info:
        parse_registry(BAD, source="fleet.yaml")
    matches = [p for p in info.value.problems if p.agent == agent and p.field == field and message in p.message]
    assert len(matches) == 1, info.value.problems
    assert str(matches[0]) in str(info.value)


def test_bad_file_lists_every_problem_and_nothing_else() -> None:
    with pytest.raises(RegistryError) as info:
        parse_registry(BAD, source="fleet.yaml")
    err = info.value
    assert isinstance(err, AgentwatchError)
    assert err.source == "fleet.yaml"
    assert sorted((p.agent or "", p.field) for p in err.problems) == sorted((a or "", f) for a, f, _ in BAD_EXPECTED)
    assert str(err).startswith(f"fleet.yaml: {len(BAD_EXPECTED)} problem(s)\n")
    # The good agent in the same file is not mentioned: the file is rejected whole, not per agent.
    assert "fine-1" not in str(err)


def test_problem_text() -> None:
    assert str(Problem("web-1", "probe.tcp.port", "too big")) == "agent 'web-1' field 'probe.tcp.port': too big"
    assert str(Problem(None, "colour", "unknown field")) == "registry field 'colour': unknown field"
    assert str(Problem(None, "", "not valid YAML")) == "registry: not valid YAML"


@pytest.mark.parametrize(
    "slug",
    ["a", "web-1", "a1-b2-c3", "0", "x" * 63],
)
def test_valid_slugs(slug: str) -> None:
    reg = parse_registry(f"agents:\n  - id: '{slug}'\n    probe: {{docker: {{container: x}}}}\n")
    assert reg.ids == [slug]


@pytest.mark.parametrize(
    "slug",
    ["Web-1", "web_1", "web--1", "-web", "web-", "web 1", "", "x" * 64, "wéb"],
)
def test_invalid_slugs(slug: str) -> None:
    problems = problems_of(f"agents:\n  - id: '{slug}'\n    probe: {{docker: {{container: x}}}}\n")
    assert len(problems) == 1
    assert problems[0].field == "id"
    assert "is not a slug" in problems[0].message


@pytest.mark.parametrize(
    ("value", "ok"),
    [("1ms", True), ("10m", True), ("600", True), ("0", False), ("0s", False), ("601", False), ("11m", False)],
)
def test_timeout_bounds(value: str, ok: bool) -> None:
    text = f"agents:\n  - id: a\n    timeout: {value}\n    probe: {{docker: {{container: x}}}}\n"
    if ok:
        assert parse_registry(text).agents[0].policy.timeout > timedelta(0)
    else:
        (problem,) = problems_of(text)
        assert (problem.agent, problem.field) == ("a", "timeout")
        assert problem.message == "timeout must be more than 0s and at most 10m"


def test_negative_duration_is_a_problem() -> None:
    (problem,) = problems_of("agents:\n  - id: a\n    interval: -5\n    probe: {docker: {container: x}}\n")
    assert (problem.agent, problem.field) == ("a", "interval")
    assert "must not be negative" in problem.message


@pytest.mark.parametrize("value", [".inf", "99999999999d", "'1e400'"])
def test_overflowing_duration_is_a_problem(value: str) -> None:
    problems = problems_of(f"agents:\n  - id: a\n    interval: {value}\n    probe: {{docker: {{container: x}}}}\n")
    assert [(p.agent, p.field) for p in problems] == [("a", "interval")]


def test_policy_mapping_is_not_silently_ignored() -> None:
    # A `policy:` block would be replaced by the resolved policy at load: refused, naming agent and field.
    text = "agents:\n  - id: a\n    policy: {failure_threshold: 7}\n    probe: {docker: {container: x}}\n"
    (problem,) = problems_of(text)
    assert problem.agent == "a"
    assert problem.message.startswith("unknown field 'policy': put policy fields (failure_threshold, timeout, ...)")


def test_invalid_yaml() -> None:
    with pytest.raises(RegistryError) as info:
        parse_registry("agents: [\n  - id: a\n", source="broken.yaml")
    (problem,) = info.value.problems
    assert problem.agent is None
    assert problem.message.startswith("not valid YAML")
    assert str(info.value).startswith("broken.yaml: 1 problem(s)")


@pytest.mark.parametrize("text", ["- id: a\n", "just text\n", "42\n"], ids=["list", "string", "number"])
def test_top_level_must_be_mapping(text: str) -> None:
    (problem,) = problems_of(text)
    assert problem == Problem(None, "", "the top level must be a mapping with an `agents:` list")


def test_an_explicit_empty_list_is_an_empty_fleet() -> None:
    reg = parse_registry("agents: []\n")
    assert reg.agents == []
    assert reg.ids == []


@pytest.mark.parametrize(
    ("text", "field", "start"),
    [
        ("", "", "the file is empty"),
        ("\n\n", "", "the file is empty"),
        ("# nothing here\n", "", "the file is empty"),
        ("---\n", "", "the file is empty"),
        ("null\n", "", "the file is empty"),
        ("agents:\n# - id: a\n", "agents", "empty (every entry commented out?)"),
        ("defaults: {timeout: 2s}\n", "agents", "missing"),
    ],
    ids=["empty", "blank", "comment", "bare-document", "null", "agents-null", "no-agents-key"],
)
def test_a_registry_without_an_agents_list_is_refused(text: str, field: str, start: str) -> None:
    # Read as "no agents", a blanked or truncated file would make the next run forget every agent.
    (problem,) = problems_of(text)
    assert (problem.agent, problem.field) == (None, field)
    assert problem.message.startswith(start)
    assert problem.message.endswith("write `agents: []` for a fleet with no agents")


def test_agents_must_be_a_list() -> None:
    (problem,) = problems_of("agents: {web-1: {}}\n")
    assert (problem.agent, problem.field) == (None, "agents")


def test_load_registry_from_file(tmp_path: Path) -> None:
    path = tmp_path / "agents.yaml"
    path.write_text(GOOD, encoding="utf-8")
    assert load_registry(path).ids == parse_registry(GOOD).ids
    assert load_registry(str(path)).ids == parse_registry(GOOD).ids


def test_load_registry_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "agents.yaml"
    path.write_text("agents:\n  - id: Bad\n", encoding="utf-8")
    with pytest.raises(RegistryError) as info:
        load_registry(path)
    assert info.value.source == str(path)
    assert str(info.value).startswith(f"{path}: 1 problem(s)")


def test_load_registry_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "agents.yaml"
    with pytest.raises(RegistryError) as info:
        load_registry(path)
    assert info.value.source == str(path)
    assert str(path) in str(info.value)
    (problem,) = info.value.problems
    assert problem.message == "cannot read file: No such file or directory"


def test_load_registry_directory(tmp_path: Path) -> None:
    with pytest.raises(RegistryError) as info:
        load_registry(tmp_path)
    assert str(tmp_path) in str(info.value)
    assert info.value.problems[0].message.startswith("cannot read file")


def test_merged_registry_entry_wins_on_same_id() -> None:
    reg = parse_registry(GOOD)
    extra = [
        AgentSpec(id="web-1", name="from docker", source="docker", probe=ProbeSpec(docker={"container": "w"})),
        AgentSpec(id="box-9", name="docker only", source="docker", probe=ProbeSpec(docker={"container": "b9"})),
    ]
    merged = reg.merged(extra)
    assert merged.ids == ["web-1", "db-1", "job-1", "box-1", "beat-1", "box-9"]
    web = merged.get("web-1")
    assert web is not None and (web.name, web.source) == ("Web one", "registry")
    assert web.probe is not None and web.probe.kind == "http"
    box9 = merged.get("box-9")
    assert box9 is not None and (box9.name, box9.source) == ("docker only", "docker")
    # The original registry is untouched.
    assert reg.ids == ["web-1", "db-1", "job-1", "box-1", "beat-1"]
    assert reg.merged([]).ids == reg.ids


def test_models_are_frozen() -> None:
    reg = parse_registry(GOOD)
    with pytest.raises(ValidationError):
        reg.agents[0].name = "changed"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        reg.agents[0].policy.failure_threshold = 9  # type: ignore[misc]


def test_direct_agent_spec_validation() -> None:
    with pytest.raises(ValidationError):
        AgentSpec(id="Bad Id")
    with pytest.raises(ValidationError):
        ProbeSpec()
    assert Registry().agents == []


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"Authorization": "Bearer abc\n"}, "header 'Authorization': the value contains a line break"),
        ({"X-Key": "a\0b"}, "header 'X-Key': the value contains a NUL character"),
        ({"X-Key": "é"}, "header 'X-Key': the value contains a non-ASCII character"),
        ({"X-Key": "abc "}, "header 'X-Key': the value begins or ends with whitespace"),
        ({"Bad Name": "x"}, "header name 'Bad Name' is not a valid HTTP header name"),
    ],
    ids=["newline", "nul", "non-ascii", "trailing-space", "bad-name"],
)
def test_header_problems_name_the_header_never_the_value(headers: dict[str, str], message: str) -> None:
    agents = [{"id": "web-1", "probe": {"http": {"url": "http://127.0.0.1:9/", "headers": headers}}}]
    with pytest.raises(RegistryError) as info:
        validate_registry({"agents": agents})
    (problem,) = info.value.problems
    assert (problem.agent, problem.field) == ("web-1", "probe.http.headers")
    assert problem.message.startswith(message)
    value = next(iter(headers.values())).strip()
    assert value not in str(info.value) or len(value) <= 1


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("http://127.0.0.1:8080/health", True),
        ("https://[::1]:8443/h?x=1", True),
        ("http://agent.example/h", True),
        ("http://127.0.0.1:70000/", False),
        ("http://127.0.0.1:0/", False),
        ("http://127.0.0.1:port/", False),
        ("http:///h", False),
        ("tcp://127.0.0.1:1/", False),
        ("http://127.0.0.1:1/a b", False),
    ],
)
def test_http_urls_are_checked_at_load(url: str, ok: bool) -> None:
    raw = {"agents": [{"id": "web-1", "probe": {"http": {"url": url}}}]}
    if ok:
        assert validate_registry(raw).agents[0].probe.http.url == url  # type: ignore[union-attr]
    else:
        with pytest.raises(RegistryError) as info:
            validate_registry(raw)
        assert info.value.problems[0].field == "probe.http.url"


@pytest.mark.parametrize(
    ("target", "ok"), [("10.0.0.7", True), ("agent-3", True), ("[::1]", True), ("a/b", False), ("u@h", False)]
)
def test_http_target_is_a_host(target: str, ok: bool) -> None:
    raw = {"agents": [{"id": "web-1", "probe": {"http": {"url": "http://localhost:1/", "target": target}}}]}
    if ok:
        validate_registry(raw)
    else:
        with pytest.raises(RegistryError, match="not a host name or IP address"):
            validate_registry(raw)


def test_size_cap_before_parsing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = "agents: []\n" + "#" * 2000 + "\n"
    path = tmp_path / "agents.yaml"
    path.write_text(text)
    assert load_registry(path, max_bytes=4096).agents == []
    with pytest.raises(RegistryError, match=r"file too large \(2,012 bytes, over the limit of 1,024 bytes\)"):
        load_registry(path, max_bytes=1024)
    monkeypatch.setenv("AGENTWATCH_REGISTRY_MAX_BYTES", "1024")
    with pytest.raises(RegistryError, match="AGENTWATCH_REGISTRY_MAX_BYTES"):
        load_registry(path)
    with pytest.raises(RegistryError, match="file too large"):
        parse_registry(text)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "agents.yaml"
    path.write_bytes(b"agents: []\n# \xff\n")
    (problem,) = pytest.raises(RegistryError, load_registry, path).value.problems
    assert problem.message == "not UTF-8 text (byte 14)"
