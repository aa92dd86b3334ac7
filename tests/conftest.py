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
def state_db(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh state store for one test, through the real setting: SQLite, or a PostgreSQL database
    of its own with AGENTWATCH_TEST_STATE_BACKEND=postgresql (to run any suite on PostgreSQL)."""
    if os.environ.get("AGENTWATCH_TEST_STATE_BACKEND", "sqlite") == "postgresql":
        databases: PostgresDatabases = request.getfixturevalue("postgres_databases")
        url = databases.create()
        monkeypatch.setenv("AGENTWATCH_DATABASE_URL", url)
        try:
            yield url
        finally:
            databases.drop(url)
        return
    url = f"sqlite:///{tmp_path}/state.db"
    monkeypatch.setenv("AGENTWATCH_DATABASE_URL", url)
    yield url


# --- PostgreSQL for the state store ---------------------------------------------------------------
# scripts/test.sh runs scripts/postgres.sh (start the machine's cluster, make a role and a database)
# and exports its URL as AGENTWATCH_TEST_POSTGRES_URL. Each PostgreSQL case gets a database of its
# own, named after this session (so runs side by side on one machine never meet), dropped after it.

POSTGRES_URL_VARIABLE = "AGENTWATCH_TEST_POSTGRES_URL"
_DB_PREFIX = "agentwatch_t_"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "postgres: runs against PostgreSQL (scripts/postgres.sh)")


class PostgresDatabases:
    """Makes and drops databases on the test cluster (the role of the URL has CREATEDB).

    Statements go through asyncpg in a thread of their own: a fixture never touches the event loop
    of the tests."""

    def __init__(self, url: str) -> None:
        import sqlalchemy as sa

        self.url = sa.engine.make_url(url).set(drivername="postgresql")
        self.session = f"{_DB_PREFIX}{os.getpid()}_{os.urandom(3).hex()}"
        self._count = 0

    def _admin(self, *statements: str) -> list[Any]:
        import asyncio
        import threading

        import asyncpg

        out: list[Any] = []
        failure: list[BaseException] = []

        async def run() -> None:
            u = self.url
            conn = await asyncpg.connect(
                host=u.host, port=u.port, user=u.username, password=u.password, database=u.database, timeout=30
            )
            try:
                for statement in statements:
                    out.append(await conn.fetch(statement))
            finally:
                await conn.close()

        def thread() -> None:
            try:
                asyncio.run(run())
            except BaseException as exc:
                failure.append(exc)

        worker = threading.Thread(target=thread, name="postgres-admin")
        worker.start()
        worker.join()
        if failure:
            raise failure[0]
        return out

    def check(self) -> None:
        """Connect once (a clear failure at the first test rather than at each) and drop the
        databases of sessions whose process is gone (killed runs leave theirs behind)."""
        (rows,) = self._admin("SELECT datname FROM pg_database")
        for row in rows:
            if not row["datname"].startswith(_DB_PREFIX):
                continue
            pid = row["datname"].removeprefix(_DB_PREFIX).split("_", 1)[0]
            if pid.isdigit() and not _process_alive(int(pid)):
                self._admin(f'DROP DATABASE IF EXISTS "{row["datname"]}" WITH (FORCE)')

    def create(self) -> str:
        """A new empty database: its URL (postgresql://, as a user gives it)."""
        self._count += 1
        name = f"{self.session}_{self._count}"
        self._admin(f'CREATE DATABASE "{name}"')
        return self.url.set(database=name).render_as_string(hide_password=False)

    def drop(self, url: str) -> None:
        import sqlalchemy as sa

        name = sa.engine.make_url(url).database
        assert name and name.startswith(self.session), name
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@pytest.fixture(scope="session")
def postgres_databases() -> PostgresDatabases:
    """The test cluster, or a loud skip (a failure with AGENTWATCH_REQUIRE_POSTGRES set, as in CI)."""
    url = os.environ.get(POSTGRES_URL_VARIABLE, "")
    problem = f"{POSTGRES_URL_VARIABLE} is not set"
    databases = None
    if url:
        try:
            databases = PostgresDatabases(url)
            databases.check()
        except Exception as exc:
            problem, databases = f"{POSTGRES_URL_VARIABLE} does not answer ({exc.__class__.__name__}: {exc})", None
    if databases is None:
        message = (
            f"NO POSTGRESQL: the PostgreSQL cases of the state store tests did not run: {problem}. "
            "scripts/test.sh sets it from scripts/postgres.sh."
        )
        if os.environ.get("AGENTWATCH_REQUIRE_POSTGRES"):
            pytest.fail(message + " AGENTWATCH_REQUIRE_POSTGRES is set, so this is a failure.", pytrace=False)
        pytest.skip(message)
    return databases


BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty state store for one test, as a plain URL: a SQLite file, or a PostgreSQL
    database of its own (dropped after the test)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/state.db"
        return
    databases: PostgresDatabases = request.getfixturevalue("postgres_databases")
    url = databases.create()
    try:
        yield url
    finally:
        databases.drop(url)
