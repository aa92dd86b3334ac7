"""Shards (agentwatch/shards.py): an agent's shard is stable (the same in every process and release,
not Python's salted hash), the split is even, and a shard forgets only its own agents: the store's
deletes, the heartbeat round's and the monitor's forget step (flows/steps.py) never touch an id of
another shard."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import pytest_asyncio

from agentwatch.beats import Beat
from agentwatch.heartbeat.watch import heartbeat_round
from agentwatch.models import AgentRecord
from agentwatch.registry import validate_registry
from agentwatch.settings import Settings
from agentwatch.shards import Shard, shard_of
from agentwatch.store import StateStore

ROOT = Path(__file__).resolve().parents[2]
IDS = [f"agent-{i}" for i in range(10_000)]

# Pinned: a release that changed the hash would move agents between shards mid-fleet.
PINNED = {
    2: {"web-1": 1, "web-2": 1, "db-1": 1, "agent-0": 1, "agent-1": 0},
    3: {"web-1": 1, "web-2": 1, "db-1": 0, "agent-0": 2, "agent-1": 1},
}


@pytest.mark.parametrize("shards", sorted(PINNED))
def test_an_agents_shard_is_pinned(shards: int) -> None:
    assert {i: shard_of(i, shards) for i in PINNED[shards]} == PINNED[shards]


def test_the_same_id_gets_the_same_shard_in_every_process() -> None:
    sample = IDS[:500] + ["web-1", "ünïcode-agent", ""]
    here = [shard_of(i, 7) for i in sample]
    code = (
        "import json, sys; from agentwatch.shards import shard_of; "
        "print(json.dumps([shard_of(i, 7) for i in json.load(sys.stdin)]))"
    )
    for seed in ("1", "2", "random"):  # str hashes differ between these processes; shards must not
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}
        done = subprocess.run(
            [sys.executable, "-c", code], input=json.dumps(sample), capture_output=True, text=True, env=env, check=True
        )
        assert json.loads(done.stdout) == here


@pytest.mark.parametrize("shards", [2, 3, 4, 8])
def test_ten_thousand_ids_split_evenly(shards: int) -> None:
    counts = Counter(shard_of(i, shards) for i in IDS)
    expected = len(IDS) / shards
    assert sorted(counts) == list(range(shards))
    assert all(abs(n - expected) <= 0.08 * expected for n in counts.values()), counts


def test_shards_partition_the_fleet() -> None:
    registry = validate_registry(
        {"agents": [{"id": f"a-{i}", "probe": {"tcp": {"host": "h", "port": 1}}} for i in range(50)]}
    )
    parts = [Shard(i, 3).fleet(registry) for i in range(3)]
    assert sorted(a for p in parts for a in p.ids) == sorted(registry.ids)
    assert all(p.get(a) is not None and registry.get(a) is not None for p in parts for a in p.ids)
    assert Shard().fleet(registry) is registry
    assert all(Shard(0, 1).owns(i) for i in IDS[:10])


@pytest.mark.parametrize(("index", "count"), [(2, 2), (-1, 2), (0, 0)])
def test_a_shard_out_of_range_is_refused(index: int, count: int) -> None:
    with pytest.raises(ValueError, match="shard"):
        Shard(index, count)


# --- forgetting: a shard's deletes stay in its shard --------------------------------------------

STORED = [f"agent-{i}" for i in range(40)]
LEFT = {"agent-3", "agent-4", "agent-17", "agent-30"}  # left the registry: two in each shard of 2
NOW = datetime(2025, 3, 1, tzinfo=UTC)


@pytest_asyncio.fixture(loop_scope="function")
async def store(store_url: str) -> AsyncIterator[StateStore]:
    s = StateStore(store_url)
    await s.commit([(AgentRecord(i), None) for i in STORED])
    await s.record_beats([Beat(i, last_beat_at=NOW, beats=1) for i in STORED])
    yield s
    await s.close()


def test_the_left_agents_are_in_both_shards() -> None:
    assert {shard_of(i, 2) for i in LEFT} == {0, 1}


async def test_a_shard_drops_only_its_own_departed_agents(store: StateStore) -> None:
    fleet = [i for i in STORED if i not in LEFT]
    first = Shard(0, 2)
    dropped = await store.drop_missing(first.ids(fleet), among=first.owns)
    assert sorted(dropped) == sorted(i for i in LEFT if first.owns(i))
    # Every agent of the other shard is still stored, those that left included: they are its to forget.
    assert set(await store.load()) == set(STORED) - set(dropped)
    second = Shard(1, 2)
    assert sorted(await store.drop_missing(second.ids(fleet), among=second.owns)) == sorted(LEFT - set(dropped))
    assert set(await store.load()) == set(fleet)


async def test_a_shard_with_no_agent_left_deletes_nothing_of_others(store: StateStore) -> None:
    # Shard 1 of 2 whose every agent left: without the guard, "keep nothing" would empty the table.
    lonely = Shard(1, 2)
    dropped = await store.drop_missing([], among=lonely.owns)
    assert dropped and all(lonely.owns(i) for i in dropped)
    assert set(await store.load()) == {i for i in STORED if not lonely.owns(i)}


async def test_the_heartbeat_round_of_a_shard_forgets_only_its_own_beats(store: StateStore) -> None:
    own = Shard(0, 2)
    heartbeat_agents = [{"id": i, "probe": {"heartbeat": {"timeout": "1m"}}} for i in own.ids(STORED) if i not in LEFT]
    registry = validate_registry({"agents": heartbeat_agents})
    records = {i: r for i, r in (await store.load()).items() if own.owns(i)}
    await heartbeat_round(store, registry, records, NOW, among=own.owns)
    beats = await store.load_beats()
    assert set(beats) == set(STORED) - {i for i in LEFT if own.owns(i)}


async def test_the_monitors_forget_step_in_a_shard_never_touches_another_shard(store: StateStore) -> None:
    from flows.steps import _forget_departed  # the step the shard runs (no Prefect API needed)

    registry = validate_registry(
        {"agents": [{"id": i, "probe": {"tcp": {"host": "h", "port": 1}}} for i in STORED if i not in LEFT]}
    )
    for index in (0, 1):
        part = Shard(index, 2)
        others = {i: r for i, r in (await store.load()).items() if not part.owns(i)}
        records = {i: r for i, r in (await store.load()).items() if part.owns(i)}
        await _forget_departed(store, part.fleet(registry), records, Settings(), logging.getLogger("t"), part.owns)
        assert {i for i in records} == set(part.ids(registry.ids))
        after = await store.load()
        assert {i: r for i, r in after.items() if not part.owns(i)} == others
    assert set(await store.load()) == set(registry.ids)
