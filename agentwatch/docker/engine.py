"""The Docker engine as agentwatch uses it: async methods over docker-py, errors translated here.

docker-py is blocking, so every call runs in a thread pool of this engine's own (the loop's default
pool has min(32, cores + 4) threads, six on a 2-core host, and is shared with Prefect; stopping 20
containers that each take their stop timeout would otherwise queue behind each other).

At this boundary, a missing container becomes `None` (inspect) or ContainerOpFailed (an action),
and an engine that cannot be reached becomes EngineUnavailable, never an agent failure.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import docker
import requests
from docker.errors import APIError, DockerException, NotFound

from ..errors import ContainerOpFailed, EngineUnavailable
from ..settings import Settings, environment
from .state import ContainerInfo

__all__ = ["DockerEngine", "engine_url"]

T = TypeVar("T")
UNREACHABLE = "docker engine unreachable"


def engine_url(settings: Settings) -> str | None:
    """The engine URL: the `docker_host` setting, else DOCKER_HOST, else docker-py's local default."""
    return settings.docker_host or environment().get("DOCKER_HOST") or None


class DockerEngine:
    """One connection to one engine, made lazily on first use and shared by concurrent calls."""

    def __init__(
        self, base_url: str | None = None, *, timeout: float = 10.0, max_workers: int = 32, scope: str | None = None
    ) -> None:
        self.base_url = base_url
        key, sep, value = (scope or "").partition("=")
        # Every listing also filters on this label: the fleet's containers, no one else's.
        self.scope: dict[str, str | None] = {key.strip(): value.strip() if sep else None} if key.strip() else {}
        self.timeout = timeout
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="agentwatch-docker")
        self._max_workers = max_workers
        self._client: docker.DockerClient | None = None
        self._failure: EngineUnavailable | None = None
        # A thread lock, not an asyncio one: the engine is used from the flow's loop and from the
        # probe loop (agentwatch.probes.loop), and an asyncio lock belongs to one loop.
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> DockerEngine:
        return cls(
            engine_url(settings),
            timeout=settings.docker_timeout,
            max_workers=settings.docker_concurrency,
            scope=settings.docker_scope,
        )

    @property
    def where(self) -> str:
        return self.base_url or "the local socket"

    async def _connect(self) -> docker.DockerClient:
        if self._client is not None:
            return self._client
        return await self._in_thread(self._connect_once)

    def _connect_once(self) -> docker.DockerClient:
        """The client, made on the first call (in a pool thread); the others wait for it."""
        with self._lock:
            if self._client is not None:
                return self._client
            if self._failure is not None:  # one failed connection per engine: do not retry per agent
                # A new exception each time: one object raised from many threads would gather a
                # traceback entry per raise (and race on it).
                raise EngineUnavailable(str(self._failure)) from self._failure.__cause__
            env = environment()
            if self.base_url:
                env["DOCKER_HOST"] = self.base_url
            try:
                # version="auto" asks the engine for its API version: a round trip that proves it answers.
                self._client = docker.from_env(
                    version="auto", timeout=self.timeout, max_pool_size=self._max_workers, environment=env
                )
            except (DockerException, requests.RequestException, OSError) as exc:
                self._failure = EngineUnavailable(f"{UNREACHABLE} at {self.where}: {exc}")
                raise self._failure from exc
            return self._client

    async def _in_thread(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(*args, **kwargs))

    async def _call(self, what: str, fn: Callable[[docker.DockerClient], T]) -> T:
        client = await self._connect()
        try:
            return await self._in_thread(fn, client)
        except NotFound:
            raise
        except APIError as exc:
            raise ContainerOpFailed(f"{what}: {exc.explanation or exc}") from exc
        except (requests.ConnectionError, requests.Timeout, DockerException, OSError) as exc:
            raise EngineUnavailable(f"{UNREACHABLE} at {self.where} ({what}): {exc}") from exc

    async def ping(self) -> None:
        """Raise EngineUnavailable unless the engine answers."""
        await self._call("ping", lambda c: c.ping())

    async def inspect(self, ref: str) -> ContainerInfo | None:
        """The container named or identified by `ref`, or None when the engine has no such container."""
        try:
            attrs = await self._call(f"inspect {ref}", lambda c: c.api.inspect_container(ref))
        except NotFound:
            return None
        return ContainerInfo.from_attrs(attrs)

    async def list_containers(self, labels: Mapping[str, str | None]) -> list[ContainerInfo]:
        """Every container (running or not) carrying all `labels`; a None value matches any value.

        The engine filters by label, so unlabelled containers never leave it.
        """
        wanted = [key if value is None else f"{key}={value}" for key, value in {**self.scope, **labels}.items()]
        found = await self._call(
            "list containers",
            lambda c: c.containers.list(all=True, filters={"label": wanted}, ignore_removed=True),
        )
        return [ContainerInfo.from_attrs(container.attrs) for container in found]

    async def _act(self, what: str, fn: Callable[[docker.DockerClient], Any]) -> None:
        try:
            await self._call(what, fn)
        except NotFound as exc:
            raise ContainerOpFailed(f"{what}: no such container") from exc

    async def start(self, container_id: str) -> None:
        await self._act(f"start {container_id[:12]}", lambda c: c.api.start(container_id))

    async def stop(self, container_id: str, timeout: float) -> None:
        """SIGTERM (or the image's stop signal), then SIGKILL after `timeout` seconds."""
        await self._act(f"stop {container_id[:12]}", lambda c: c.api.stop(container_id, timeout=_whole(timeout)))

    async def restart(self, container_id: str, timeout: float) -> None:
        await self._act(f"restart {container_id[:12]}", lambda c: c.api.restart(container_id, timeout=_whole(timeout)))

    async def remove(self, container_id: str) -> None:
        """Remove a stopped container (its anonymous volumes stay, as with `docker rm`). A container
        already gone counts as removed: two reconcile runs may race for the same orphan."""
        try:
            await self._call(f"remove {container_id[:12]}", lambda c: c.api.remove_container(container_id))
        except NotFound:
            return

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await self._in_thread(client.close)
        self._pool.shutdown(wait=False)

    async def __aenter__(self) -> DockerEngine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _whole(seconds: float) -> int:
    # The engine's stop timeout is whole seconds; round up so "0.5s" does not mean "kill at once".
    return max(0, int(-(-seconds // 1)))
