"""The http probe's conditions: the JSON path subset, JSON equality, TLS days left, their registry
validation, and `json:` end to end against a real HTTP server on 127.0.0.1. (TLS expiry against a
real TLS server: tests/integration/test_agent_protocols.py.)"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from agentwatch.errors import RegistryError
from agentwatch.models import ProbeResult
from agentwatch.probes import run_probe
from agentwatch.probes.conditions import (
    MISSING,
    check_conditions,
    days_left,
    format_path,
    json_equal,
    lookup,
    parse_path,
)
from agentwatch.registry import AgentSpec, HttpProbe, validate_registry

from ..agents.servers import Routes, RoutesHandler, serve

DOC = {
    "status": "ok",
    "checks": [{"name": "db", "ok": True}, {"name": "model", "ok": False, "latency": 1.5}],
    "dotted.key": {"a b": 3},
    "count": 2,
    "none": None,
}


@pytest.mark.parametrize(
    ("text", "steps"),
    [
        ("$", ()),
        ("$.status", ("status",)),
        ("$.checks[1].ok", ("checks", 1, "ok")),
        ("$.checks[-1].name", ("checks", -1, "name")),
        ('$["dotted.key"]["a b"]', ("dotted.key", "a b")),
        ("$['q\\'s']", ("q's",)),
        ("$.snake_case-and-dash", ("snake_case-and-dash",)),
        ('$["back\\\\slash"]', ("back\\slash",)),
    ],
    ids=["root", "member", "index", "negative-index", "quoted", "single-quoted", "name-chars", "escaped-backslash"],
)
def test_parse_path(text: str, steps: tuple[Any, ...]) -> None:
    assert parse_path(text) == steps


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("status", "starts with `$`"),
        ("$status", "unexpected 'status' at character 2"),
        ("$.", "unexpected '.' at character 2"),
        ("$.1st", "unexpected '.1st'"),
        ("$[01]", "unexpected '[01]'"),
        ("$[*]", "unexpected '[*]'"),
        ("$..deep", "unexpected '..deep'"),
        ('$["open', "unterminated quoted name"),
        ('$["a"b]', "unterminated quoted name"),
        ("$.a[?(@.x)]", "unexpected '[?(@.x)]'"),
    ],
    ids=["no-root", "no-dot", "empty-name", "digit-first", "leading-zero", "wildcard", "descendant", "open-quote",
         "junk-after-quote", "filter"],
)  # fmt: skip
def test_parse_path_refuses_what_the_subset_lacks(text: str, says: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_path(text)
    assert says in str(caught.value)


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("$.status", "ok"),
        ("$.checks[0].ok", True),
        ("$.checks[-1].latency", 1.5),
        ('$["dotted.key"]["a b"]', 3),
        ("$.none", None),
        ("$.missing", MISSING),
        ("$.checks[2]", MISSING),
        ("$.checks[-3]", MISSING),
        ("$.status.deeper", MISSING),
        ("$.checks.name", MISSING),
        ("$.count[0]", MISSING),
    ],
)
def test_lookup(text: str, found: Any) -> None:
    value = lookup(DOC, parse_path(text))
    assert value is MISSING if found is MISSING else value == found


def test_format_path_round_trips() -> None:
    for text in ("$", "$.a[0].b", '$["dotted.key"]["a b"]', "$[-1]"):
        assert format_path(parse_path(text)) == text


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        ("ok", "ok", True),
        (1, 1.0, True),
        (True, True, True),
        (None, None, True),
        (True, 1, False),
        (0, False, False),
        ("1", 1, False),
        ([1, {"a": True}], [1.0, {"a": True}], True),
        ([1, {"a": True}], [1, {"a": 1}], False),
        ({"a": 1}, {"a": 1, "b": 2}, False),
        ([1, 2], [1, 2, 3], False),
    ],
)
def test_json_equal(a: Any, b: Any, equal: bool) -> None:
    assert json_equal(a, b) is equal and json_equal(b, a) is equal


def test_days_left_rounds_down() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert days_left(now + timedelta(days=14), now) == 14
    assert days_left(now + timedelta(days=13, hours=23), now) == 13
    assert days_left(now + timedelta(hours=5), now) == 0
    assert days_left(now - timedelta(hours=5), now) == -1


def _spec(**fields: Any) -> HttpProbe:
    return HttpProbe.model_validate({"url": "https://agent.example/health", **fields})


def test_check_conditions_json_and_tls_with_injected_time() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    spec = _spec(json={"path": "$.status", "equals": "ok"}, tls_min_days=14)
    details: dict[str, Any] = {}
    assert check_conditions(spec, b'{"status": "ok"}', 65536, now + timedelta(days=30), details, now=now) == ""
    assert details == {"tls_days_left": 30, "tls_not_after": "2026-01-31T00:00:00+00:00"}
    soon = check_conditions(spec, b'{"status": "ok"}', 65536, now + timedelta(days=3, hours=2), {}, now=now)
    assert soon == "TLS certificate expires in 3 days (tls_min_days 14)"
    one = check_conditions(spec, b'{"status": "ok"}', 65536, now + timedelta(days=1), {}, now=now)
    assert one == "TLS certificate expires in 1 day (tls_min_days 14)"
    # Both fail: the JSON condition is named, and the days are still recorded.
    details = {}
    both = check_conditions(spec, b'{"status": "down"}', 65536, now + timedelta(days=3), details, now=now)
    assert both == '$.status is "down" (expected "ok")' and details["tls_days_left"] == 3
    assert check_conditions(spec, b"{}", 65536, None, {}, now=now) == "$.status not found in the JSON body"
    no_cert = check_conditions(_spec(tls_min_days=14), b"", 65536, None, {}, now=now)
    assert no_cert == "no verified TLS certificate to check tls_min_days against"


@pytest.mark.parametrize(
    ("condition", "body", "reason"),
    [
        ({"path": "$.status", "equals": "ok"}, b'{"status": "ok"}', ""),
        ({"path": "$.status", "equals": "ok"}, b'{"status": "degraded"}', '$.status is "degraded" (expected "ok")'),
        ({"path": "$.checks[0].ok", "equals": True}, b'{"checks": [{"ok": 1}]}', "$.checks[0].ok is 1 (expected true)"),
        ({"path": "$.count", "equals": 2}, b'{"count": 2.0}', ""),
        ({"path": "$.ready"}, b'{"ready": null}', ""),
        ({"path": "$.ready"}, b'{"other": 1}', "$.ready not found in the JSON body"),
        ({"path": "$.v", "equals": None}, b'{"v": 0}', "$.v is 0 (expected null)"),
        ({"path": "$.status", "equals": "ok"}, b"<html>ok</html>", "body is not JSON, so $.status cannot be checked"),
    ],
    ids=["equal", "differs", "bool-is-not-int", "int-equals-float", "exists", "absent", "null-expected", "not-json"],
)
def test_json_condition(condition: dict[str, Any], body: bytes, reason: str) -> None:
    assert check_conditions(_spec(json=condition), body, 65536, None, {}) == reason


def test_json_condition_names_the_cap_when_the_body_was_cut() -> None:
    body = b'{"pad": "' + b"x" * 100
    reason = check_conditions(_spec(json={"path": "$.status"}), body, len(body), None, {})
    assert (
        reason
        == f"body is not JSON (read up to the {len(body)}-byte cap, AGENTWATCH_MAX_BODY_BYTES), so $.status cannot be checked"
    )


def _problems(probe: dict[str, Any]) -> list[str]:
    with pytest.raises(RegistryError) as caught:
        validate_registry({"agents": [{"id": "web", "probe": {"http": probe}}]})
    return [f"{p.field}: {p.message}" for p in caught.value.problems]


def test_registry_validates_conditions_at_load() -> None:
    assert _problems({"url": "https://x/h", "json": {"path": "status"}}) == [
        "probe.http.json.path: a JSON path starts with `$` (the whole document), e.g. `$.status`"
    ]
    assert _problems({"url": "https://x/h", "json": {"path": "$.a", "equals": datetime(2026, 1, 1)}}) == [
        "probe.http.json.equals: equals must be a JSON value: a string, number, true/false, null, list or mapping "
        "(quote dates and times in YAML)"
    ]
    assert _problems({"url": "https://x/h", "json": {"path": "$.a", "other": 1}}) == [
        "probe.http.json.other: unknown field"
    ]
    assert _problems({"url": "http://x/h", "tls_min_days": 14}) == ["probe.http: tls_min_days needs an https:// URL"]
    assert _problems({"url": "https://x/h", "tls_min_days": 0})[0].startswith(
        "probe.http.tls_min_days: Input should be"
    )


def test_registry_reads_the_yaml_key_json() -> None:
    agent = validate_registry(
        {
            "agents": [
                {"id": "web", "probe": {"http": {"url": "https://x/h", "json": {"path": "$.ok"}, "tls_min_days": 7}}}
            ]
        }
    ).agents[0]
    assert agent.probe is not None and agent.probe.http is not None
    condition = agent.probe.http.json_
    assert condition is not None and condition.path == "$.ok" and not condition.checks_equality
    assert agent.probe.http.tls_min_days == 7


# The http probe with `json:`, against a real server


@pytest.fixture
def health_server() -> Iterator[str]:
    routes = {
        "/ok": (200, {"status": "ok", "checks": [{"name": "db", "ok": True}]}),
        "/degraded": (200, {"status": "degraded"}),
        "/html": (200, b"<html>fine</html>"),
        "/down": (503, {"status": "down"}),
    }
    with serve(RoutesHandler, Routes(routes)) as url:
        yield url


async def check(url: str, condition: dict[str, Any]) -> ProbeResult:
    agent: AgentSpec = validate_registry(
        {"agents": [{"id": "web", "timeout": "2s", "probe": {"http": {"url": url, "json": condition}}}]}
    ).agents[0]
    async with httpx.AsyncClient() as client:
        return await run_probe(agent, http=client)


async def test_http_probe_json_condition_holds(health_server: str) -> None:
    result = await check(f"{health_server}/ok", {"path": "$.checks[0].ok", "equals": True})
    assert (result.ok, result.reason) == (True, "")


async def test_http_probe_json_condition_fails_with_what_it_found(health_server: str) -> None:
    result = await check(f"{health_server}/degraded", {"path": "$.status", "equals": "ok"})
    assert (result.ok, result.reason) == (False, '$.status is "degraded" (expected "ok")')
    result = await check(f"{health_server}/html", {"path": "$.status", "equals": "ok"})
    assert (result.ok, result.reason) == (False, "body is not JSON, so $.status cannot be checked")


async def test_http_probe_status_is_judged_before_the_json(health_server: str) -> None:
    result = await check(f"{health_server}/down", {"path": "$.status", "equals": "ok"})
    assert (result.ok, result.reason) == (False, "HTTP 503 (expected 200-399)")
