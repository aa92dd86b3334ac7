"""Threat (class 4 of tests/security/README.md): probe labels make the monitor connect to any host and port.

A label-registered probe targets its own container only: its IPs on its networks, a port it
published on this host, and `localhost` meaning the container itself. A label pointing at a
service of the monitor's host (here an HTTP server on 127.0.0.1 that counts requests) or at any
other address never reaches it; the container is named in a warning and probed through its state.
`AGENTWATCH_DOCKER_LABEL_PROBE_HOSTS` allows more. Real engine, real servers on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from agentwatch.demo import closed_port, serve_in_thread
from agentwatch.docker import DockerEngine
from agentwatch.models import ProbeResult
from agentwatch.probes import probe_many
from agentwatch.registry import Registry, parse_registry
from agentwatch.settings import get_settings
from tasks.containers import Observation, list_fleet_containers

from ..integration.docker_support import RunContainer, status_is, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.docker]

HTTPD = "echo ok > /www/health && exec httpd -f -p 8080 -h /www"


async def observe() -> tuple[Observation, dict[str, ProbeResult]]:
    """The monitor's view: label registration on this session's containers, then one probe each."""
    async with DockerEngine.from_settings(get_settings()) as engine:
        seen = await list_fleet_containers(engine, parse_registry("agents: []\n"), get_settings())
        results = await probe_many(seen.fleet.agents, docker=engine)
    return seen, {r.agent_id: r for r in results}


async def until_ok(fleet: Registry, agent_id: str, timeout: float = 20) -> ProbeResult:
    """Probe until it passes (httpd in the container needs a moment) or `timeout` runs out."""
    deadline = time.monotonic() + timeout
    while True:
        (result,) = await probe_many([a for a in fleet.agents if a.id == agent_id])
        if result.ok or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.3)


def probe_of(seen: Observation, agent_id: str) -> dict[str, Any]:
    agent = seen.fleet.get(agent_id)
    assert agent is not None and agent.probe is not None
    return agent.probe.model_dump(exclude_none=True, exclude_defaults=True)


async def test_label_probes_reach_their_own_container_only(
    labels_on: None, run_container: RunContainer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serve_in_thread() as host_service:  # a service of the monitor's host the labels aim at
        aimed = host_service.url("ok-secret")
        port = closed_port()
        boxes = [
            run_container(
                "own-port",
                HTTPD,
                agent="own-port",
                labels={"agentwatch.probe.http": f"http://127.0.0.1:{port}/health"},
                ports={"8080/tcp": ("127.0.0.1", port)},
            ),
            run_container(
                "own-ip", HTTPD, agent="own-ip", labels={"agentwatch.probe.http": "http://localhost:8080/health"}
            ),
            run_container("aims-home", "exec /bin/agent", agent="aims-home", labels={"agentwatch.probe.http": aimed}),
            run_container(
                "aims-away", "exec /bin/agent", agent="aims-away", labels={"agentwatch.probe.tcp": "192.0.2.1:5432"}
            ),
        ]
        for box in boxes:
            wait_until(box, status_is("running"))
        ip = boxes[1].attrs["NetworkSettings"]["IPAddress"]

        seen, results = await observe()
        assert probe_of(seen, "own-port") == {"http": {"url": f"http://127.0.0.1:{port}/health"}}
        assert probe_of(seen, "own-ip") == {"http": {"url": f"http://{ip}:8080/health"}}
        # 127.0.0.1:<the host service's port> in a label means that port of the container itself.
        home_ip = boxes[2].attrs["NetworkSettings"]["IPAddress"]
        assert probe_of(seen, "aims-home") == {"http": {"url": aimed.replace("127.0.0.1", home_ip)}}
        assert probe_of(seen, "aims-away") == {"docker": {"container": boxes[3].id}}
        assert [(p.agent, boxes[3].name in p.message) for p in seen.problems] == [("aims-away", True)]

        assert (await until_ok(seen.fleet, "own-port")).ok
        assert (await until_ok(seen.fleet, "own-ip")).ok
        assert not results["aims-home"].ok  # nothing listens on that port in the container
        assert results["aims-away"].ok and results["aims-away"].reason == "running (no healthcheck)"
        assert host_service.requests == 0  # the host's service was never reached

        # A setting can allow more: the same label then reaches the host's service.
        monkeypatch.setenv("AGENTWATCH_DOCKER_LABEL_PROBE_HOSTS", "127.0.0.1")
        seen, results = await observe()
        assert probe_of(seen, "aims-home") == {"http": {"url": aimed}}
        assert results["aims-home"].ok and host_service.requests == 1
