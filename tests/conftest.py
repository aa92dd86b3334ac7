"""Shared fixtures. The Prefect test server starts once per session (about 10 s) and only for the
tests that ask for it; unit tests never touch Prefect."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# No network here beyond the package registries: keep Prefect from trying to send telemetry.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[str]:
    """A real Prefect API (prefect_test_harness: a temporary server on SQLite) for this session."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield str(PREFECT_API_URL.value())


@pytest.fixture
def state_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh SQLite state store for one test, through the real setting."""
    url = f"sqlite:///{tmp_path}/state.db"
    monkeypatch.setenv("AGENTWATCH_DATABASE_URL", url)
    return url
