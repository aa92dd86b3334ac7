"""The a2a probe against an Agent Card server of the tests' own on 127.0.0.1: A2A 1.0 cards
(`supportedInterfaces`), 0.2-0.3 cards (top-level `url`), the older `agent.json` path, and the
ways a card can be missing or incomplete."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from agentwatch.models import ProbeResult
from agentwatch.probes import run_probe
from agentwatch.probes.a2a import card_urls
from agentwatch.registry import validate_registry

from ..agents.servers import Routes, RoutesHandler, serve

CARD_V1 = {
    "name": "Recipe Agent",
    "description": "Helps with recipes",
    "version": "1.4.0",
    "supportedInterfaces": [
        {"url": "https://recipes.example/a2a/v1", "protocolBinding": "JSONRPC", "protocolVersion": "1.0"},
        {"url": "https://recipes.example/a2a/grpc", "protocolBinding": "GRPC", "protocolVersion": "1.0"},
    ],
    "capabilities": {"streaming": True},
    "defaultInputModes": ["text/plain"],
    "defaultOutputModes": ["text/plain"],
    "skills": [],
}
CARD_V03 = {
    "name": "Geo Agent",
    "description": "Routes",
    "version": "0.3.2",
    "protocolVersion": "0.3.0",
    "url": "https://geo.example/a2a/v1",
    "preferredTransport": "JSONRPC",
    "capabilities": {},
    "skills": [],
}


async def check(url: str, routes: dict[str, tuple[int, Any]], cap: int = 65536) -> tuple[ProbeResult, list[str]]:
    state = Routes(routes)
    with serve(RoutesHandler, state) as base:
        agent = validate_registry({"agents": [{"id": "a2a-1", "timeout": "3s", "probe": {"a2a": {"url": base + url}}}]})
        async with httpx.AsyncClient() as client:
            return await run_probe(agent.agents[0], http=client, max_body_bytes=cap), state.seen


async def test_a2a_1_0_card() -> None:
    result, seen = await check("", {"/.well-known/agent-card.json": (200, CARD_V1)})
    assert (result.ok, result.reason) == (True, "")
    assert result.details["identity"] == {"name": "Recipe Agent", "version": "1.4.0", "protocol": "1.0"}
    assert result.details["card_version"] == "1.4.0"
    assert result.details["interface_url"] == "https://recipes.example/a2a/v1"
    assert result.details["card_path"] == "/.well-known/agent-card.json"
    assert seen == ["/.well-known/agent-card.json"]


async def test_older_card_at_agent_json() -> None:
    result, seen = await check("/", {"/.well-known/agent.json": (200, CARD_V03)})
    assert (result.ok, result.reason) == (True, "")
    assert result.details["identity"] == {"name": "Geo Agent", "version": "0.3.2", "protocol": "0.3.0"}
    assert result.details["interface_url"] == "https://geo.example/a2a/v1"
    assert seen == ["/.well-known/agent-card.json", "/.well-known/agent.json"]


async def test_agents_under_a_path_and_a_card_url_given_outright() -> None:
    result, seen = await check("/agents/geo", {"/agents/geo/.well-known/agent-card.json": (200, CARD_V03)})
    assert result.ok and seen == ["/agents/geo/.well-known/agent-card.json"]
    result, seen = await check("/cards/geo.json", {"/cards/geo.json": (200, CARD_V03)})
    assert result.ok and seen == ["/cards/geo.json"]


def test_card_urls() -> None:
    assert [str(u) for u in card_urls("https://h:8443/x/?token=abc")] == [
        "https://h:8443/x/.well-known/agent-card.json",
        "https://h:8443/x/.well-known/agent.json",
    ]


@pytest.mark.parametrize(
    ("routes", "reason"),
    [
        ({}, "HTTP 404 for /.well-known/agent.json (and 404 at /.well-known/agent-card.json)"),
        ({"/.well-known/agent-card.json": (500, b"boom")}, "HTTP 500 for /.well-known/agent-card.json"),
        ({"/.well-known/agent-card.json": (200, b"<html>")}, "the agent card is not JSON (JSONDecodeError): '<html>'"),
        ({"/.well-known/agent-card.json": (200, [1, 2])}, "the agent card is JSON but not an object: '[1, 2]'"),
        ({"/.well-known/agent-card.json": (200, {**CARD_V1, "version": ""})}, "the agent card has no version"),
        (
            {"/.well-known/agent-card.json": (200, {"name": "x", "supportedInterfaces": [{"protocolBinding": "GRPC"}]})},
            "the agent card has no version and no interface URL",
        ),
        ({"/.well-known/agent-card.json": (200, {"version": "1", "url": "https://x"})}, "the agent card has no name"),
    ],
    ids=["no-card", "server-error", "not-json", "not-an-object", "no-version", "no-version-no-url", "no-name"],
)  # fmt: skip
async def test_bad_cards(routes: dict[str, tuple[int, Any]], reason: str) -> None:
    result, _seen = await check("", routes)
    assert (result.ok, result.reason) == (False, reason)


async def test_a_server_error_is_not_retried_at_the_old_path() -> None:
    _result, seen = await check(
        "", {"/.well-known/agent-card.json": (503, b""), "/.well-known/agent.json": (200, CARD_V03)}
    )
    assert seen == ["/.well-known/agent-card.json"]


async def test_a_card_past_the_cap() -> None:
    result, _seen = await check("", {"/.well-known/agent-card.json": (200, CARD_V1)}, cap=100)
    assert (result.ok, result.reason) == (False, "the agent card is larger than 100 bytes (AGENTWATCH_MAX_BODY_BYTES)")
