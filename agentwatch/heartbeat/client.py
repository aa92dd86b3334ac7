"""Clients for agents that push heartbeats: they must never break the program that hosts them.

    async with HeartbeatClient("http://monitor:8787", "batch-7", token=TOKEN, interval=10):
        await do_the_work()          # a beat goes out every 10 s meanwhile

    with SyncHeartbeat("http://monitor:8787", "batch-7", token=TOKEN):   # same, from a thread
        do_the_work()

    ping("http://monitor:8787", "nightly-job", "start"); ...; ping(..., "nightly-job", str(code))

When the endpoint is down or refuses a ping, the client logs (a warning when the trouble starts,
debug while it lasts, info when it ends) and tries again at the next interval. No method raises
for a network error or an HTTP error status; they return False.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from types import TracebackType

import httpx

__all__ = ["HeartbeatClient", "SyncHeartbeat", "ping"]

log = logging.getLogger(__name__)


class _Reporter:
    """Builds ping requests and turns their outcome into a bool and a log line, shared by the
    async and the sync client. Logs one warning per outage, not one per interval."""

    def __init__(self, url: str, agent_id: str, token: str | None) -> None:
        self.base = url.rstrip("/")
        self.agent_id = agent_id
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.trouble: str | None = None

    def url(self, signal: str = "") -> str:
        return f"{self.base}/ping/{self.agent_id}" + (f"/{signal}" if signal else "")

    def outcome(self, response: httpx.Response | None, error: BaseException | None = None) -> bool:
        if response is not None and response.status_code == 200:
            if self.trouble is not None:
                log.info("heartbeat %s: endpoint answers again", self.agent_id)
            self.trouble = None
            return True
        if response is not None:
            trouble = f"refused with {response.status_code}: {response.text[:200]}"
        else:
            trouble = f"endpoint unreachable: {type(error).__name__}: {error}"
        level = logging.WARNING if self.trouble is None else logging.DEBUG
        log.log(level, "heartbeat %s: %s; will try again", self.agent_id, trouble)
        self.trouble = trouble
        return False


class HeartbeatClient:
    """Beats every `interval` seconds from a background task while the context is open.

    `beat()`, `start()`, `fail()` and `finish(code)` send one ping now, for job runs. `transport`
    is for tests (httpx's injectable transport).
    """

    def __init__(
        self,
        url: str,
        agent_id: str,
        *,
        token: str | None = None,
        interval: float = 10.0,
        timeout: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.interval = interval
        self._reporter = _Reporter(url, agent_id, token)
        self._http = httpx.AsyncClient(timeout=timeout, transport=transport)
        self._task: asyncio.Task[None] | None = None
        self.sent = 0  # pings acknowledged

    async def __aenter__(self) -> HeartbeatClient:
        self._task = asyncio.create_task(self._loop(), name=f"heartbeat-{self._reporter.agent_id}")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._http.aclose()

    async def beat(self) -> bool:
        return await self._send("")

    async def start(self) -> bool:
        return await self._send("start")

    async def fail(self) -> bool:
        return await self._send("fail")

    async def finish(self, exit_code: int) -> bool:
        """A job run ended with `exit_code` (0 = success)."""
        return await self._send(str(exit_code))

    async def _send(self, signal: str) -> bool:
        reporter = self._reporter
        try:
            response = await self._http.post(reporter.url(signal), headers=reporter.headers)
        except Exception as exc:  # whatever goes wrong, the host program carries on
            return reporter.outcome(None, exc)
        ok = reporter.outcome(response)
        self.sent += ok
        return ok

    async def _loop(self) -> None:
        while True:
            try:
                await self.beat()
            except Exception:  # a bug here must stop neither the beats nor the host program
                log.exception("heartbeat %s: unexpected error", self._reporter.agent_id)
            await asyncio.sleep(self.interval)


class SyncHeartbeat:
    """HeartbeatClient for synchronous programs: beats from a daemon thread while open."""

    def __init__(
        self, url: str, agent_id: str, *, token: str | None = None, interval: float = 10.0, timeout: float = 5.0
    ) -> None:
        self.interval, self.timeout = interval, timeout
        self._reporter = _Reporter(url, agent_id, token)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{agent_id}", daemon=True)
        self.sent = 0

    def __enter__(self) -> SyncHeartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.timeout + 1)

    def _loop(self) -> None:
        with httpx.Client(timeout=self.timeout) as http:
            while not self._stop.is_set():
                self.sent += _post(http, self._reporter, "")
                self._stop.wait(self.interval)


def ping(url: str, agent_id: str, signal: str = "", *, token: str | None = None, timeout: float = 5.0) -> bool:
    """Send one ping now: signal "" (a beat), "start", "fail" or an exit code. Never raises."""
    with httpx.Client(timeout=timeout) as http:
        return _post(http, _Reporter(url, agent_id, token), signal)


def _post(http: httpx.Client, reporter: _Reporter, signal: str) -> bool:
    try:
        response = http.post(reporter.url(signal), headers=reporter.headers)
    except Exception as exc:  # whatever goes wrong, the host program carries on
        return reporter.outcome(None, exc)
    return reporter.outcome(response)
