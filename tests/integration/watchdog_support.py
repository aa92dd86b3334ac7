"""Real processes for the watchdog tests: a `prefect server start` of their own (its own
PREFECT_HOME, SQLite, analytics off, 127.0.0.1 on a free port) and `python -m deployments.serve`
subprocesses, each in its own process group so a test can SIGKILL one whole (serve and the flow
runs it started) as a crash would, or SIGTERM it as an operator would."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import httpx

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], T], timeout: float, interval: float = 0.5, what: str = "condition") -> T:
    """Poll `check` until it returns something truthy; fail (AssertionError) after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def stop_group(process: subprocess.Popen[bytes], grace: float = 20.0) -> int:
    """SIGTERM the process group, SIGKILL it after `grace`; the exit code of the leader."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # whatever is left of the group
    return process.wait(timeout=10)


@dataclass
class PrefectServer:
    """`prefect server start` on 127.0.0.1:<free port>, its database under `home`."""

    home: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def client_env(self) -> dict[str, str]:
        """The environment of a client process (a serve, a CLI) of this server."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(
            PREFECT_API_URL=self.api_url,
            PREFECT_HOME=str(self.home / "client"),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            DO_NOT_TRACK="1",
        )
        return env

    def start(self, timeout: float = 120.0) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(
            PREFECT_HOME=str(self.home),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_UI_ENABLED="false",
            DO_NOT_TRACK="1",
            **self.env,
        )
        log = (self.home / "server.log").open("wb")
        command = [str(Path(sys.executable).parent / "prefect"), "server", "start"]
        command += ["--host", "127.0.0.1", "--port", str(self.port)]
        self.process = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.home
        )

        def healthy() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"prefect server exited: {(self.home / 'server.log').read_text()[-3000:]}")
            try:
                return httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, timeout, what="the Prefect server to answer")

    def stop(self) -> None:
        if self.process is not None:
            stop_group(self.process, grace=15)
            self.process = None


@dataclass
class Serve:
    """One `python -m deployments.serve REGISTRY --interval N` in its own process group."""

    registry: Path
    interval: float
    env: Mapping[str, str]
    log: Path
    extra_args: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = None
    stopped: bool = False  # by the test: kill(), signal(), stop()

    def start(self) -> Serve:
        command = [sys.executable, "-m", "deployments.serve", str(self.registry), "--interval", f"{self.interval:g}"]
        out = self.log.open("ab")
        out.write(f"\n=== {' '.join(command[1:])} {' '.join(self.extra_args)}\n".encode())
        out.flush()
        self.process = subprocess.Popen(
            [*command, *self.extra_args],
            env=dict(self.env),
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the whole group: serve and every flow-run process it started, as a crash would."""
        assert self.process is not None
        self.stopped = True
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def signal(self, signum: int) -> None:
        """Send `signum` to the serve process only (as `kill PID` or a supervisor would)."""
        assert self.process is not None
        self.stopped = True
        self.process.send_signal(signum)

    def ctrl_c(self) -> None:
        """What Ctrl-C in serve's terminal does: SIGINT to its whole process group (its runs too)."""
        assert self.process is not None
        self.stopped = True
        os.killpg(self.process.pid, signal.SIGINT)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        self.stopped = True
        if self.process is not None:
            stop_group(self.process, grace=30)
