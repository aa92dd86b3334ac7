"""The heartbeat endpoint for real: uvicorn on 127.0.0.1, the real HeartbeatClient, a real SQLite
store. Answers (200, 401, 404, 413, 429), what lands in the store, flush on shutdown, and a client
whose endpoint is down while its host program carries on."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import datetime

import httpx
import pytest

from agentwatch.heartbeat.client import HeartbeatClient, SyncHeartbeat, ping
from agentwatch.heartbeat.intake import Credentials, resolve_credentials
from agentwatch.heartbeat.server import ServerConfig
from agentwatch.registry import Registry, parse_registry
from agentwatch.store import StateStore

from .heartbeat_support import free_port, running_server

pytestmark = pytest.mark.integration

REGISTRY = """
agents:
  - id: worker-1
    probe: {heartbeat: {timeout: 30s, token_env: HB_TOKEN_WORKER_1}}
  - id: open-1
    probe: {heartbeat: {timeout: 30s}}
  - id: web-1
    probe: {http: {url: "http://127.0.0.1:9/health"}}
"""
TOKEN = "t0k-worker-1"


@pytest.fixture
def registry() -> Registry:
    return parse_registry(REGISTRY)


@pytest.fixture
def credentials(registry: Registry) -> Credentials:
    return resolve_credentials(registry, {"HB_TOKEN_WORKER_1": TOKEN})


async def load_beats(url: str) -> dict:
    async with StateStore(url) as store:
        return await store.load_beats()


async def test_answers(registry: Registry, credentials: Credentials, state_db: str) -> None:
    # A slow refill (one ping per 100 s), so a loaded machine cannot add a token mid-test.
    config = ServerConfig(max_body_bytes=1024, rate=0.01, burst=5, flush_interval=0.05)
    with running_server(registry, state_db, credentials=credentials, config=config) as srv:
        async with httpx.AsyncClient(base_url=srv.url) as http:
            auth = {"Authorization": f"Bearer {TOKEN}"}
            assert (await http.post("/ping/worker-1", headers=auth)).status_code == 200
            assert (await http.post("/ping/nobody")).status_code == 404
            assert (await http.post("/ping/web-1")).status_code == 404  # listed, but not a heartbeat agent
            missing = await http.post("/ping/worker-1")
            assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
            assert (await http.post("/ping/worker-1", headers={"Authorization": "Bearer nope"})).status_code == 401
            assert TOKEN not in missing.text
            too_big = await http.post("/ping/worker-1", headers=auth, content=b"x" * 1025)
            assert too_big.status_code == 413

            async def chunked() -> object:
                for _ in range(3):
                    yield b"y" * 600

            # No Content-Length: the cap is enforced while reading.
            assert (await http.post("/ping/worker-1", headers=auth, content=chunked())).status_code == 413
            assert (await http.post("/ping/open-1", content=b"last lines of output")).status_code == 200
            codes = [(await http.post("/ping/open-1")).status_code for _ in range(6)]
            assert codes == [200, 200, 200, 200, 429, 429]  # burst of 5, one already used
            limited = await http.post("/ping/open-1")
            assert int(limited.headers["retry-after"]) >= 1
            assert (await http.post("/ping/worker-1/start", headers=auth)).status_code == 200
            assert (await http.post("/ping/worker-1/2", headers=auth)).status_code == 200
            health = (await http.get("/healthz")).json()
    assert health["refused"] == {"401": 2, "404": 2, "413": 2, "429": 3}
    beats = await load_beats(state_db)
    assert beats["open-1"].beats == 5
    worker = beats["worker-1"]
    assert worker.beats == 3  # beat, start, exit code 2: the refused pings are not stored
    assert worker.failing and worker.last_exit_code == 2
    assert worker.last_start_at is not None and worker.last_beat_at is not None
    assert "web-1" not in beats


async def test_client_beats_and_job_signals(registry: Registry, credentials: Credentials, state_db: str) -> None:
    config = ServerConfig(rate=0, flush_interval=0.05)  # beats every 50 ms: past any sane rate limit
    with running_server(registry, state_db, credentials=credentials, config=config) as srv:
        async with HeartbeatClient(srv.url, "worker-1", token=TOKEN, interval=0.05) as client:
            while client.sent < 3:
                await asyncio.sleep(0.02)
            assert await client.start()
            assert await client.finish(0)
        with SyncHeartbeat(srv.url, "open-1", interval=0.05) as sync:
            while sync.sent < 2:
                await asyncio.sleep(0.02)
        assert ping(srv.url, "open-1", "fail")
        assert not ping(srv.url, "worker-1", token="wrong")  # refused: logged, never raised
    beats = await load_beats(state_db)
    assert beats["worker-1"].beats >= 5 and beats["worker-1"].last_exit_code == 0
    assert not beats["worker-1"].failing
    assert beats["open-1"].failing and beats["open-1"].last_exit_code is None


async def test_every_acknowledged_beat_is_stored_on_shutdown(registry: Registry, state_db: str) -> None:
    # A flush interval far longer than the test: only the shutdown flush can write them.
    config = ServerConfig(rate=0, flush_interval=60)
    with running_server(registry, state_db, config=config) as srv:
        async with httpx.AsyncClient(base_url=srv.url) as http:
            answers = await asyncio.gather(*(http.post("/ping/open-1") for _ in range(50)))
        assert all(a.status_code == 200 for a in answers)
        assert await load_beats(state_db) == {}
    assert (await load_beats(state_db))["open-1"].beats == 50


async def test_batches_are_reported_to_the_sink(registry: Registry, state_db: str) -> None:
    reports: list[Mapping[str, int]] = []

    async def sink(counts: Mapping[str, int], at: datetime) -> None:
        reports.append(counts)

    config = ServerConfig(rate=0, flush_interval=0.05, event_interval=0.2)
    with running_server(registry, state_db, config=config, sink=sink) as srv:
        async with httpx.AsyncClient(base_url=srv.url) as http:
            await asyncio.gather(*(http.post("/ping/open-1") for _ in range(20)))
            await asyncio.sleep(0.5)
    assert sum(r.get("open-1", 0) for r in reports) == 20
    assert len(reports) <= 3  # batched: about one report per flush, not one per beat


async def test_host_program_carries_on_while_the_endpoint_is_down(
    registry: Registry, state_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="agentwatch.heartbeat.client")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    done = 0
    async with HeartbeatClient(url, "open-1", interval=0.05, timeout=2) as client:
        for _ in range(10):  # the host's own work goes on while no endpoint answers
            done += 1
            await asyncio.sleep(0.03)
        assert client.sent == 0
        with running_server(registry, state_db, config=ServerConfig(rate=0, flush_interval=0.05), port=port):
            while client.sent == 0:
                await asyncio.sleep(0.02)
        sent = client.sent
        for _ in range(10):  # and again after the endpoint went away
            done += 1
            await asyncio.sleep(0.03)
    assert done == 20 and client.sent == sent
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    # One warning per outage (two outages), not one per interval; and the recovery is logged.
    assert len(warnings) == 2 and all("endpoint unreachable" in r.getMessage() for r in warnings)
    assert any("answers again" in r.getMessage() for r in caplog.records)
    assert (await load_beats(state_db))["open-1"].beats >= 1
