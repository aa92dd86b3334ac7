"""The Prefect side of the heartbeat server (`agentwatch heartbeat-server`): its batched
`agentwatch.heartbeat.batch` events, and agents' tokens read from Secret blocks. (The `late`
warning event is posted by the monitor with its cycle event.)

Neither is a task: the server is a long-running process of its own, next to the ones `serve` and
`bootstrap` start. The domain package (agentwatch.heartbeat) never imports Prefect: the CLI hands
the server a `PrefectBatchSink` and a mapping of Secret values loaded here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from datetime import datetime

from prefect.blocks.system import Secret
from prefect.client.orchestration import get_client
from prefect.events import emit_event
from prefect.settings import PREFECT_API_URL

from agentwatch.events import HEARTBEAT_BATCH, HEARTBEAT_SERVER_RESOURCE_ID

__all__ = ["PrefectBatchSink", "load_secrets"]

log = logging.getLogger(__name__)


class PrefectBatchSink:
    """Reports flushed beats as one `agentwatch.heartbeat.batch` event per call.

    Only when a Prefect API is configured (a long-running server must not start an ephemeral one)
    and answers its health check, asked at most every `check_every` seconds, so an API that is
    down costs one cheap request per interval and never a queue of undeliverable events.
    """

    def __init__(self, server_id: str, check_every: float = 30.0) -> None:
        self.resource = {"prefect.resource.id": f"{HEARTBEAT_SERVER_RESOURCE_ID}.{server_id}"}
        self.check_every = check_every
        self._healthy_until = 0.0
        self.emitted = 0
        self.skipped = 0

    async def __call__(self, counts: Mapping[str, int], at: datetime) -> None:
        if not await self._reachable():
            self.skipped += 1
            return
        emit_event(
            event=HEARTBEAT_BATCH,
            resource=self.resource,
            occurred=at,
            payload={"agents": len(counts), "pings": sum(counts.values()), "by_agent": dict(counts)},
        )
        self.emitted += 1

    async def _reachable(self) -> bool:
        if not PREFECT_API_URL.value():
            return False
        if time.monotonic() < self._healthy_until:
            return True
        async with get_client() as client:
            error = await client.api_healthcheck()
        if error is not None:
            log.info("Prefect API not reachable (%s); heartbeat batch events paused", error)
            return False
        self._healthy_until = time.monotonic() + self.check_every
        return True


def load_secrets(names: Iterable[str]) -> dict[str, str | None]:
    """The values of these Secret blocks; None for a block that cannot be loaded (logged by name)."""
    values: dict[str, str | None] = {}
    for name in set(names):
        try:
            block = Secret.load(name)  # called from sync code: the block itself, not a coroutine
            if not isinstance(block, Secret):
                raise TypeError(f"Secret.load returned {type(block).__name__}")
            value = block.get()
            values[name] = str(value) if value is not None else None
        except Exception as exc:  # a missing block or an unreachable API: that agent is refused
            log.error("cannot load Secret block %r: %s", name, type(exc).__name__)
            values[name] = None
    return values
