"""Threat (class 6 of tests/security/README.md): the heartbeat server taken down without a token.

- 1,100 connections trickling headers a byte a second, under the usual open-file limit of 1,024,
  made it refuse every client and log 30,000 "Too many open files" lines in 30 s: there was no
  header-read timeout, no connection cap, and slow connections were never closed.
- `POST /ping/<any id>/%C2%B2` answered 500 with a 42-line traceback before any auth check
  ("²".isdigit() is true, int("²") raises), and other Unicode digits were taken as exit codes.

The server runs here as a process of its own through `serve` (the CLI's path once it calls
`serve`), under a low open-file limit set with setrlimit before exec, so the attack below (300
slow connections against a limit of 256) is the issue's at a smaller scale;
`bench/heartbeat_slowloris.py` runs the full one and prints latencies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from agentwatch.heartbeat.server import RateLimitedLog, connection_cap

from ..integration.heartbeat_support import free_port

pytestmark = pytest.mark.integration

TOKEN = "hb-dos-token"
AGENT = "job-1"
SERVE = """
import logging, os, sys
from agentwatch.heartbeat.intake import resolve_credentials
from agentwatch.heartbeat.server import ServerConfig, create_app, serve
from agentwatch.registry import load_registry
from agentwatch.settings import get_settings
from agentwatch.store import StateStore

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
registry = load_registry(sys.argv[1])
settings = get_settings()
config = ServerConfig.from_settings(settings)
app = create_app(
    registry, StateStore(settings.resolved_database_url()), resolve_credentials(registry, os.environ), config
)
serve(app, "127.0.0.1", int(sys.argv[2]), config)
"""


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def heartbeat_server(tmp_path: Path, *, nofile: int | None = None, request_timeout: float = 10.0) -> Iterator[Server]:
    registry = tmp_path / "fleet.yaml"
    registry.write_text(yaml.safe_dump({"agents": [{"id": AGENT, "probe": {"heartbeat": {"token_env": "HB_TOKEN"}}}]}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API_")}
    env.update(
        AGENTWATCH_DATABASE_URL=f"sqlite:///{tmp_path}/state.db",
        AGENTWATCH_HEARTBEAT_RATE="0",
        AGENTWATCH_HEARTBEAT_REQUEST_TIMEOUT=str(request_timeout),
        HB_TOKEN=TOKEN,
    )

    def limit() -> None:  # in the child, before exec: `ulimit -n NOFILE`
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    port = free_port()
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", SERVE, str(registry), str(port)], env=env, stdout=out, stderr=out, preexec_fn=limit
        )
    server = Server(proc, port, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"server exited: {server.log_text()}"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{server.url}/healthz", timeout=2, trust_env=False).status_code == 200:
                    break
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def ping(port: int, path: str, headers: str = f"Authorization: Bearer {TOKEN}\r\n") -> str:
    """One whole request on a new connection; the status code, or what went wrong."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: 0\r\nConnection: close\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n" not in head:
            if not (chunk := sock.recv(4096)):
                return "closed"
            head += chunk
    return head.split(b" ", 2)[1].decode()


@pytest.mark.parametrize(
    "signal",
    ["%C2%B2", "%C2%B9", "%D9%A3", "%EF%BC%91", "%E0%A5%A8", "256", "0256", "-1", "1.0", "%20"],
    ids=[
        "superscript-2",
        "superscript-1",
        "arabic-indic-3",
        "fullwidth-1",
        "devanagari-2",
        "256",
        "4-digits",
        "neg",
        "dot",
        "space",
    ],
)
def test_only_ascii_exit_codes_0_to_255(signal: str, server: Server) -> None:
    assert ping(server.port, f"/ping/{AGENT}/{signal}") == "404"  # with the token
    assert ping(server.port, f"/ping/{AGENT}/{signal}", headers="") == "404"  # without: before any auth
    assert ping(server.port, f"/ping/nobody/{signal}", headers="") == "404"


def test_ascii_exit_codes_still_work_and_nothing_failed(server: Server) -> None:
    assert [ping(server.port, f"/ping/{AGENT}/{code}") for code in ("0", "2", "255", "fail", "start")] == ["200"] * 5
    assert "Traceback" not in server.log_text() and "Exception in ASGI application" not in server.log_text()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with heartbeat_server(tmp_path_factory.mktemp("hb")) as running:
        yield running


def test_keep_alive_and_pipelined_requests_under_the_limits(server: Server) -> None:
    # The request deadline restarts per request: one connection, several requests, all answered.
    with httpx.Client(base_url=server.url, trust_env=False) as client:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert [client.post(f"/ping/{AGENT}", headers=auth).status_code for _ in range(3)] == [200] * 3
    one = f"POST /ping/{AGENT} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 0\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall((one * 3).encode())  # pipelined
        seen = b""
        while seen.count(b"HTTP/1.1 200") < 3:
            chunk = sock.recv(65536)
            assert chunk, f"closed after {seen.count(b'HTTP/1.1 200')} answers"
            seen += chunk


async def test_slow_connections_are_shed_and_good_clients_answered(tmp_path: Path) -> None:
    nofile, slow = 256, 300
    with heartbeat_server(tmp_path, nofile=nofile, request_timeout=2.0) as srv:
        idle_fds = srv.fds()
        conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        for i in range(slow):
            reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
            writer.write(f"POST /ping/{AGENT} HTTP/1.1\r\nHost: x\r\nX-Slow-{i}: ".encode())
            conns.append((reader, writer))
        fds = [srv.fds()]
        answers = []
        for _ in range(20):  # a whole ping now and then, while the slow ones trickle
            for _reader, writer in conns:
                if not writer.is_closing():
                    with contextlib.suppress(OSError):
                        writer.write(b"a")
            answers.append(await asyncio.to_thread(ping, srv.port, f"/ping/{AGENT}"))
            fds.append(srv.fds())
            await asyncio.sleep(0.1)
        assert answers == ["200"] * 20

        async def closed_by_server(reader: asyncio.StreamReader) -> bool:
            try:
                return await asyncio.wait_for(reader.read(), 30) == b""
            except (ConnectionError, TimeoutError):
                return isinstance(reader.exception(), ConnectionError) or reader.at_eof()

        closed = await asyncio.gather(*(closed_by_server(reader) for reader, _writer in conns))
        for _reader, writer in conns:
            writer.close()
        assert all(closed), f"{closed.count(False)} slow connection(s) still open"
        fds.append(srv.fds())
        log = srv.log_text()

    assert max(fds) < nofile, f"server fds {fds}"
    assert fds[-1] <= idle_fds + 8  # back to idle once the slow ones are gone
    assert "Too many open files" not in log
    assert len(log.splitlines()) < 40, log  # a few lines, however many connections were shed
    assert "shed connections" in log  # one summary line says what was shed


async def test_a_stalled_body_is_closed_at_the_deadline_without_a_traceback(tmp_path: Path) -> None:
    with heartbeat_server(tmp_path, request_timeout=1.0) as srv:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        writer.write(
            f"POST /ping/{AGENT} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 100\r\n\r\n"
            "only ten b".encode()
        )
        with contextlib.suppress(ConnectionResetError):  # closed, with nothing said
            assert await asyncio.wait_for(reader.read(), 30) == b""
        writer.close()
        assert ping(srv.port, f"/ping/{AGENT}") == "200"
        log = srv.log_text()
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log


def test_connection_cap_leaves_room_below_the_open_file_limit() -> None:
    assert connection_cap(1024) == 1024 - 64 - 8 * 16
    assert connection_cap(256) == 256 - 32 - 8 * 16
    assert connection_cap(65536) == 65536 - 64 - 8 * 16
    for nofile in (64, 128, 256, 1024, 4096):
        assert 8 <= connection_cap(nofile) < nofile


def test_rate_limited_log_keeps_a_flood_to_a_few_lines() -> None:
    now = [0.0]
    limited = RateLimitedLog(per=10.0, burst=2, total=5, clock=lambda: now[0])

    def record(msg: str, name: str = "asyncio") -> logging.LogRecord:
        return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, None, None)

    flood = [record(f"socket.accept() out of system resource\nsocket: fd={i}") for i in range(1000)]
    passed = [r for r in flood if limited.filter(r)]
    assert len(passed) == 2  # one key: its burst
    others = [record(f"message {i}", "uvicorn.error") for i in range(10)]
    assert sum(limited.filter(r) for r in others) == 3  # ten keys, but five lines in all per window
    now[0] = 10.0  # the next window: the first line says what was left out
    again = record("socket.accept() out of system resource\nsocket: fd=1")
    assert limited.filter(again)
    assert again.getMessage().startswith("socket.accept() out of system resource\nsocket: fd=1 (998 more like this")
