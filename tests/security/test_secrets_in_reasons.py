"""Threat (class 5 of tests/security/README.md): secrets leak through reasons.

A header value written as a YAML block scalar ends in a newline, and httpx's "Illegal header
value b'Bearer ...'" put the token into the reason, and from there into `check --json`, the state
store, the event, the artifact and the flow log. Two defences, both driven for real here (a real HTTP
server on 127.0.0.1, the real `agentwatch` command, a real Prefect API and SQLite store):

- header values (and header names and URLs) are checked at registry load; the error names the
  agent and the field, never the value;
- every probe result is scrubbed at the dispatcher (`run_probe`) of the agent's header values and
  URL credentials, in every form a message quotes them. The hostile server below answers with a
  broken status line that echoes the request's headers, so httpx raises an error quoting the
  bearer token and the Basic credentials it made from the URL's user info.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socketserver
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agentwatch.errors import RegistryError
from agentwatch.probes import make_http_client, run_probe
from agentwatch.registry import load_registry

from ..integration.prefect_reads import artifact_versions, wait_for_events

pytestmark = pytest.mark.integration

TOKEN = "tok-7f3a9c1e5b2d4f60"
PASSWORD = "pw-hunter2-c0ffee"
QUERY_TOKEN = "qt-51d2e8a0b7"
SECRETS = (TOKEN, PASSWORD, QUERY_TOKEN, base64.b64encode(f"ops:{PASSWORD}".encode()).decode())


def agentwatch(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


class _Echo(socketserver.StreamRequestHandler):
    """Answers every request with a status line that echoes its request headers: httpx refuses it
    with an error that quotes them (a hostile or broken agent)."""

    def handle(self) -> None:
        lines = []
        while (line := self.rfile.readline()) not in (b"\r\n", b""):
            lines.append(line.strip())
        self.wfile.write(b"HTTP/1.1 2OO " + b" | ".join(lines) + b"\r\n\r\n")


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@pytest.fixture
def echo_port() -> Iterator[int]:
    server = _Server(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, name="echo-server", daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def hostile_registry(path: Path, port: int) -> Path:
    path.write_text(
        "agents:\n"
        "  - id: echo-bearer\n"
        "    timeout: 5s\n"
        f"    probe: {{http: {{url: 'http://127.0.0.1:{port}/health', headers: {{Authorization: 'Bearer {TOKEN}'}}}}}}\n"
        "  - id: echo-basic\n"
        "    timeout: 5s\n"
        f"    probe: {{http: {{url: 'http://ops:{PASSWORD}@127.0.0.1:{port}/health?token={QUERY_TOKEN}'}}}}\n"
    )
    return path


def assert_no_secret(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"a secret leaked into {where}"


def test_a_header_value_ending_in_a_newline_is_refused_at_load(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    # The block scalar `|` keeps the final newline: the value is "Bearer <token>\n".
    path.write_text(
        "agents:\n"
        "  - id: web-1\n"
        "    probe:\n"
        "      http:\n"
        "        url: http://127.0.0.1:9/health\n"
        "        headers:\n"
        "          Authorization: |\n"
        f"            Bearer {TOKEN}\n"
    )
    with pytest.raises(RegistryError) as info:
        load_registry(path)
    (problem,) = info.value.problems
    assert (problem.agent, problem.field) == ("web-1", "probe.http.headers")
    assert "header 'Authorization'" in problem.message and "line break" in problem.message
    assert "|-" in problem.message  # says how to write it

    for command in ("validate", "check"):  # check fails before any Prefect start-up
        done = agentwatch(command, str(path), env={"PREFECT_API_URL": "http://127.0.0.1:9/api"})
        assert done.returncode == 1
        assert "agent 'web-1' field 'probe.http.headers'" in done.stderr
        assert_no_secret(done.stdout + done.stderr, f"`agentwatch {command}`")


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (f"Bearer {TOKEN}\r", "line break"),
        (f"Bearer {TOKEN}\0", "NUL"),
        (f"Bearer\x01{TOKEN}", "control character"),
        (f"Bearer {TOKEN}é", "non-ASCII"),
        (f" Bearer {TOKEN}", "whitespace"),
    ],
    ids=["cr", "nul", "control", "non-ascii", "leading-space"],
)
def test_other_unsendable_header_values_are_refused_without_echo(tmp_path: Path, value: str, problem: str) -> None:
    path = tmp_path / "fleet.yaml"
    doc = {
        "agents": [{"id": "web-1", "probe": {"http": {"url": "http://127.0.0.1:9/", "headers": {"X-Token": value}}}}]
    }
    path.write_text(json.dumps(doc))  # JSON is YAML, and escapes every character
    done = agentwatch("validate", str(path))
    assert done.returncode == 1
    assert "agent 'web-1' field 'probe.http.headers': header 'X-Token'" in done.stderr and problem in done.stderr
    assert_no_secret(done.stdout + done.stderr, "`agentwatch validate`")


async def test_an_error_quoting_the_request_is_scrubbed_at_the_dispatcher(echo_port: int, tmp_path: Path) -> None:
    registry = load_registry(hostile_registry(tmp_path / "fleet.yaml", echo_port))
    async with make_http_client() as client:
        bearer, basic = [await run_probe(agent, http=client) for agent in registry.agents]
    # The target answered: the reason says what was wrong with the answer, minus the secrets.
    assert bearer.reason.startswith("illegal status line") and "Authorization: ***" in bearer.reason
    assert basic.reason.startswith("illegal status line") and "Authorization: Basic ***" in basic.reason
    assert "token=***" in basic.reason
    assert basic.details["url"] == f"http://***@127.0.0.1:{echo_port}/health?token=***"
    assert_no_secret(repr([bearer, basic]), "the probe results")


async def test_check_json_the_store_events_and_artifacts_never_show_a_secret(
    prefect_server: str, state_db: str, echo_port: int, tmp_path: Path
) -> None:
    started = datetime.now(UTC)
    path = hostile_registry(tmp_path / "fleet.yaml", echo_port)
    env = {"PREFECT_API_URL": prefect_server, "AGENTWATCH_DATABASE_URL": state_db}
    done = await asyncio.to_thread(agentwatch, "check", str(path), "--json", env=env)
    assert done.returncode == 0, done.stderr
    rows = {row["id"]: row for row in json.loads(done.stdout)}
    assert {rows["echo-bearer"]["state"], rows["echo-basic"]["state"]} == {"degraded"}
    assert "Authorization: ***" in rows["echo-bearer"]["reason"]
    assert_no_secret(done.stdout, "`check --json`")
    assert_no_secret(done.stderr, "the flow log")

    # Every table of the store, as text: reasons, transitions, anything else a future table holds.
    db_path = state_db.removeprefix("sqlite:///")
    with sqlite3.connect(db_path) as db:
        tables = [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        dump = "\n".join(repr(row) for table in tables for row in db.execute(f'SELECT * FROM "{table}"'))
    assert "illegal status line" in dump  # the reason was stored ...
    assert_no_secret(dump, "the state store")  # ... scrubbed

    # What the flow published: the transition events and the per-agent artifacts.
    resources = ["agentwatch.agent.echo-bearer", "agentwatch.agent.echo-basic"]
    events = await wait_for_events("agentwatch.agent.", resources, since=started, until=lambda evs: len(evs) >= 2)
    assert len(events) >= 2
    assert_no_secret(repr([(e.event, e.payload, e.resource, e.related) for e in events]), "the events")
    artifacts = [a for key in ("agent-echo-bearer", "agent-echo-basic") for a in await artifact_versions(key)]
    assert artifacts and any("illegal status line" in str(a.data) for a in artifacts)
    assert_no_secret(repr([(a.data, a.description) for a in artifacts]), "the artifacts")
