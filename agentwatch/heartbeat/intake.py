"""The heartbeat server's intake: who may ping (tokens), how often (a token bucket per agent), and
the buffer that coalesces pings so the store sees one write per flush, not one per ping.

A ping is acknowledged once it is in the buffer; `Flusher` writes the buffer to the store every
`interval` in one transaction and once more on shutdown, so a clean shutdown loses no
acknowledged ping (a crash loses at most one interval's worth).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ..beats import Beat
from ..errors import StoreError
from ..registry import Registry
from ..store import StateStore

__all__ = ["BatchSink", "BeatBuffer", "Credentials", "Flusher", "RateLimiter", "resolve_credentials"]

log = logging.getLogger(__name__)

# Called after each flush with the pings per agent written since the last call (Prefect events).
BatchSink = Callable[[Mapping[str, int], datetime], Awaitable[None]]


@dataclass(frozen=True)
class Credentials:
    """Bearer tokens by agent id. Agents with no token configured accept pings without one;
    agents whose configured token could not be read are refused until the server restarts."""

    tokens: Mapping[str, str] = field(default_factory=dict)
    unavailable: frozenset[str] = frozenset()

    def check(self, agent_id: str, authorization: str | None) -> bool:
        expected = self.tokens.get(agent_id)
        if expected is None:
            return agent_id not in self.unavailable
        scheme, _, given = (authorization or "").partition(" ")
        # compare_digest: the time taken must not tell how much of the token matched.
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected.encode())


def resolve_credentials(
    registry: Registry, environ: Mapping[str, str], secrets: Mapping[str, str | None] | None = None
) -> Credentials:
    """Each heartbeat agent's token from its `token_env` variable or `token_secret` block value.

    `secrets` maps Secret block names to their values (None when the block could not be loaded);
    the CLI loads them, so this package needs no Prefect. Never logs a token, only names.
    """
    tokens: dict[str, str] = {}
    unavailable: set[str] = set()
    for agent in registry.agents:
        spec = agent.probe.heartbeat if agent.probe is not None else None
        if spec is None:
            continue
        if spec.token_env:
            value = environ.get(spec.token_env)
            source = f"environment variable {spec.token_env}"
        elif spec.token_secret:
            value = (secrets or {}).get(spec.token_secret)
            source = f"Secret block {spec.token_secret!r}"
        else:
            continue
        if value:
            tokens[agent.id] = value
        else:
            unavailable.add(agent.id)
            log.error("agent %s: no token in %s; its pings are refused until the server restarts", agent.id, source)
    return Credentials(tokens, frozenset(unavailable))


class RateLimiter:
    """A token bucket per agent: `rate` pings per second on average, bursts of `burst`.
    A rate of 0 turns the limit off."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self._clock = rate, max(1, burst), clock
        self._buckets: dict[str, tuple[float, float]] = {}  # agent id -> (tokens, when counted)

    def acquire(self, key: str) -> float:
        """Take a token: 0.0 when allowed, else the seconds until one is available."""
        if self.rate <= 0:
            return 0.0
        now = self._clock()
        tokens, then = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - then) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate


class BeatBuffer:
    """Pings not yet written, coalesced to one Beat per agent."""

    def __init__(self) -> None:
        self._pending: dict[str, Beat] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, beat: Beat) -> None:
        held = self._pending.get(beat.agent_id)
        self._pending[beat.agent_id] = held.merged(beat) if held is not None else beat

    def drain(self) -> list[Beat]:
        pending, self._pending = self._pending, {}
        return list(pending.values())

    def restore(self, beats: list[Beat]) -> None:
        """Put back beats whose write failed, before anything that arrived since."""
        newer, self._pending = self._pending, {b.agent_id: b for b in beats}
        for beat in newer.values():
            self.add(beat)


class Flusher:
    """Writes the buffer to the store every `interval`, and reports what it wrote to `sink` at most
    every `report_every` seconds (events are for people and automations, not a copy of the store).

    A failed write keeps the beats for the next try. At most one sink call is in flight; pings
    written meanwhile are added to the next call, so a slow Prefect API never delays a write.
    """

    def __init__(
        self,
        store: StateStore,
        buffer: BeatBuffer,
        interval: float,
        sink: BatchSink | None = None,
        report_every: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store, self.buffer, self.interval, self.sink = store, buffer, interval, sink
        self.report_every, self._clock = report_every, clock
        self._last_report = -math.inf
        self._unsent: Counter[str] = Counter()
        self._sending: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self.written = 0  # pings written since start
        self.failing = 0  # writes failed in a row (the server's /healthz answers 503 while > 0)

    async def run(self) -> None:
        """Flush every interval until `stop()`, then once more: never cancelled mid-write."""
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.interval)
            await self.flush()

    def stop(self) -> None:
        self._stop.set()

    async def flush(self) -> int:
        """Write what is buffered now; returns the number of agents written."""
        beats = self.buffer.drain()
        if not beats:
            return 0
        try:
            await self.store.record_beats(beats)
        except Exception as exc:  # a store error or a bug: keep the beats, keep flushing, say so
            self.buffer.restore(beats)
            self.failing += 1
            log.log(
                logging.WARNING if isinstance(exc, StoreError) else logging.ERROR,
                "heartbeat store write failed (%d in a row), retrying in %.1fs: %s",
                self.failing,
                self.interval,
                exc,
                exc_info=not isinstance(exc, StoreError),
            )
            return 0
        self.failing = 0
        self.written += sum(b.beats for b in beats)
        if self.sink is not None:
            self._unsent.update({b.agent_id: b.beats for b in beats})
            self._report()
        return len(beats)

    async def drain_reports(self, timeout: float = 5.0) -> None:
        """At shutdown: report what is left, waiting (bounded) for the report in flight first."""
        for _ in range(2):
            if self._sending is not None:
                await asyncio.wait({self._sending}, timeout=timeout)
            self._report(force=True)

    def _report(self, force: bool = False) -> None:
        due = force or self._clock() - self._last_report >= self.report_every
        if self._unsent and due and (self._sending is None or self._sending.done()):
            counts, self._unsent = dict(self._unsent), Counter()
            self._last_report = self._clock()
            self._sending = asyncio.create_task(self._send(counts))

    async def _send(self, counts: dict[str, int]) -> None:
        assert self.sink is not None
        try:
            await self.sink(counts, datetime.now(UTC))
        except Exception:  # events are a convenience; the beats are already stored
            log.warning("could not report %d agents' beats as an event", len(counts), exc_info=True)
