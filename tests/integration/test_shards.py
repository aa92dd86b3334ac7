"""A sharded monitor cycle on a real Prefect server with two real `prefect worker start` processes
on the process pool `agentwatch-pool`, real HTTP agents on 127.0.0.1 and one SQLite state store
file shared by the parent and the shard runs (PostgreSQL in a multi-machine setup: the scale
stack's test runs the same scenario there): both shards run, each on a worker of its own; every
agent is committed once by its shard's run; the parent publishes once, writes one fleet table of
every agent and posts one cycle event (shard_support.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .shard_support import sharded_cycle_scenario

pytestmark = pytest.mark.integration


async def test_a_sharded_cycle_runs_each_shard_on_a_worker_and_reports_once(
    prefect_server: str, state_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    times = await sharded_cycle_scenario(prefect_server, state_db, tmp_path / "sharded", monkeypatch)
    print("timings:", ", ".join(f"{phase} {seconds:.1f}s" for phase, seconds in times.items()))


async def test_shards_nobody_runs_are_cancelled_and_the_parent_fails_without_a_cycle_event(
    prefect_server: str, state_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No worker on the pool: the shard runs stay Scheduled. The parent waits (20 s of monitor timeout
    # less two publish timeouts, at least half: 10 s), cancels them, still writes the fleet table,
    # posts no cycle event (the fleet was not checked: "monitor stalled" must not be kept quiet) and
    # ends Failed.
    from datetime import UTC, datetime

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    from agentwatch.events import MONITOR_CYCLE
    from flows.monitor import monitor_fleet

    from .prefect_reads import artifact_versions, read_events
    from .shard_support import ensure_pool_and_deployment

    monkeypatch.setenv("AGENTWATCH_MONITOR_TIMEOUT", "20s")
    registry = tmp_path / "fleet.yaml"
    registry.write_text(
        "agents:\n" + "".join(f"  - {{id: t-{i}, probe: {{tcp: {{host: 127.0.0.1, port: 9}}}}}}\n" for i in range(6))
    )
    await ensure_pool_and_deployment(str(registry))
    since = datetime.now(UTC)
    state = await monitor_fleet(str(registry), shards=2, return_state=True)
    assert state.is_failed()
    assert "shard 1 of 2 did not finish in time" in (state.message or ""), state.message
    assert "shard 2 of 2 did not finish in time" in (state.message or ""), state.message
    parent = state.state_details.flow_run_id
    async with get_client() as client:
        runs = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent]))
        )
    assert sorted(r.state.type.value for r in runs if r.state) == ["CANCELLED", "CANCELLED"]
    assert [t for t in await artifact_versions("agentwatch-fleet") if t.flow_run_id == parent]
    cycles = await read_events(MONITOR_CYCLE, since=since)
    assert not [e for e in cycles if any(r.id == f"prefect.flow-run.{parent}" for r in e.related)]


async def test_the_registry_block_is_written_once_per_content_secret_and_read_back(prefect_server: str) -> None:
    from prefect.client.orchestration import get_client

    from agentwatch.errors import RegistryError
    from flows.registry_block import load_fleet, snapshot

    text = "agents:\n  - {id: b-1, probe: {http: {url: 'http://127.0.0.1:9/health', headers: {Authorization: Bearer s3cr3t}}}}\n"
    reference = await snapshot(text, "fleet.yaml")
    name = reference.removeprefix("block:")
    assert name.startswith("agentwatch-registry-")
    async with get_client() as client:
        first = await client.read_block_document_by_name(name, "agentwatch-registry", include_secrets=False)
        assert await snapshot(text, "fleet.yaml") == reference
        again = await client.read_block_document_by_name(name, "agentwatch-registry", include_secrets=False)
    assert first.updated is not None and again.updated == first.updated  # not written again
    assert "s3cr3t" not in str(first.data)  # the UI and the API show the text obfuscated
    assert (await load_fleet(reference)).ids == ["b-1"]
    assert await snapshot(text + "# changed\n", "fleet.yaml") != reference
    with pytest.raises(RegistryError, match="no registry block named 'agentwatch-registry-none'"):
        await load_fleet("block:agentwatch-registry-none")
