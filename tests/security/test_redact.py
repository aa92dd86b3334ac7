"""Threat (class 5 of tests/security/README.md), the scrubber itself: `agentwatch.redact` as a table.

Pure functions: the secrets of an agent spec, and what a message looks like once they are gone,
in each form a library quotes them (raw, stripped, `repr` of str and bytes, percent-encoded, HTTP
Basic base64), plus URL credentials of anyone (user info, credential-like query values).
"""

from __future__ import annotations

import base64

import pytest

from agentwatch.models import ProbeResult
from agentwatch.redact import REDACTED, agent_secrets, expand_secrets, redact_result, redact_text, redact_url
from agentwatch.registry import AgentSpec, ProbeSpec, validate_registry

TOKEN = "s3cr3t-t0ken"


def http_agent(url: str = "http://127.0.0.1:9/", **headers: str) -> AgentSpec:
    return validate_registry({"agents": [{"id": "a", "probe": {"http": {"url": url, "headers": headers}}}]}).agents[0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"Illegal header value b'Bearer {TOKEN}\\n'", "Illegal header value b'***\\n'"),
        (f"Illegal header value b'Bearer {TOKEN}'", "Illegal header value b'***'"),
        (f"got {TOKEN} back", "got *** back"),
        (f"url /x?auth=Bearer%20{TOKEN}", "url /x?auth=***"),
        ("nothing secret here", "nothing secret here"),
    ],
    ids=["bytes-repr-with-newline", "whole-value", "token-alone", "percent-encoded", "untouched"],
)
def test_header_values_in_every_form(text: str, expected: str) -> None:
    # The agent's header is a valid one; the message quotes it as the library saw it.
    assert redact_text(text, agent_secrets(http_agent(Authorization=f"Bearer {TOKEN}"))) == expected


def test_url_credentials_of_the_agent() -> None:
    agent = http_agent("http://ops:pa%40ss-word@127.0.0.1:9/h?token=qtok-123&x=1")
    secrets = agent_secrets(agent)
    basic = base64.b64encode(b"ops:pa@ss-word").decode()
    said = f"Authorization: Basic {basic} / pa@ss-word / pa%40ss-word / qtok-123"
    assert redact_text(said, secrets) == "Authorization: Basic *** / *** / *** / ***"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://user:pw@host:8080/p", "http://***@host:8080/p"),
        ("https://ghp_tokenasuser@host/p", "https://***@host/p"),
        ("http://u:p@ss@host/p", "http://***@host/p"),  # a password holding "@"
        ("http://host/p?api_key=k1&x=1&access_token=t2", "http://host/p?api_key=***&x=1&access_token=***"),
        ("http://host/p?X-Amz-Signature=abc&monkey=banana", "http://host/p?X-Amz-Signature=***&monkey=banana"),
        ("http://host/a@b", "http://host/a@b"),  # an "@" in the path is no user info
    ],
    ids=["user-password", "token-as-user", "at-in-password", "query-tokens", "signature", "at-in-path"],
)
def test_any_url_in_any_text(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert redact_text(f"GET {url} failed") == f"GET {shown} failed"


def test_short_values_are_not_secrets_worth_garbling_a_message_for() -> None:
    assert expand_secrets(["ab", " x "]) == ()
    assert redact_text("a b c", expand_secrets(["b"])) == "a b c"


def test_longest_form_first() -> None:
    forms = expand_secrets([f"Bearer {TOKEN}"])
    assert forms[0].startswith("Bearer") and TOKEN in forms
    assert [len(f) for f in forms] == sorted((len(f) for f in forms), reverse=True)


def test_result_reason_and_details_are_scrubbed() -> None:
    secrets = agent_secrets(http_agent(Authorization=f"Bearer {TOKEN}"))
    result = ProbeResult(
        "a", ok=False, reason=f"echo: Bearer {TOKEN}", details={"url": "http://u:p@h/", "nested": [f"{TOKEN}", 3]}
    )
    scrubbed = redact_result(result, secrets)
    assert scrubbed.reason == f"echo: {REDACTED}"
    assert scrubbed.details == {"url": "http://***@h/", "nested": [REDACTED, 3]}
    clean = ProbeResult("a", ok=True, details={"url": "http://h/"})
    assert redact_result(clean, secrets) is clean  # nothing to do: the same object


def test_agents_without_an_http_probe_have_no_secrets() -> None:
    agent = validate_registry({"agents": [{"id": "a", "probe": {"command": "true"}}]}).agents[0]
    assert agent_secrets(agent) == ()


def test_every_probe_kind_with_headers_url_or_env_has_its_secrets() -> None:
    # Duck-typed on the probe's spec: `headers`, `url`, `env: {X: {env: VAR}}` (mcp, a2a, acp, ...).
    kinds = ProbeSpec.model_fields
    if not {"mcp", "acp"} <= set(kinds):
        pytest.skip("no mcp/acp probe kinds in this tree")
    mcp = validate_registry(
        {"agents": [{"id": "m", "probe": {"mcp": {"url": "https://u:mcp-pass@h/mcp", "headers": {"X-Key": TOKEN}}}}]}
    ).agents[0]
    assert {TOKEN, "mcp-pass"} <= set(agent_secrets(mcp))
    acp = validate_registry(
        {
            "agents": [
                {"id": "c", "probe": {"acp": {"command": "agent", "env": {"API_KEY": {"env": "AW_T"}, "MODE": "fast"}}}}
            ]
        }
    ).agents[0]
    assert agent_secrets(acp, {"AW_T": "from-the-env-123"}) == expand_secrets(["from-the-env-123"])
    assert agent_secrets(acp) == ()  # without the environment, nothing to look up; "fast" is no secret
