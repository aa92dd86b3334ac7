"""Threat (class 8 of tests/security/README.md): registry edges that forget the fleet, eat memory, or fail late.

- An empty file validated as "OK, 0 agents", and the next run forgot every agent, pauses
  included. A registry must say `agents: []` to mean an empty fleet; anything less is refused.
- A 50 MB file was accepted at 984 MB RSS. The file is refused before parsing past
  AGENTWATCH_REGISTRY_MAX_BYTES (10 MiB by default), reading no more than that.
- An `http` URL with port 70000 passed `validate` and failed at probe time as "unhandled errors
  in a TaskGroup (1 sub-exception)". URLs are checked at load; and whatever the http probe meets
  that is not an httpx error, its reason says what happened, never an exception group's repr.

Each through the real `agentwatch` command where a user would meet it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentwatch.probes import make_http_client, run_probe
from agentwatch.registry import AgentSpec, HttpProbe, Policy, ProbeSpec

pytestmark = pytest.mark.integration

EMPTY_FLEET_HINT = "write `agents: []` for a fleet with no agents"


def agentwatch(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "registry: the file is empty (or only comments)"),
        ("# every agent commented out\n# agents:\n", "registry: the file is empty (or only comments)"),
        ("null\n", "registry: the file is empty (or only comments)"),
        ("agents:\n# - id: web-1\n", "registry field 'agents': empty (every entry commented out?)"),
        ("defaults: {timeout: 2s}\n", "registry field 'agents': missing"),
    ],
    ids=["empty", "comments", "null", "agents-null", "no-agents"],
)
def test_a_registry_that_does_not_say_agents_is_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(text)
    done = agentwatch("validate", str(path))
    assert done.returncode == 1 and done.stdout == ""
    assert message in done.stderr and EMPTY_FLEET_HINT in done.stderr
    # The monitor refuses it too, before any Prefect start-up: no run that forgets the fleet.
    done = agentwatch("check", str(path), env={"PREFECT_API_URL": "http://127.0.0.1:9/api"})
    assert done.returncode == 1 and message in done.stderr


def test_an_explicit_empty_fleet_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text("agents: []\n")
    done = agentwatch("validate", str(path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{path}: OK, 0 agent(s)"


def test_a_file_over_the_cap_is_refused_naming_file_size_and_setting(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    agents = [{"id": f"a-{i}", "probe": {"tcp": {"host": "127.0.0.1", "port": 1 + i}}} for i in range(100)]
    path.write_text(json.dumps({"agents": agents}))
    size = path.stat().st_size
    assert agentwatch("validate", str(path)).returncode == 0  # valid, and under the default cap
    done = agentwatch("validate", str(path), env={"AGENTWATCH_REGISTRY_MAX_BYTES": "2048"})
    assert done.returncode == 1
    assert str(path) in done.stderr
    assert f"file too large ({size:,} bytes, over the limit of 2,048 bytes)" in done.stderr
    assert "AGENTWATCH_REGISTRY_MAX_BYTES" in done.stderr


def test_a_50_mb_file_is_refused_without_reading_it(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    line = b"  - {id: a, probe: {tcp: {host: 127.0.0.1, port: 1}}}\n"
    with path.open("wb") as file:
        file.write(b"agents:\n")
        for _ in range(50 * 1024 * 1024 // (len(line) * 1024)):
            file.write(line * 1024)
    # The peak RSS of the process that validates it, from inside that process.
    code = (
        "import resource, sys\n"
        "from cli import main\n"
        "rc = main(['validate', sys.argv[1]])\n"
        "print('peak_rss_kib', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
        "sys.exit(rc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "file too large" in done.stderr and "over the limit of 10,485,760 bytes" in done.stderr
    peak_mib = int(done.stderr.rsplit("peak_rss_kib", 1)[1].split()[0]) / 1024
    # Parsing it took about 1 GB; refusing it reads at most the cap (10 MiB) past the imports.
    assert peak_mib < 400, f"peak RSS {peak_mib:.0f} MiB"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1:70000/health", "not a valid URL (Port out of range 0-65535)"),
        ("http://127.0.0.1:0/health", "URL port must be 1-65535"),
        ("http://ops:hunter2@127.0.0.1:70000/", "'http://***@127.0.0.1:70000/'"),
        ("ftp://127.0.0.1/health", "not an http(s) URL"),
        ("http:///health", "URL has no host"),
        ("http://127.0.0.1:8080/he alth", "URL contains whitespace"),
    ],
    ids=["port-70000", "port-0", "credentials-not-shown", "scheme", "no-host", "space"],
)
def test_a_bad_http_url_fails_validate_naming_agent_and_field(tmp_path: Path, url: str, message: str) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(json.dumps({"agents": [{"id": "web-1", "probe": {"http": {"url": url}}}]}))
    done = agentwatch("validate", str(path))
    assert done.returncode == 1
    assert "agent 'web-1' field 'probe.http.url'" in done.stderr and message in done.stderr
    assert "hunter2" not in done.stderr


async def test_an_unexpected_error_in_the_http_probe_has_a_clear_reason() -> None:
    # A spec that bypassed validation (built in code): the request fails inside anyio with an
    # exception group around an OverflowError.
    spec = HttpProbe.model_construct(
        url="http://127.0.0.1:70000/health", expect_status=None, body_contains=None, max_latency=None, target=None
    )
    agent = AgentSpec.model_construct(
        id="web-1", probe=ProbeSpec.model_construct(http=spec), policy=Policy(), transport=None, endpoint=None
    )
    async with make_http_client() as client:
        result = await run_probe(agent, http=client)
    assert not result.ok
    assert result.reason == "request failed: connect(): port must be 0-65535."
    assert "TaskGroup" not in result.reason and "sub-exception" not in result.reason
