"""Helpers of the Docker integration tests: healthchecks in docker-py's units, waiting on engine state."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from docker.models.containers import Container

RunContainer = Callable[..., Container]


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
