"""Drift through the real monitor: an A2A agent whose card's version changes between two runs gives
one `agentwatch.agent.changed` event (what changed, from, to) and one artifact version, and no
transition; a run that sees the same card again reports nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from agentwatch.store import StateStore
from flows.monitor import monitor_fleet

from ..agents.servers import Routes, RoutesHandler, serve
from .prefect_reads import artifact_versions, read_events, wait_for_events

pytestmark = pytest.mark.integration


def card(version: str) -> dict:
    return {
        "name": "Recipe agent",
        "version": version,
        "protocolVersion": "1.0",
        "supportedInterfaces": [
            {"url": "http://127.0.0.1/a2a", "protocolBinding": "JSONRPC", "protocolVersion": "1.0"}
        ],
    }


async def test_a_new_agent_version_is_reported_once_and_changes_no_state(
    prefect_server: str, state_db: str, tmp_path: Path
) -> None:
    routes = Routes({"/.well-known/agent-card.json": (200, card("1.4.0"))})
    with serve(RoutesHandler, routes) as base:
        registry = tmp_path / "fleet.yaml"
        registry.write_text(f'agents:\n  - id: recipes\n    probe: {{a2a: {{url: "{base}"}}}}\n')
        started = datetime.now(UTC)
        first = await monitor_fleet(str(registry), force=True)
        assert first[0]["state"] == "healthy"
        routes.routes["/.well-known/agent-card.json"] = (200, card("1.5.0"))
        second = await monitor_fleet(str(registry), force=True)
        third = await monitor_fleet(str(registry), force=True)
    assert second[0]["state"] == third[0]["state"] == "healthy"

    resource = ["agentwatch.agent.recipes"]
    changed = await wait_for_events("agentwatch.agent.changed", resource, since=started, until=bool, timeout=30)
    assert len(changed) == 1
    assert changed[0].payload["changes"] == [{"field": "version", "from": "1.4.0", "to": "1.5.0"}]
    # One transition (the first sight), one version for it and one for the change.
    states = await read_events("agentwatch.agent.healthy", resource, since=started)
    assert len(states) == 1
    versions = await artifact_versions("agent-recipes")
    assert len(versions) == 2 and "identity changed" in versions[-1].data and "1.5.0" in versions[-1].data
    async with StateStore(state_db) as store:
        assert (await store.load_identities(["recipes"]))["recipes"]["version"] == "1.5.0"
        assert len(await store.history("recipes")) == 1
