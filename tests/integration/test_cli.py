"""The `agentwatch` command as a user runs it: a real process, a real Prefect API, a real port."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from agentwatch.demo import closed_port

pytestmark = pytest.mark.integration


def agentwatch(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def test_validate_accepts_a_good_registry(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "agents": [
                    {"id": "web-1", "probe": {"http": {"url": "http://127.0.0.1:9/health"}}},
                    {"id": "sess", "transport": "stdio"},
                ]
            }
        )
    )
    done = agentwatch("validate", str(path))
    assert done.returncode == 0, done.stderr
    assert "OK, 2 agent(s), 1 listed but not probed" in done.stdout
    assert "sess: stdio transport" in done.stdout


def test_validate_rejects_a_bad_registry_naming_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(
        "defaults: {timeout: forever}\n"
        "agents:\n"
        "  - id: Web_1\n"
        "    probe: {tcp: {host: 127.0.0.1, port: 70000}}\n"
        "  - id: b\n"
        "    probe: {http: {url: 'http://127.0.0.1:1/'}, command: 'true'}\n"
        "    failure_threshold: 0\n"
    )
    done = agentwatch("validate", str(path))
    assert done.returncode == 1
    assert "5 problem(s)" in done.stderr
    for expected in (
        "agent 'b' field 'probe': give exactly one probe kind",
        "registry field 'defaults.timeout': not a duration: 'forever'",
        "agent 'Web_1' field 'id'",
        "agent 'Web_1' field 'probe.tcp.port'",
        "agent 'b' field 'failure_threshold'",
    ):
        assert expected in done.stderr, done.stderr
    assert done.stdout == ""


def test_check_reports_a_dead_port_degraded_then_unhealthy_on_the_third_run(
    prefect_server: str, state_db: str, tmp_path: Path
) -> None:
    path = tmp_path / "fleet.yaml"
    port = closed_port()
    path.write_text(
        yaml.safe_dump(
            {
                "agents": [
                    {"id": "dead-port", "probe": {"tcp": {"host": "127.0.0.1", "port": port}}, "timeout": "1s"},
                    {"id": "disk", "probe": {"command": "test -d /"}},
                ]
            }
        )
    )
    env = {"PREFECT_API_URL": prefect_server, "AGENTWATCH_DATABASE_URL": state_db}
    seen = []
    for _ in range(3):
        done = agentwatch("check", str(path), "--json", env=env)
        assert done.returncode == 0, done.stderr
        rows = {row["id"]: row for row in json.loads(done.stdout)}
        assert {"id", "state", "reason", "failures"} <= set(rows["dead-port"])
        assert rows["disk"]["state"] == "healthy"
        seen.append((rows["dead-port"]["state"], rows["dead-port"]["failures"]))
        last = rows["dead-port"]
    assert seen == [("degraded", 1), ("degraded", 2), ("unhealthy", 3)]
    assert last["reason"] == "unhealthy after 3 consecutive failed health checks: connection refused"

    table = agentwatch("check", str(path), env=env)
    assert table.returncode == 0, table.stderr
    assert "dead-port" in table.stdout and "unhealthy" in table.stdout


def test_check_with_no_prefect_api_configured_uses_an_ephemeral_one(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump({"agents": [{"id": "disk", "probe": {"command": "test -d /"}}]}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(
        PREFECT_HOME=str(tmp_path / "prefect"),
        AGENTWATCH_DATABASE_URL=f"sqlite:///{tmp_path}/state.db",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
    )
    done = subprocess.run(
        [sys.executable, "-m", "cli", "check", str(path), "--json"],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert [row["state"] for row in json.loads(done.stdout)] == ["healthy"]


def test_check_on_a_bad_registry_fails_before_starting_prefect(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text("agents: [{id: x, probe: {}}]\n")
    done = agentwatch("check", str(path), env={"PREFECT_API_URL": "http://127.0.0.1:9/api"})
    assert done.returncode == 1
    assert "agent 'x' field 'probe'" in done.stderr
    assert "give exactly one probe kind" in done.stderr


def test_check_due_only_probes_only_the_agents_whose_interval_ran_out(
    prefect_server: str,
    state_db: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # In this process (a flow run each, no process start): each probe leaves a line in its own file.
    from cli import main

    monkeypatch.setenv("PREFECT_CLIENT_MAX_RETRIES", "2")  # what `check` sets for itself, kept to this test
    path = tmp_path / "fleet.yaml"
    agents = [
        {"id": agent, "interval": interval, "probe": {"command": f"echo x >> {tmp_path}/{agent}.log"}}
        for agent, interval in (("hourly", "1h"), ("every-run", "0s"))
    ]
    path.write_text(yaml.safe_dump({"agents": agents}))

    def probes() -> dict[str, int]:
        return {a: len((tmp_path / f"{a}.log").read_text().splitlines()) for a in ("hourly", "every-run")}

    assert main(["check", str(path), "--json"]) == 0  # every agent, due or not
    assert probes() == {"hourly": 1, "every-run": 1}
    capsys.readouterr()
    assert main(["check", str(path), "--json", "--due-only"]) == 0
    assert probes() == {"hourly": 1, "every-run": 2}  # hourly's interval has not run out
    rows = {row["id"]: row for row in json.loads(capsys.readouterr().out)}
    assert (rows["hourly"]["state"], rows["every-run"]["state"]) == ("healthy", "healthy")  # still listed
    assert main(["check", str(path), "--json"]) == 0
    assert probes() == {"hourly": 2, "every-run": 3}
