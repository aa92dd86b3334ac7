"""Shared fixtures. The Prefect test server starts once per session (about 10 s) and only for the
tests that ask for it; unit tests never touch Prefect."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


class EveryLog(list[logging.LogRecord]):
    """Every log record made while the fixture `every_log` is active."""

    @property
    def text(self) -> str:
        """Each record as a handler would write it: name, level, message and any traceback."""
        formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
        return "\n".join(formatter.format(record) for record in self)


@pytest.fixture
def every_log(monkeypatch: pytest.MonkeyPatch) -> EveryLog:
    """Every log record of every logger at every level (DEBUG included), whatever the loggers'
    levels, handlers, filters or propagation: for asserting that something is never logged
    (caplog sees only what reaches the root logger at its level, WARNING unless set)."""
    records = EveryLog()
    make_record = logging.Logger.makeRecord

    def keep(self: logging.Logger, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(self, *args, **kwargs)
        records.append(record)
        return record

    monkeypatch.setattr(logging.Logger, "isEnabledFor", lambda self, level: True)
    monkeypatch.setattr(logging.Logger, "makeRecord", keep)
    return records


@pytest.fixture
def state_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh SQLite state store for one test, through the real setting."""
    url = f"sqlite:///{tmp_path}/state.db"
    monkeypatch.setenv("AGENTWATCH_DATABASE_URL", url)
    return url
