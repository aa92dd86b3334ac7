"""The Docker tests' fixtures and helpers: a real engine, images of this session's own, containers
started through `run_container`, healthchecks in docker-py's units, waiting on engine state.

Ownership on a shared engine (other test runs, benchmarks and people use it at the same time):
- every image this session builds has a tag of its own (`agentwatch-test:<session>`) and every
  container it starts is recorded by id; teardown removes those and nothing else, never by a
  label or a name pattern another process could also match;
- an image is removed without force: while another process's container still uses it, removal
  is refused (409) and the image is left to that process, with a note, never a failed teardown;
- agentwatch itself is scoped to this session's label (AGENTWATCH_DOCKER_SCOPE), so a flow under
  test never lists, registers or acts on anyone else's container.

Test modules use these fixtures by importing them (`from .docker_support import docker_fixture, ...`):
each is registered under its short name (`docker`, `run_container`, ...).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker as docker_py
import pytest
import yaml
from docker.models.containers import Container
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

__all__ = [
    "SESSION",
    "TEST_LABEL",
    "Created",
    "RunContainer",
    "busybox_image_fixture",
    "cleanup",
    "created_fixture",
    "docker_fixture",
    "docker_scope_fixture",
    "example_image_fixture",
    "flow_run_logs",
    "health",
    "health_is",
    "image_builders",
    "labels_on_fixture",
    "remove_containers",
    "remove_images",
    "run_container_fixture",
    "status_is",
    "wait_until",
    "write_registry",
]

RunContainer = Callable[..., Container]
TEST_LABEL = "agentwatch.test"
SESSION = uuid.uuid4().hex[:8]
_IMAGES = Path(__file__).resolve().parents[1] / "docker" / "images.py"


def image_builders() -> Any:
    """tests/docker/images.py, loaded by path (bench/ uses it too, without the tests on sys.path)."""
    spec = importlib.util.spec_from_file_location("agentwatch_test_images", _IMAGES)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class Created:
    """What this session created on the engine: container ids and image tags. Only these are removed."""

    containers: set[str] = field(default_factory=set)
    images: set[str] = field(default_factory=set)

    def track(self, container: Container) -> Container:
        self.containers.add(container.id)
        return container


def remove_containers(client: docker_py.DockerClient, ids: Iterable[str]) -> None:
    """Force-remove containers this session started, by id; one already gone is fine."""
    for container_id in list(ids):
        with contextlib.suppress(docker_py.errors.NotFound):
            client.api.remove_container(container_id, force=True)


def remove_images(client: docker_py.DockerClient, tags: Iterable[str]) -> list[str]:
    """Remove images this session built, by their own tag, without force. Returns a note per image
    left behind because something still uses it (another process's container): removing it then
    would break that process, and force cannot remove an image a running container uses anyway."""
    kept = []
    for tag in sorted(tags):
        try:
            client.images.remove(tag, force=False, noprune=False)
        except docker_py.errors.ImageNotFound:
            continue
        except docker_py.errors.APIError as exc:
            if exc.status_code != 409:
                raise
            kept.append(f"{tag} kept: in use ({exc.explanation or exc})")
    return kept


def cleanup(client: docker_py.DockerClient, created: Created) -> list[str]:
    """Remove what this session created (containers first, then images); notes on what was kept."""
    remove_containers(client, created.containers)
    created.containers.clear()
    notes = remove_images(client, created.images)
    created.images.clear()
    return notes


@pytest.fixture(scope="session", name="created")
def created_fixture() -> Created:
    return Created()


@pytest.fixture(scope="session", name="docker")
def docker_fixture(created: Created) -> Iterator[docker_py.DockerClient]:
    """A client of a real Docker engine (DOCKER_HOST or the local socket), or a loud skip."""
    try:
        client = docker_py.from_env(version="auto", timeout=30)
        client.ping()
    except Exception as exc:
        message = (
            f"NO DOCKER ENGINE: the Docker integration tests did not run ({exc}). "
            "Start one with scripts/ensure-docker.sh."
        )
        if os.environ.get("AGENTWATCH_REQUIRE_DOCKER"):
            pytest.fail(message + " AGENTWATCH_REQUIRE_DOCKER is set, so this is a failure.", pytrace=False)
        pytest.skip(message)
    yield client
    for note in cleanup(client, created):
        warnings.warn(f"Docker test teardown: {note}", stacklevel=1)
    client.close()


def _build(client: docker_py.DockerClient, created: Created, kind: str) -> str:
    tag = f"agentwatch-{kind}:{SESSION}-{uuid.uuid4().hex[:6]}"
    created.images.add(tag)  # before the build: a half-built tag is ours to remove too
    build = image_builders().build_test_image if kind == "test" else image_builders().build_example_image
    # Not the scope label: containers inherit their image's labels, so a stranger's container run
    # from this image would otherwise fall into this session's scope.
    return str(build(client, tag, {f"{TEST_LABEL}.image": SESSION}))


@pytest.fixture(scope="session", name="busybox_image")
def busybox_image_fixture(docker: docker_py.DockerClient, created: Created) -> str:
    """The test image (tests/docker/Dockerfile), built once per session under a tag of its own."""
    return _build(docker, created, "test")


@pytest.fixture(scope="session", name="example_image")
def example_image_fixture(docker: docker_py.DockerClient, created: Created) -> str:
    """The example agent image of deployments/agent-image, built once per session under its own tag."""
    return _build(docker, created, "example")


@pytest.fixture(autouse=True, name="docker_scope")
def docker_scope_fixture(monkeypatch: pytest.MonkeyPatch) -> str:
    """agentwatch sees only this session's containers, in every test that uses these fixtures, so
    no test ever lists or acts on anyone else's container."""
    scope = f"{TEST_LABEL}={SESSION}"
    monkeypatch.setenv("AGENTWATCH_DOCKER_SCOPE", scope)
    return scope


@pytest.fixture(name="labels_on")
def labels_on_fixture(monkeypatch: pytest.MonkeyPatch) -> None:
    """Label registration on (it is opt-in), within this session's scope."""
    monkeypatch.setenv("AGENTWATCH_DOCKER_LABELS", "true")


@pytest.fixture(name="run_container")
def run_container_fixture(
    docker: docker_py.DockerClient, busybox_image: str, created: Created, docker_scope: str
) -> Iterator[RunContainer]:
    """Start a test container: run(name, command, agent=..., managed=..., scoped=..., **docker_run_kwargs).

    Names are prefixed with the session id. `scoped=False` leaves out the session's scope label: a
    stranger's container, as another fleet would run it. Every container is removed when the test ends."""
    mine: set[str] = set()

    def run(
        name: str,
        command: str | list[str] | None = None,
        *,
        agent: str | None = None,
        managed: bool = True,
        scoped: bool = True,
        labels: dict[str, str] | None = None,
        image: str | None = None,
        **kwargs: Any,
    ) -> Container:
        all_labels = {**({TEST_LABEL: SESSION} if scoped else {}), **(labels or {})}
        if managed:
            all_labels["agentwatch.managed"] = "true"
        if agent:
            all_labels["agentwatch.agent"] = agent
        cmd = ["sh", "-c", command] if isinstance(command, str) else command
        box = docker.containers.run(
            image or busybox_image, cmd, name=f"aw-{SESSION}-{name}", labels=all_labels, detach=True, **kwargs
        )
        mine.add(box.id)
        return created.track(box)

    yield run
    remove_containers(docker, mine)
    created.containers -= mine


def health(seconds: float, test: str | None = "true", retries: int = 1, start_period: float = 0) -> dict[str, Any]:
    """A HEALTHCHECK for docker-py's `healthcheck=` (times in nanoseconds). `test=None` keeps the
    image's own check command and overrides only its timing."""
    ns = 1_000_000_000
    return {
        "test": ["CMD-SHELL", test] if test is not None else [],
        "interval": int(seconds * ns),
        "timeout": int(2 * ns),
        "retries": retries,
        "start_period": int(start_period * ns),
    }


def wait_until(container: Container, check: Callable[[dict[str, Any]], bool], timeout: float = 30) -> dict[str, Any]:
    """Poll `container.attrs` (after reload) until `check(attrs["State"])` holds; return the state."""
    deadline = time.monotonic() + timeout
    while True:
        container.reload()
        state = container.attrs["State"]
        if check(state):
            return state
        if time.monotonic() > deadline:
            raise AssertionError(f"{container.name}: state never matched: {state}")
        time.sleep(0.2)


def health_is(status: str) -> Callable[[dict[str, Any]], bool]:
    return lambda state: (state.get("Health") or {}).get("Status") == status


def status_is(status: str) -> Callable[[dict[str, Any]], bool]:
    return lambda state: state.get("Status") == status


def write_registry(path: Path, agents: list[dict[str, Any]]) -> str:
    """A registry file with these agents; returns its path."""
    path.write_text(yaml.safe_dump({"agents": agents}))
    return str(path)


async def flow_run_logs(flow_run_id: Any, until: str = "Finished in state", timeout: float = 30) -> list[Any]:
    """The logs a flow run sent to the Prefect API, once one of them contains `until` (the API
    handler ships them in batches, a second or two later)."""
    deadline = time.monotonic() + timeout
    async with get_client() as client:
        while True:
            logs = await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])), limit=200)
            if any(until in log.message for log in logs) or time.monotonic() > deadline:
                return sorted(logs, key=lambda log: log.timestamp)
            await asyncio.sleep(0.5)
