"""Never silent: the Prefect server is killed (SIGKILL) while a monitor run probes, so the run
commits its transitions with no API to publish them to. The run fails within a bound and says
why; after the server comes back, the next run publishes exactly the missing events and artifact
versions: each transition's event once (its id derives from the row), read back through the client.
A publisher killed after posting (simulated: rows put back as unpublished, claimed before) makes
no duplicate either."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from prefect.settings import PREFECT_API_URL, temporary_settings

from agentwatch.demo import AgentServer, fleet_registry, serve_in_thread
from agentwatch.events import derived_event_id
from agentwatch.store import StateStore
from agentwatch.store.schema import transitions

from .prefect_process import PrefectServerProcess
from .prefect_reads import artifact_versions, read_events, wait_for_events

pytestmark = pytest.mark.integration

AGENTWATCH = str(Path(sys.executable).with_name("agentwatch"))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PrefectServerProcess]:
    process = PrefectServerProcess(tmp_path / "prefect")
    process.start()
    try:
        yield process
    finally:
        process.kill()


def check(registry: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AGENTWATCH, "check", registry, "--json"], env=env, capture_output=True, text=True, timeout=timeout
    )


async def outbox_rows(url: str) -> list[sa.Row]:
    async with StateStore(url) as store:
        return await store._run(lambda conn: list(conn.execute(sa.select(transitions).order_by(transitions.c.id))))


def test_transitions_committed_while_the_server_is_dead_are_published_after(
    server: PrefectServerProcess, tmp_path: Path
) -> None:
    state_db = f"sqlite:///{tmp_path}/state.db"
    env = {
        **os.environ,
        "PREFECT_API_URL": server.api_url,
        "AGENTWATCH_DATABASE_URL": state_db,
        "AGENTWATCH_PUBLISH_TIMEOUT": "10s",
    }
    with serve_in_thread(slow_delay=5.0) as agents:
        registry = tmp_path / "fleet.yaml"
        spec = fleet_registry(agents, ["slow-a", "fail-b", "ok-c"], dead=1, failure_threshold=1, timeout="10s")
        registry.write_text(yaml.safe_dump(spec))
        ids = ["slow-a", "fail-b", "ok-c", "down-0"]

        # 1. A run starts; while it waits for slow-a, the server dies without a word.
        started = time.monotonic()
        run = subprocess.Popen(
            [AGENTWATCH, "check", str(registry), "--json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        _wait_for_requests(agents, run)
        server.kill()
        _, stderr = run.communicate(timeout=300)
        elapsed = time.monotonic() - started
        assert run.returncode != 0, "a run whose transitions could not be published must fail"
        print(f"the run without an API ended (code {run.returncode}) after {elapsed:.1f}s")
        Path("/tmp/outbox-stderr.txt").write_bytes(stderr)

        # Committed, not published: the outbox holds them.
        rows = asyncio.run(outbox_rows(state_db))
        assert sorted(r.agent_id for r in rows) == sorted(ids), stderr.decode()[-3000:]
        assert all(r.published_at is None for r in rows)

        # 2. The server comes back (same port, same database); the next run publishes the backlog.
        server.start()
        again = check(str(registry), env)
        assert again.returncode == 0, again.stderr[-3000:]
        rows = asyncio.run(outbox_rows(state_db))
        assert len(rows) == 4, "nothing changed state in the second run"
        assert all(r.published_at is not None for r in rows)

        with temporary_settings({PREFECT_API_URL: server.api_url}):
            resources = [f"agentwatch.agent.{i}" for i in ids]
            events = asyncio.run(
                wait_for_events("agentwatch.agent.", resources, until=lambda evs: len(evs) >= 4, timeout=30)
            )
            assert sorted(str(e.id) for e in events) == sorted(str(derived_event_id(r.uid)) for r in rows)
            assert {e.resource.id: e.event for e in events} == {
                "agentwatch.agent.slow-a": "agentwatch.agent.healthy",
                "agentwatch.agent.ok-c": "agentwatch.agent.healthy",
                "agentwatch.agent.fail-b": "agentwatch.agent.unhealthy",
                "agentwatch.agent.down-0": "agentwatch.agent.unhealthy",
            }
            for agent_id in ids:
                assert len(asyncio.run(artifact_versions(f"agent-{agent_id}"))) == 1, agent_id

            # 3. A publisher that posted everything and died before marking: the rows go out again,
            # and the server still holds each event once and each artifact version once.
            asyncio.run(_unpublish(state_db))
            third = check(str(registry), env)
            assert third.returncode == 0, third.stderr[-3000:]
            assert all(r.published_at is not None for r in asyncio.run(outbox_rows(state_db)))
            time.sleep(5)  # events are readable 2-5 s after they are posted
            events = asyncio.run(read_events("agentwatch.agent.", resources))
            assert len(events) == 4, [(e.event, e.resource.id, e.id) for e in events]
            for agent_id in ids:
                assert len(asyncio.run(artifact_versions(f"agent-{agent_id}"))) == 1, agent_id


def _wait_for_requests(agents: AgentServer, run: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while agents.requests < 3:
        assert run.poll() is None, run.communicate()[1].decode()[-3000:]
        assert time.monotonic() < deadline, "the monitor run never started probing"
        time.sleep(0.1)


async def _unpublish(url: str) -> None:
    async with StateStore(url) as store:
        await store._run(
            lambda conn: conn.execute(transitions.update().values(published_at=None, claimed_until=None, attempts=1)),
            begin=True,
        )
