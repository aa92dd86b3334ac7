"""A real heartbeat server (uvicorn) in a thread on 127.0.0.1, for the heartbeat integration tests."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import uvicorn

from agentwatch.heartbeat.intake import BatchSink, Credentials
from agentwatch.heartbeat.server import ServerConfig, create_app, uvicorn_config
from agentwatch.registry import Registry
from agentwatch.store import StateStore


@dataclass
class RunningServer:
    url: str
    port: int


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_server(
    registry: Registry,
    database_url: str,
    *,
    credentials: Credentials | None = None,
    config: ServerConfig | None = None,
    sink: BatchSink | None = None,
    port: int = 0,
) -> Iterator[RunningServer]:
    """Serve the app with uvicorn in a thread (its own event loop and store) until the block ends;
    stopping it runs the lifespan shutdown, which flushes every acknowledged beat."""
    app = create_app(registry, StateStore(database_url), credentials, config or ServerConfig(flush_interval=0.05), sink)
    # The limits the CLI's server runs under (agentwatch/heartbeat/limits.py), at a quieter log level.
    cfg = uvicorn_config(app, "127.0.0.1", port, config)
    cfg.log_level = "warning"
    server = uvicorn.Server(cfg)
    thread = threading.Thread(target=server.run, name="heartbeat-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("heartbeat server did not start")
        time.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield RunningServer(url=f"http://127.0.0.1:{bound}", port=bound)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        assert not thread.is_alive(), "heartbeat server did not stop"
