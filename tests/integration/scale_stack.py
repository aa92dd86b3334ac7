"""The Prefect server for scale, for tests: PostgreSQL database + Redis broker, started once per
session by scripts/scale-stack.sh (its own run directory, free ports on 127.0.0.1, a database of its
own that is dropped at the end) and stopped by pid. Without PostgreSQL or redis-server the tests
that use it skip loudly, or fail when AGENTWATCH_REQUIRE_SCALE_STACK is set (CI).

    def test_x(scale_stack: ScaleStack) -> None:
        subprocess.Popen([PREFECT, "worker", "start", "--pool", "p"], env=scale_stack.worker_env())
        with scale_stack.settings():  # this process's Prefect client talks to the stack
            ...
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit

import pytest

from .prefect_process import free_port

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "scale-stack.sh"
REQUIRE = "AGENTWATCH_REQUIRE_SCALE_STACK"
START_TIMEOUT = 900.0  # a fresh machine installs redis-server and prefect-redis first


def read_env_file(path: Path) -> dict[str, str]:
    """The KEY=VALUE lines (shell-quoted values) the script writes."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        for word in shlex.split(line):
            key, _, value = word.partition("=")
            values[key] = value
    return values


@dataclass(frozen=True)
class ScaleStack:
    """A running scale stack. `api_url`: its Prefect API; `client_env`: what a worker or client needs
    (PREFECT_API_URL); `server_env`: every setting the server runs with (database password included);
    `redis_url`, `database_url` (the Prefect database, postgresql://) and `postgres_url` (the role
    that created it) for reading them directly; `run_dir`: pids/, logs/, client.env, server.env."""

    api_url: str
    client_env: dict[str, str]
    server_env: dict[str, str]
    redis_url: str
    database_url: str
    postgres_url: str
    run_dir: Path
    started_in: float

    def worker_env(self, **extra: str) -> dict[str, str]:
        """The environment for a worker (or any client) process: this process's environment as it is
        now (so a test's monkeypatched AGENTWATCH_* settings go along), the stack's client settings,
        then `extra`."""
        return {**os.environ, **self.client_env, **extra}

    @contextlib.contextmanager
    def settings(self) -> Iterator[None]:
        """Point this process's Prefect client (get_client, flows run in-process) at the stack."""
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: self.api_url}):
            yield

    def kill(self, name: str) -> None:
        """SIGKILL one of the stack's processes (redis, server, services), by the pid `start` recorded."""
        os.kill(int((self.run_dir / "pids" / f"{name}.pid").read_text()), signal.SIGKILL)

    def start_again(self, timeout: float = 300.0) -> None:
        """`scripts/scale-stack.sh start` on this stack again, as it was started (its run directory,
        ports, database and role; never fresh): it starts what died and only checks the rest."""
        env = {
            **os.environ,
            "SCALE_STACK_DIR": str(self.run_dir),
            "SCALE_STACK_PORT": str(urlsplit(self.api_url).port),
            "SCALE_STACK_REDIS_PORT": str(urlsplit(self.redis_url).port),
            "SCALE_STACK_DATABASE": self.server_env["SCALE_STACK_DATABASE"],
            "SCALE_STACK_POSTGRES_URL": self.postgres_url,
            "SCALE_STACK_API_WORKERS": self.server_env.get("SCALE_STACK_API_WORKERS", "1"),
            "SCALE_STACK_FRESH": "0",
        }
        done = _run("start", env, timeout)
        assert done.returncode == 0, f"scripts/scale-stack.sh start exited {done.returncode}:\n{done.stderr[-3000:]}"

    def log(self, name: str = "server", lines: int = 40) -> str:
        """The last `lines` of one of the stack's logs (server, services, redis, migrate, postgres)."""
        path = self.run_dir / "logs" / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def _run(command: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), command], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def unavailable(message: str) -> NoReturn:
    message = f"NO SCALE STACK (PostgreSQL + Redis Prefect server): {message}"
    if os.environ.get(REQUIRE):
        pytest.fail(f"{message}\n{REQUIRE} is set, so this is a failure.", pytrace=False)
    pytest.skip(message)


@contextlib.contextmanager
def running_scale_stack(run_dir: Path, **knobs: str) -> Iterator[ScaleStack]:
    """Start the stack in `run_dir` (free ports, a database named after this process), yield it,
    stop it by pid and drop its database. `knobs`: more SCALE_STACK_* / PREFECT_* settings."""
    env = {
        **os.environ,
        "SCALE_STACK_DIR": str(run_dir),
        "SCALE_STACK_PORT": str(free_port()),
        "SCALE_STACK_REDIS_PORT": str(free_port()),
        "SCALE_STACK_DATABASE": f"prefect_scale_t{os.getpid()}",
        "SCALE_STACK_FRESH": "1",
        **knobs,
    }
    started = time.monotonic()
    try:
        done = _run("start", env, START_TIMEOUT)
    except subprocess.TimeoutExpired:
        _run("stop", {**env, "SCALE_STACK_DROP": "1"}, 120)
        unavailable(f"scripts/scale-stack.sh start did not finish within {START_TIMEOUT:g}s")
    if done.returncode != 0:
        _run("stop", {**env, "SCALE_STACK_DROP": "1"}, 120)
        tail = "\n".join(done.stderr.splitlines()[-15:])
        unavailable(f"scripts/scale-stack.sh start exited {done.returncode}:\n{tail}")
    server_env = read_env_file(run_dir / "server.env")
    client_env = read_env_file(run_dir / "client.env")
    stack = ScaleStack(
        api_url=client_env["PREFECT_API_URL"],
        client_env=client_env,
        server_env=server_env,
        redis_url=server_env["SCALE_STACK_REDIS_URL"],
        database_url=server_env["SCALE_STACK_DATABASE_URL"],
        postgres_url=server_env["SCALE_STACK_POSTGRES_URL"],
        run_dir=run_dir,
        started_in=time.monotonic() - started,
    )
    try:
        yield stack
    finally:
        stopped = _run("stop", {**env, "SCALE_STACK_DROP": "1"}, 120)
        if stopped.returncode != 0:
            warnings.warn(f"scale stack teardown: {stopped.stderr[-2000:]}", stacklevel=1)


_PROXY = r"""
import asyncio, sys

PORT, HOST, TARGET = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except Exception:
        pass
    finally:
        writer.close()


async def serve(reader, writer):
    try:
        upstream_reader, upstream_writer = await asyncio.open_connection(HOST, TARGET)
    except OSError:
        writer.close()
        return
    await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))


async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", PORT, reuse_address=True)
    async with server:
        await server.serve_forever()


asyncio.run(main())
"""


@dataclass
class TcpProxy:
    """A TCP forwarder on 127.0.0.1:`port` to `host`:`target`, a process of its own (its own session):
    put in front of a server, `kill()` (SIGKILL) cuts every connection through it and refuses new
    ones, as a dead link or a dead server would, while the server itself keeps serving its other
    clients; `start()` again brings the link back on the same port."""

    host: str
    target: int
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> None:
        command = [sys.executable, "-c", _PROXY, str(self.port), self.host, str(self.target)]
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return
            assert self.process.poll() is None, f"the TCP proxy exited {self.process.returncode}"
            assert time.monotonic() < deadline, f"the TCP proxy does not listen on 127.0.0.1:{self.port}"
            time.sleep(0.1)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL, by pid."""
        if self.alive():
            assert self.process is not None
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture(scope="session", name="scale_stack")
def scale_stack_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScaleStack]:
    """The scale stack for this session (one Prefect server process with its services, on
    PostgreSQL and Redis), or a loud skip (a failure when AGENTWATCH_REQUIRE_SCALE_STACK is set)."""
    with running_scale_stack(tmp_path_factory.mktemp("scale-stack")) as stack:
        yield stack
