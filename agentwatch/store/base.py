"""The engine, the one way statements run (`_run`: a sync function in the driver's thread, errors
translated to StoreError), schema creation, and the helpers every table's code shares."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ..errors import StoreError
from .schema import OUTBOX_COLUMNS, metadata, transitions

__all__ = [
    "CHUNK",
    "StoreBase",
    "chunks",
    "async_url",
    "column_value",
    "drop_except",
    "insert_ignore_many",
    "lock_in_order",
    "lock_table",
    "lock_rows",
    "rows_for",
    "upsert",
    "utc",
    "write_lock",
]

T = TypeVar("T")


def async_url(url: str) -> str:
    """Map a plain database URL onto the async driver agentwatch ships with."""
    if url.startswith("sqlite:"):
        return "sqlite+aiosqlite:" + url.removeprefix("sqlite:")
    for prefix in ("postgresql:", "postgres:"):
        if url.startswith(prefix):
            return "postgresql+asyncpg:" + url.removeprefix(prefix)
    return url


def redacted(url: str) -> str:
    return sa.engine.make_url(url).render_as_string(hide_password=True)


class StoreBase:
    """Owns the engine. Table-specific methods live in the mixins composed into StateStore."""

    def __init__(self, url: str) -> None:
        self.url = async_url(url)
        self._ready = False
        try:
            parsed = sa.engine.make_url(self.url)
        except sa.exc.ArgumentError as exc:
            raise StoreError(f"not a database URL: {url!r}") from exc
        kwargs: dict[str, Any] = {}
        sqlite = parsed.get_backend_name() == "sqlite"
        if sqlite:
            if parsed.database and parsed.database != ":memory:":
                folder = Path(parsed.database).expanduser().parent
                try:
                    folder.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise StoreError(f"state store {redacted(self.url)}: cannot create {folder}: {exc}") from exc
            kwargs["connect_args"] = {"timeout": 30}
        else:
            # A server restarted between two runs of a long-lived process leaves dead connections
            # in the pool: test each before use rather than fail a cycle.
            kwargs["pool_pre_ping"] = True
        try:
            self.engine: AsyncEngine = create_async_engine(self.url, **kwargs)
        except (SQLAlchemyError, ImportError) as exc:
            raise StoreError(f"unsupported database URL {redacted(self.url)}: {exc}") from exc
        if sqlite:
            sa.event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)

    async def __aenter__(self: T) -> T:
        await self.ensure_schema()  # type: ignore[attr-defined]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.engine.dispose()

    async def ensure_schema(self) -> None:
        """Create the tables when they are missing (idempotent; also done on first use)."""
        await self._run(None)

    async def _run(self, fn: Callable[[Connection], Any] | None, begin: bool = False) -> Any:
        """Run `fn(sync_connection)` in the driver's thread: one hop for many statements."""
        try:
            if not self._ready:
                await self._create_schema()
            if fn is None:
                return None
            ctx = self.engine.begin() if begin else self.engine.connect()
            async with ctx as conn:
                return await conn.run_sync(fn)
        except SQLAlchemyError as exc:
            raise StoreError(f"state store {redacted(self.url)}: {exc.__class__.__name__}: {exc}") from exc
        except OSError as exc:
            raise StoreError(f"state store {redacted(self.url)} unreachable: {exc}") from exc

    async def _create_schema(self) -> None:
        for attempt in range(1, 6):
            try:
                async with self.engine.begin() as conn:
                    await conn.run_sync(metadata.create_all)
                    await conn.run_sync(_migrate)
                break
            except (sa.exc.OperationalError, sa.exc.ProgrammingError, sa.exc.IntegrityError):
                # Another process is creating the same tables (between our check and our CREATE):
                # give it a moment and look again; create_all skips what exists.
                if attempt == 5:
                    raise
                await asyncio.sleep(0.05 * attempt)
        self._ready = True


def _migrate(conn: Connection) -> None:
    """Bring a transition log of an earlier release up to this one (create_all makes new tables,
    never new columns or indexes of an existing one): add the outbox columns, marking the rows
    delivered (they were published when they were written), and every index the table declares."""
    have = {c["name"] for c in sa.inspect(conn).get_columns("transitions")}
    missing = [name for name in OUTBOX_COLUMNS if name not in have]
    for name in missing:
        conn.execute(sa.text(f"ALTER TABLE transitions ADD COLUMN {name} {OUTBOX_COLUMNS[name]}"))
    for index in transitions.indexes:
        index.create(conn, checkfirst=True)
    if "published_at" in missing:
        conn.execute(
            transitions.update()
            .where(transitions.c.published_at.is_(None))
            .values(published_at=transitions.c.at, alerted_at=transitions.c.at)
        )


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    # WAL lets the heartbeat server read and write while a monitor run commits.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


CHUNK = 500  # ids per IN list: they have limits (SQLite: 32,766 variables; asyncpg: 32,767)


def chunks(items: Sequence[T]) -> Iterator[list[T]]:
    """`items` in lists of at most CHUNK, for statements with an IN list."""
    for start in range(0, len(items), CHUNK):
        yield list(items[start : start + CHUNK])


def rows_for(conn: Connection, table: sa.Table, ids: Iterable[str] | None) -> list[Any]:
    """Every row of `table`, or those of the agent ids given (in chunks: IN lists have limits)."""
    query = sa.select(table)
    if ids is None:
        return list(conn.execute(query).all())  # one fetch, not a driver call per row
    rows: list[Any] = []
    for chunk in chunks(list(ids)):
        rows.extend(conn.execute(query.where(table.c.agent_id.in_(chunk))).all())
    return rows


def drop_except(
    conn: Connection, table: sa.Table, keep: Iterable[str], among: Callable[[str], bool] | None = None
) -> list[str]:
    """Delete the rows of agents not in `keep` (they left the fleet); return their ids. With
    `among`, only rows whose agent id it accepts are considered (a shard's own: agentwatch.shards)."""
    keep_set = set(keep)
    gone = [
        r.agent_id
        for r in conn.execute(sa.select(table.c.agent_id))
        if r.agent_id not in keep_set and (among is None or among(r.agent_id))
    ]
    # Those still there once locked (another run may have dropped some meanwhile).
    gone = [r.agent_id for r in lock_rows(conn, table, table.c.agent_id, gone)]
    for chunk in chunks(gone):
        conn.execute(table.delete().where(table.c.agent_id.in_(chunk)))
    return gone


def write_lock(conn: Connection, table: sa.Table) -> None:
    """On SQLite, take the database's write lock now, with a write that changes nothing: what the
    transaction reads next then stays true until it commits (pysqlite begins a transaction at the
    first write only, so a read before it is outside any). PostgreSQL locks rows instead
    (`lock_rows`, `lock_in_order`)."""
    if conn.dialect.name == "sqlite":
        key = next(iter(table.primary_key.columns))
        conn.execute(table.update().where(sa.false()).values({key.name: key}))


def lock_table(conn: Connection, table: sa.Table) -> None:
    """Hold `table` against other writers (not readers) until the transaction ends: for a write
    that reads the whole table and replaces it."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text(f"LOCK TABLE {table.name} IN SHARE ROW EXCLUSIVE MODE"))
    else:
        write_lock(conn, table)


def lock_rows(conn: Connection, table: sa.Table, key: sa.Column[Any], keys: Iterable[Any], *columns: Any) -> list[Any]:
    """The rows whose `key` is in `keys` (their `key`, or `columns`), locked until the transaction
    ends, for a decision on what they hold: on PostgreSQL SELECT ... FOR UPDATE in `key` order, so
    two transactions that write overlapping rows lock them in one order and neither deadlocks the
    other (PostgreSQL would abort one); on SQLite under the database's write lock."""
    write_lock(conn, table)
    query = sa.select(*(columns or (key,)))
    rows: list[Any] = []
    for chunk in chunks(sorted(set(keys))):
        rows.extend(conn.execute(query.where(key.in_(chunk)).order_by(key).with_for_update()).all())
    return rows


def lock_in_order(conn: Connection, table: sa.Table, key: sa.Column[Any], keys: Iterable[Any]) -> list[Any]:
    """`keys` sorted; on PostgreSQL their rows locked in that order first (`lock_rows`), before a
    bulk UPDATE or DELETE that would lock them in its plan's order. SQLite needs nothing: a write
    holds the whole database."""
    wanted = sorted(set(keys))
    if conn.dialect.name == "postgresql":
        lock_rows(conn, table, key, wanted)
    return wanted


def upsert(conn: Connection, table: sa.Table, columns: Sequence[str]) -> Any:
    """INSERT ... ON CONFLICT (agent_id) DO UPDATE SET `columns` to the new values, for
    executemany (rows in agent id order: they are locked in the order given)."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    else:
        raise StoreError(f"the state store needs SQLite or PostgreSQL, not {conn.dialect.name}")
    stmt = insert(table)
    return stmt.on_conflict_do_update(index_elements=["agent_id"], set_={name: stmt.excluded[name] for name in columns})


def insert_ignore_many(conn: Connection, table: sa.Table) -> Any:
    """INSERT ... ON CONFLICT (agent_id) DO NOTHING, for executemany: a row that exists is left as
    it is (the compare-and-swap of a new row; with RETURNING, the rows inserted come back)."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing(index_elements=["agent_id"])
    if conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table).on_conflict_do_nothing(index_elements=["agent_id"])
    return table.insert()


def column_value(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        # SQLite keeps no offset: store every instant as UTC so it reads back as the same instant.
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return value


def utc(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything agentwatch stores is UTC.
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)
