"""The heartbeat server's intake without a server: tokens, the per-agent rate limit, the buffer that
coalesces pings, and the flusher (a failed write keeps the beats; reports are batched)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from agentwatch.beats import Beat, PingKind
from agentwatch.errors import StoreError
from agentwatch.heartbeat.intake import BeatBuffer, Credentials, Flusher, RateLimiter, resolve_credentials
from agentwatch.registry import parse_registry

if TYPE_CHECKING:
    from ..conftest import EveryLog

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


REGISTRY = parse_registry(
    """
agents:
  - {id: by-env, probe: {heartbeat: {token_env: BY_ENV_TOKEN}}}
  - {id: by-secret, probe: {heartbeat: {token_secret: by-secret-token}}}
  - {id: env-missing, probe: {heartbeat: {token_env: NOT_SET_ANYWHERE}}}
  - {id: secret-missing, probe: {heartbeat: {token_secret: no-such-block}}}
  - {id: open, probe: {heartbeat: {}}}
  - {id: web, probe: {http: {url: "http://127.0.0.1:9/"}}}
"""
)


def test_credentials_from_env_and_secret_blocks(every_log: EveryLog) -> None:
    creds = resolve_credentials(
        REGISTRY, {"BY_ENV_TOKEN": "env-tok"}, {"by-secret-token": "secret-tok", "no-such-block": None}
    )
    assert creds.tokens == {"by-env": "env-tok", "by-secret": "secret-tok"}
    assert creds.unavailable == {"env-missing", "secret-missing"}
    assert creds.check("by-env", "Bearer env-tok") and creds.check("by-env", "bearer  env-tok ")
    assert not creds.check("by-env", "Bearer secret-tok")
    assert not creds.check("by-env", "env-tok") and not creds.check("by-env", None)
    assert creds.check("open", None)  # no token configured: open (the server logs a warning)
    assert not creds.check("env-missing", None)
    # Never logged at any level by any logger (DEBUG included); the missing variable is named.
    assert "NOT_SET_ANYWHERE" in every_log.text
    assert not [r for r in every_log if "env-tok" in r.getMessage() or "secret-tok" in r.getMessage()]
    assert "env-tok" not in every_log.text and "secret-tok" not in every_log.text


def test_rate_limit_is_a_token_bucket_per_agent() -> None:
    now = [0.0]
    limiter = RateLimiter(rate=1.0, burst=3, clock=lambda: now[0])
    assert [limiter.acquire("a") for _ in range(4)] == [0.0, 0.0, 0.0, 1.0]
    assert limiter.acquire("b") == 0.0  # another agent has its own bucket
    now[0] = 0.5
    assert limiter.acquire("a") == pytest.approx(0.5)
    now[0] = 1.6
    assert limiter.acquire("a") == 0.0 and limiter.acquire("a") > 0
    now[0] = 100.0  # refills up to the burst, no further
    assert [limiter.acquire("a") == 0.0 for _ in range(4)] == [True, True, True, False]
    assert all(RateLimiter(rate=0, burst=1).acquire("a") == 0.0 for _ in range(100))


def test_buffer_coalesces_like_the_store() -> None:
    buffer = BeatBuffer()
    buffer.add(Beat.ping("a", PingKind.START, at(0)))
    buffer.add(Beat.ping("a", PingKind.FAIL, at(1), 3))
    buffer.add(Beat.ping("a", PingKind.BEAT, at(2)))
    buffer.add(Beat.ping("b", PingKind.BEAT, at(2), 0))
    assert len(buffer) == 2
    a, b = sorted(buffer.drain(), key=lambda x: x.agent_id)
    assert (a.last_start_at, a.last_fail_at, a.last_beat_at, a.last_exit_code, a.beats) == (at(0), at(1), at(2), 3, 3)
    assert not a.failing and a.last_seen == at(2)
    assert b.last_exit_code == 0 and len(buffer) == 0


def test_restore_puts_failed_beats_before_newer_ones() -> None:
    buffer = BeatBuffer()
    buffer.add(Beat.ping("a", PingKind.FAIL, at(1), 2))
    failed_write = buffer.drain()
    buffer.add(Beat.ping("a", PingKind.BEAT, at(5)))
    buffer.restore(failed_write)
    (a,) = buffer.drain()
    assert (a.last_fail_at, a.last_beat_at, a.beats, a.failing) == (at(1), at(5), 2, False)


class FlakyStore:
    """A store whose first write fails."""

    def __init__(self) -> None:
        self.calls = 0
        self.written: list[Beat] = []

    async def record_beats(self, beats: list[Beat]) -> int:
        self.calls += 1
        if self.calls == 1:
            raise StoreError("database is locked")
        self.written.extend(beats)
        return len(beats)


async def test_flusher_keeps_beats_across_a_failed_write_and_batches_reports() -> None:
    store, buffer = FlakyStore(), BeatBuffer()
    reports: list[dict[str, int]] = []
    release = asyncio.Event()

    async def slow_sink(counts: Mapping[str, int], when: datetime) -> None:
        await release.wait()  # a slow Prefect API must not hold up writes
        reports.append(dict(counts))

    flusher = Flusher(store, buffer, interval=0.01, sink=slow_sink)  # type: ignore[arg-type]
    buffer.add(Beat.ping("a", PingKind.BEAT, at(0)))
    assert await flusher.flush() == 0 and len(buffer) == 1  # failed: kept
    assert await flusher.flush() == 1
    buffer.add(Beat.ping("a", PingKind.BEAT, at(1)))
    buffer.add(Beat.ping("b", PingKind.BEAT, at(1)))
    assert await flusher.flush() == 2  # written although the first report is still in flight
    assert [b.agent_id for b in store.written] == ["a", "a", "b"]
    release.set()
    await flusher.drain_reports()  # at shutdown: what was held back is reported too
    assert reports == [{"a": 1}, {"a": 1, "b": 1}]
    assert flusher.written == 3


async def test_reports_are_spaced_by_report_every() -> None:
    store, buffer = FlakyStore(), BeatBuffer()
    store.calls = 1  # no failure this time
    reports: list[dict[str, int]] = []

    async def sink(counts: Mapping[str, int], when: datetime) -> None:
        reports.append(dict(counts))

    now = [0.0]
    flusher = Flusher(store, buffer, 0.5, sink, report_every=10, clock=lambda: now[0])  # type: ignore[arg-type]
    for second in range(25):  # a ping and a flush every second for 25 s
        now[0] = float(second)
        buffer.add(Beat.ping("a", PingKind.BEAT, at(second)))
        await flusher.flush()
        await asyncio.sleep(0)
    await flusher.drain_reports()
    assert reports == [{"a": 1}, {"a": 10}, {"a": 10}, {"a": 4}]  # at 0 s, 10 s, 20 s, and at shutdown


async def test_flusher_run_stops_with_a_last_flush() -> None:
    store, buffer = FlakyStore(), BeatBuffer()
    store.calls = 1  # no failure this time
    flusher = Flusher(store, buffer, interval=3600)  # type: ignore[arg-type]
    task = asyncio.create_task(flusher.run())
    buffer.add(Beat.ping("a", PingKind.BEAT, at(0)))
    await asyncio.sleep(0)
    flusher.stop()
    await asyncio.wait_for(task, 5)
    assert [b.agent_id for b in store.written] == ["a"]


def test_credentials_default_is_open() -> None:
    assert Credentials().check("anyone", None)


async def test_a_bug_in_the_write_keeps_the_beats_too(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        async def record_beats(self, beats: list[Beat]) -> int:
            raise RuntimeError("a bug")

    buffer = BeatBuffer()
    flusher = Flusher(Broken(), buffer, interval=0.01)  # type: ignore[arg-type]
    buffer.add(Beat.ping("a", PingKind.BEAT, at(0)))
    assert await flusher.flush() == 0 and await flusher.flush() == 0
    assert (len(buffer), flusher.failing) == (1, 2)
    assert "2 in a row" in caplog.text and "RuntimeError" in caplog.text
