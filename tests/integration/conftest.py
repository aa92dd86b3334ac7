"""Integration fixtures. Docker: a real engine, or a loud skip (a failure when
AGENTWATCH_REQUIRE_DOCKER is set, as in CI). Everything the Docker tests create carries the label
`agentwatch.test=<session id>` and is removed by that label; agentwatch itself is scoped to that
label too (AGENTWATCH_DOCKER_SCOPE), so a test run never touches any other container."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker as docker_py
import pytest
from docker.models.containers import Container

from .docker_support import RunContainer

TEST_LABEL = "agentwatch.test"
SESSION = uuid.uuid4().hex[:8]
_IMAGES = Path(__file__).resolve().parents[1] / "docker" / "images.py"


def _images() -> Any:
    spec = importlib.util.spec_from_file_location("agentwatch_test_images", _IMAGES)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _remove_labelled(client: docker_py.DockerClient, label: str) -> None:
    for container in client.containers.list(all=True, filters={"label": label}, ignore_removed=True):
        with contextlib.suppress(docker_py.errors.NotFound):  # removed meanwhile: fine
            container.remove(force=True)


@pytest.fixture(scope="session")
def docker() -> Iterator[docker_py.DockerClient]:
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
    _remove_labelled(client, f"{TEST_LABEL}={SESSION}")
    for image in client.images.list(filters={"label": f"{TEST_LABEL}={SESSION}"}):
        client.images.remove(image.id, force=True)
    client.close()


@pytest.fixture(scope="session")
def busybox_image(docker: docker_py.DockerClient) -> str:
    """The test image (tests/docker/Dockerfile), built once per session."""
    return _images().build_test_image(docker, f"agentwatch-test:{SESSION}", {TEST_LABEL: SESSION})


@pytest.fixture(scope="session")
def example_image(docker: docker_py.DockerClient) -> str:
    """The example agent image of deployments/agent-image, built once per session."""
    return _images().build_example_image(docker, f"agentwatch-example:{SESSION}", {TEST_LABEL: SESSION})


@pytest.fixture(autouse=True)
def docker_scope(monkeypatch: pytest.MonkeyPatch) -> str:
    """agentwatch sees only this session's containers, in every integration test (label
    registration in any monitor run included), so no test ever acts on anyone else's container."""
    scope = f"{TEST_LABEL}={SESSION}"
    monkeypatch.setenv("AGENTWATCH_DOCKER_SCOPE", scope)
    return scope


@pytest.fixture
def run_container(docker: docker_py.DockerClient, busybox_image: str, docker_scope: str) -> Iterator[RunContainer]:
    """Start a labelled test container: run(name, command, agent=..., managed=..., **docker_run_kwargs).

    Names are prefixed with the session id; every container is removed when the test ends."""
    test_id = uuid.uuid4().hex[:6]

    def run(
        name: str,
        command: str | list[str] | None = None,
        *,
        agent: str | None = None,
        managed: bool = True,
        labels: dict[str, str] | None = None,
        image: str | None = None,
        **kwargs: Any,
    ) -> Container:
        all_labels = {TEST_LABEL: SESSION, "agentwatch.test.case": test_id, **(labels or {})}
        if managed:
            all_labels["agentwatch.managed"] = "true"
        if agent:
            all_labels["agentwatch.agent"] = agent
        cmd = ["sh", "-c", command] if isinstance(command, str) else command
        return docker.containers.run(
            image or busybox_image, cmd, name=f"aw-{SESSION}-{name}", labels=all_labels, detach=True, **kwargs
        )

    yield run
    _remove_labelled(docker, f"agentwatch.test.case={test_id}")
