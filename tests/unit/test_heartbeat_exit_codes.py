"""`POST /ping/<id>/<exit-code>`: README "a job run ended: `0` is a beat, anything else (up to 255)
a failure"; "Exit codes are ASCII `0`-`255` only". The real app (starlette TestClient, a real
SQLite store): every code 0-255 is taken and stored, 256 and beyond are refused (404) and stored
nowhere. (tests/security/test_heartbeat_dos.py sends the Unicode digits to a served process.)"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from agentwatch.beats import Beat
from agentwatch.heartbeat.server import ServerConfig, create_app
from agentwatch.registry import parse_registry
from agentwatch.store import StateStore

REGISTRY = parse_registry(
    """
agents:
  - {id: every-code, probe: {heartbeat: {}}}
  - {id: ok-job, probe: {heartbeat: {}}}
  - {id: refused, probe: {heartbeat: {}}}
"""
)
CONFIG = ServerConfig(rate=0, flush_interval=0.05)  # no rate limit: 256 pings in a row


def stored(url: str) -> dict[str, Beat]:
    async def load() -> dict[str, Beat]:
        async with StateStore(url) as store:
            return await store.load_beats()

    return asyncio.run(load())


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/state.db"


def test_exit_codes_0_to_255_are_taken_and_256_is_refused(url: str) -> None:
    with TestClient(create_app(REGISTRY, StateStore(url), config=CONFIG)) as client:
        answers = {code: client.post(f"/ping/every-code/{code}").status_code for code in range(256)}
        assert {code for code, status in answers.items() if status != 200} == set()
        assert client.post("/ping/ok-job/0").status_code == 200
        for signal in ("256", "300", "999", "1000", "0256", "-1", "65536"):
            assert client.post(f"/ping/refused/{signal}").status_code == 404, signal
    beats = stored(url)  # the app flushes every acknowledged ping at shutdown
    assert "refused" not in beats
    every = beats["every-code"]
    assert (every.beats, every.last_exit_code, every.failing) == (256, 255, True)  # 255: the last, a failure
    ok = beats["ok-job"]
    assert (ok.beats, ok.last_exit_code, ok.failing) == (1, 0, False)  # 0: a beat
