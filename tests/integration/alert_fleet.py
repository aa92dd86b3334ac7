"""The alert tests' shared fleet on the session's Prefect test server (which runs the triggers and
actions services): a webhook receiver on 127.0.0.1 standing in for Slack, Teams, Discord and a
plain webhook, each route pointed at a path of its own; real HTTP agents on 127.0.0.1; a registry
with routes and silences; and `agentwatch bootstrap` run once per session, as a user runs it.

Each route's URL carries a secret token (`?token=...`, as Slack's and Discord's URLs carry
theirs): the receiver shows it arrived, and the secret checks look for it everywhere else.

Fixtures (registered in conftest.py): `fleet`, one per session (bootstrap takes 10-25 s: the
alert modules share it; its teardown removes agentwatch's automations and blocks), and
`alerting`, per test: the fleet's environment in this process (route URL variables, its state
store) and no message received yet. A test that changes the routes puts them back. Bootstrap
runs with `--interval 10`: "monitor stalled" comes 30 s after the last cycle, on /watch only.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.client.orchestration import get_client

from agentwatch.demo import AgentServer, serve_in_thread

from .alert_support import WebhookReceiver, receiving
from .docker_support import SESSION, TEST_LABEL

__all__ = [
    "BULK",
    "CHATS",
    "ROOT",
    "SETTLE",
    "Fleet",
    "alerting_fixture",
    "bootstrap",
    "counts",
    "fleet_fixture",
    "remove_agentwatch_objects",
    "settle",
]

ROOT = Path(__file__).resolve().parents[2]
AGENTWATCH = str(Path(sys.executable).with_name("agentwatch"))
CHATS = {"slack": "/slack", "teams": "/teams", "discord": "/discord", "webhook": "/hook"}
# Routes beside the four chats: (name suffix, kind, path, labels matched, monitor).
OTHER_ROUTES = [
    ("bulk", "webhook", "/bulk", {"tier": "bulk"}, False),
    ("docker", "discord", "/docker", {"tier": "docker"}, False),
    ("flap", "webhook", "/flap", {"tier": "flap"}, False),
    ("watch", "webhook", "/watch", {"tier": "none"}, True),  # only /watch hears "monitor stalled"
]
PATHS = {**{f"e2e-{k}": p for k, p in CHATS.items()}, **{f"e2e-{n}": p for n, _, p, _, _ in OTHER_ROUTES}}
BULK = [f"e2e-bulk-{i}" for i in range(20)]
SETTLE = 3.0  # after the expected messages arrived, wait this long for any extra one


@dataclass
class Fleet:
    """The alert tests' fleet: writes its registry with some agents failing, runs monitor cycles."""

    path: Path
    agents: AgentServer
    receiver: WebhookReceiver
    api_url: str
    env: dict[str, str]
    token: str  # in every route's URL, nowhere else
    interval: float = 10.0
    environ: dict[str, str] = field(default_factory=dict)  # what `alerting` sets in this process
    down: set[str] = field(default_factory=set)
    container: str | None = None
    flap: bool = False  # add e2e-flap-1, which flaps after two changes within a minute
    latencies: list[float] = field(default_factory=list)
    first: subprocess.CompletedProcess[str] | None = None  # the module's first bootstrap

    def url(self, route: str) -> str:
        return f"{self.receiver.url}{PATHS[route]}?token={self.token}-{route}"

    def write(self) -> None:
        def http(agent_id: str, labels: dict[str, str], **extra: Any) -> dict[str, Any]:
            mode = "fail" if agent_id in self.down else "ok"
            probe = {"http": {"url": self.agents.url(f"{mode}-{agent_id}")}}
            return {"id": agent_id, "labels": labels, "probe": probe, **extra}

        agents = [http("e2e-web-1", {"tier": "web"}), http("e2e-quiet-1", {"tier": "web", "maint": "yes"})]
        agents += [http(a, {"tier": "bulk"}) for a in BULK]
        if self.container:
            agents.append(
                {"id": "e2e-dock-1", "labels": {"tier": "docker"}, "probe": {"docker": {"container": self.container}}}
            )
        if self.flap:
            flap = {"failure_threshold": 1, "flap_threshold": 1, "flap_window": "1m"}
            agents.append(http("e2e-flap-1", {"tier": "flap"}, **flap))
        now = datetime.now(UTC)
        routes = [
            {
                "name": f"e2e-{kind}",
                "kind": kind,
                "url_env": f"AW_E2E_{kind.upper()}",
                "match": {"labels": {"tier": "web"}},
            }
            for kind in CHATS
        ]
        routes += [
            {"name": f"e2e-{name}", "kind": kind, "url_env": f"AW_E2E_{name.upper()}", "match": {"labels": labels}}
            for name, kind, _, labels, _ in OTHER_ROUTES
        ]
        for route in routes:
            route["monitor"] = route["name"] == "e2e-watch"
        silence = {
            "match": {"labels": {"maint": "yes"}},
            "start": (now - timedelta(hours=1)).isoformat(),
            "end": (now + timedelta(hours=1)).isoformat(),
            "reason": "planned maintenance",
        }
        registry = {
            "defaults": {"failure_threshold": 2, "timeout": "2s"},
            "agents": agents,
            "alerts": {"group_threshold": 5, "routes": routes, "silences": [silence]},
        }
        self.path.write_text(yaml.safe_dump(registry, sort_keys=False))

    async def cycle(self) -> dict[str, dict[str, Any]]:
        from flows.monitor import monitor_fleet  # only when a test runs a cycle (conftest imports this module)

        self.write()
        return {row["id"]: row for row in await monitor_fleet(str(self.path), force=True)}

    def on(self, route: str) -> list[Any]:
        """The messages the receiver got on `route`'s path."""
        return self.receiver.on(PATHS[route])


@pytest.fixture(scope="session", name="fleet")
def fleet_fixture(prefect_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    base = tmp_path_factory.mktemp("alerts")
    with receiving() as receiver, serve_in_thread() as agents:
        state = Fleet(base / "fleet.yaml", agents, receiver, prefect_server, {}, secrets.token_hex(16))
        env = {f"AW_E2E_{route.removeprefix('e2e-').upper()}": state.url(route) for route in PATHS}
        env |= {
            "AGENTWATCH_DATABASE_URL": f"sqlite:///{base}/state.db",
            # The automation restarts failed containers here, so the test sees it do so.
            "AGENTWATCH_RECONCILE_IN_MONITOR": "false",
            "AGENTWATCH_RESTART_BACKOFF": "0s",
            "AGENTWATCH_DOCKER_SCOPE": f"{TEST_LABEL}={SESSION}",
        }
        state.environ = env
        state.env = {**os.environ, **env, "PREFECT_API_URL": prefect_server}
        asyncio.run(remove_agentwatch_objects())  # what an earlier module may have left: start from none
        state.write()
        state.first = bootstrap(state)
        yield state
        asyncio.run(remove_agentwatch_objects())
        if state.latencies:
            print(f"\nevent -> webhook latency: {sorted(round(x, 3) for x in state.latencies)} s")


@pytest.fixture(name="alerting")
def alerting_fixture(fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> Fleet:
    """The fleet, its environment set in this process for one test, no message received yet."""
    for key, value in fleet.environ.items():
        monkeypatch.setenv(key, value)
    fleet.receiver.clear()
    return fleet


async def remove_agentwatch_objects() -> None:
    """Remove agentwatch's automations and notification blocks from the server."""
    async with get_client() as client:
        for automation in await client.read_automations():
            if automation.name.startswith("agentwatch: "):
                await client.delete_automation(automation.id)
        try:
            blocks = await client.read_block_documents_by_type("custom-webhook", include_secrets=False)
        except Exception:  # the block type is not registered yet: no block exists
            return
        for block in blocks:
            if block.name and block.name.startswith("agentwatch-"):
                await client.delete_block_document(block.id)


def bootstrap(fleet: Fleet, *args: str, check: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
    """`agentwatch bootstrap` on the fleet's registry, as a user runs it."""
    command = [AGENTWATCH, "bootstrap", str(fleet.path), "--interval", f"{fleet.interval:g}", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, env={**fleet.env, **env}, cwd=ROOT)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def counts(receiver: WebhookReceiver, *paths: str) -> dict[str, int]:
    return {p: len(receiver.on(p)) for p in paths}


def settle(receiver: WebhookReceiver, expected: dict[str, int], timeout: float = 30) -> dict[str, int]:
    """Wait until every path has at least its expected count, then SETTLE more; return the counts."""
    receiver.wait(lambda r: all(len(r.on(p)) >= n for p, n in expected.items()), timeout)
    time.sleep(SETTLE)
    return counts(receiver, *expected)
