"""The commands end to end against the Prefect test server and a real SQLite store:
`agentwatch pause/resume/status` through `cli.main`, and `agentwatch heartbeat-server`
as a process of its own, with a token from a Prefect Secret block."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
import yaml

from agentwatch.store import StateStore
from cli import main

from .heartbeat_support import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def registry_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    path = tmp_path / "fleet.yaml"
    agents = [
        {"id": "cli-beat", "probe": {"heartbeat": {"timeout": "30s"}}},
        {"id": "cli-web", "probe": {"http": {"url": "http://127.0.0.1:9/health"}}},
    ]
    path.write_text(yaml.safe_dump({"agents": agents}))
    monkeypatch.setenv("AGENTWATCH_REGISTRY", str(path))  # the default of --registry
    return str(path)


def status(capsys: pytest.CaptureFixture[str]) -> dict[str, dict]:
    capsys.readouterr()
    assert main(["status", "--json"]) == 0
    return {row["id"]: row for row in json.loads(capsys.readouterr().out)}


def test_unknown_ids_and_bad_times_are_rejected(
    registry_path: str, state_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["pause", "nope", "--registry", registry_path]) == 2
    assert "no agent 'nope' in" in capsys.readouterr().err
    assert main(["resume", "nope"]) == 2
    assert main(["pause", "cli-web", "--until", "yesterday"]) == 2
    assert "--until: not a time or a duration" in capsys.readouterr().err


def test_pause_status_resume(
    prefect_server: str, registry_path: str, state_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = status(capsys)
    assert rows["cli-beat"]["state"] == "unknown" and rows["cli-beat"]["missed"] == 0
    assert rows["cli-web"]["probe"] == "http" and rows["cli-web"]["last_beat"] is None

    assert main(["pause", "cli-beat", "--sticky", "--until", "2h", "--reason", "upgrading"]) == 0
    assert main(["pause", "cli-web"]) == 0
    rows = status(capsys)
    beat = rows["cli-beat"]
    assert (beat["state"], beat["paused"], beat["sticky"], beat["reason"]) == ("paused", True, True, "upgrading")
    assert beat["paused_until"] is not None and beat["missed"] is None
    assert rows["cli-web"]["paused"] and not rows["cli-web"]["sticky"]

    assert main(["resume", "cli-beat"]) == 0
    rows = status(capsys)
    assert (rows["cli-beat"]["state"], rows["cli-beat"]["paused"]) == ("unknown", False)
    assert main(["status"]) == 0  # the table for people
    assert "cli-web" in capsys.readouterr().out


def test_heartbeat_server_command_reads_tokens_from_secret_blocks(
    prefect_server: str, state_db: str, tmp_path: Path
) -> None:
    from prefect.blocks.system import Secret

    block = f"hb-token-{uuid.uuid4().hex[:8]}"
    Secret(value="from-a-block").save(block)
    registry = tmp_path / "fleet.yaml"
    agents = [
        {"id": "by-block", "probe": {"heartbeat": {"token_secret": block}}},
        {"id": "no-block", "probe": {"heartbeat": {"token_secret": "no-such-block"}}},
    ]
    registry.write_text(yaml.safe_dump({"agents": agents}))
    port = free_port()
    env = {**os.environ, "PREFECT_API_URL": prefect_server, "AGENTWATCH_DATABASE_URL": state_db}
    cmd = [sys.executable, "-m", "cli", "heartbeat-server", str(registry), "--port", str(port)]
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.communicate()[0]
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "heartbeat-server did not start"
                time.sleep(0.2)
        assert httpx.post(f"{url}/ping/by-block", headers={"Authorization": "Bearer from-a-block"}).status_code == 200
        assert httpx.post(f"{url}/ping/by-block", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.post(f"{url}/ping/no-block").status_code == 503  # its token could not be read
    finally:
        server.send_signal(signal.SIGINT)
        output = server.communicate(timeout=30)[0]
    assert server.returncode == 0, output
    assert "cannot load Secret block 'no-such-block'" in output and "from-a-block" not in output

    async def stored() -> int:
        async with StateStore(state_db) as store:
            return (await store.load_beats())["by-block"].beats

    assert asyncio.run(stored()) == 1
