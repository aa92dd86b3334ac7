"""The state store: each agent's current record and the transition log, in SQL.

SQLite (aiosqlite) by default, PostgreSQL (asyncpg) by URL for several workers. Writes are
compare-and-swap on a per-agent version, so two overlapping monitor runs never record the same
transition twice: the run that loses the race records nothing for that agent.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from .errors import StoreError
from .docker.budget import RestartBudget
from .heartbeat.beats import Beat
from .models import AgentRecord, AgentState, Transition

__all__ = ["CommitResult", "StateStore", "async_url"]

metadata = sa.MetaData()
TZ = sa.DateTime(timezone=True)

agent_state = sa.Table(
    "agent_state",
    metadata,
    sa.Column("agent_id", sa.String(63), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("since", TZ),
    sa.Column("reason", sa.Text, nullable=False, default=""),
    sa.Column("failures", sa.Integer, nullable=False, default=0),
    sa.Column("successes", sa.Integer, nullable=False, default=0),
    sa.Column("first_seen", TZ),
    sa.Column("last_checked", TZ),
    sa.Column("next_check", TZ),
    sa.Column("latency_ms", sa.Float),
    sa.Column("paused", sa.Boolean, nullable=False, default=False),
    sa.Column("paused_until", TZ),
    sa.Column("sticky", sa.Boolean, nullable=False, default=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("updated_at", TZ, nullable=False),
)

transitions = sa.Table(
    "transitions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("agent_id", sa.String(63), nullable=False, index=True),
    # The record version the transition produced. Not unique: an agent that leaves the registry
    # and comes back starts counting again, and its old history stays. Compare-and-swap on
    # agent_state, in the same database transaction, is what keeps a transition from being
    # recorded twice.
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("from_state", sa.String(16), nullable=False),
    sa.Column("to_state", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("failures", sa.Integer, nullable=False),
    sa.Column("at", TZ, nullable=False),
    sa.Column("run_id", sa.String(64)),
)

# Written only by the heartbeat server, so the monitor's compare-and-swap writes to `agent_state`
# never race with a beat (see agentwatch.heartbeat.beats for the merge rules).
heartbeats = sa.Table(
    "heartbeats",
    metadata,
    sa.Column("agent_id", sa.String(63), primary_key=True),
    sa.Column("last_beat_at", TZ),
    sa.Column("last_start_at", TZ),
    sa.Column("last_fail_at", TZ),
    sa.Column("last_exit_code", sa.Integer),
    sa.Column("beats", sa.BigInteger, nullable=False, default=0),
    sa.Column("updated_at", TZ, nullable=False),
)

# Written only by reconcile: one row per agent whose container it restarted (or refused to).
# Compare-and-swap on `version` makes two overlapping reconcile runs restart a container once.
restart_budget = sa.Table(
    "restart_budget",
    metadata,
    sa.Column("agent_id", sa.String(63), primary_key=True),
    sa.Column("restarts", sa.Text, nullable=False, default="[]"),  # JSON list of ISO times
    sa.Column("exhausted_at", TZ),
    sa.Column("retry_at", TZ),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("updated_at", TZ, nullable=False),
)

_RECORD_FIELDS = (
    "state",
    "since",
    "reason",
    "failures",
    "successes",
    "first_seen",
    "last_checked",
    "next_check",
    "latency_ms",
    "paused",
    "paused_until",
    "sticky",
)


def async_url(url: str) -> str:
    """Map a plain database URL onto the async driver agentwatch ships with."""
    if url.startswith("sqlite:"):
        return "sqlite+aiosqlite:" + url.removeprefix("sqlite:")
    for prefix in ("postgresql:", "postgres:"):
        if url.startswith(prefix):
            return "postgresql+asyncpg:" + url.removeprefix(prefix)
    return url


def _redacted(url: str) -> str:
    return sa.engine.make_url(url).render_as_string(hide_password=True)


@dataclass
class CommitResult:
    """What a commit wrote: records saved (with their new versions), transitions recorded, and the
    ids that lost a compare-and-swap race (nothing written for them)."""

    saved: list[AgentRecord] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)


class StateStore:
    """Async access to the agent records and the transition log. Create the schema on first use."""

    def __init__(self, url: str) -> None:
        self.url = async_url(url)
        self._ready = False
        try:
            parsed = sa.engine.make_url(self.url)
        except sa.exc.ArgumentError as exc:
            raise StoreError(f"not a database URL: {url!r}") from exc
        kwargs: dict[str, Any] = {}
        if parsed.get_backend_name() == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                folder = Path(parsed.database).expanduser().parent
                try:
                    folder.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise StoreError(f"state store {_redacted(self.url)}: cannot create {folder}: {exc}") from exc
            kwargs["connect_args"] = {"timeout": 30}
        try:
            self.engine: AsyncEngine = create_async_engine(self.url, **kwargs)
        except (SQLAlchemyError, ImportError) as exc:
            raise StoreError(f"unsupported database URL {_redacted(self.url)}: {exc}") from exc
        if parsed.get_backend_name() == "sqlite":
            sa.event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)

    async def __aenter__(self) -> StateStore:
        await self.ensure_schema()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.engine.dispose()

    async def ensure_schema(self) -> None:
        """Create the tables when they are missing (idempotent; also done on first use)."""
        await self._run(None)

    async def load(self, agent_ids: Iterable[str] | None = None) -> dict[str, AgentRecord]:
        """Current records, by agent id (all of them, or those asked for)."""
        ids = list(agent_ids) if agent_ids is not None else None

        def read(conn: Connection) -> dict[str, AgentRecord]:
            query = sa.select(agent_state)
            rows: list[Any] = []
            if ids is None:
                rows = list(conn.execute(query))
            else:
                for chunk in _chunks(ids, 500):
                    rows.extend(conn.execute(query.where(agent_state.c.agent_id.in_(chunk))))
            return {row.agent_id: _record(row) for row in rows}

        return await self._run(read)

    async def commit(
        self, changes: Sequence[tuple[AgentRecord, Transition | None]], run_id: str | None = None
    ) -> CommitResult:
        """Write new records with compare-and-swap on the version each was read at (0 = new).

        A record whose row changed since it was read is a conflict: neither it nor its transition
        is written. Everything else lands in one database transaction.
        """
        now = datetime.now(UTC)

        def write(conn: Connection) -> CommitResult:
            out = CommitResult()
            for record, transition in changes:
                values = {f: _column_value(getattr(record, f)) for f in _RECORD_FIELDS}
                values.update(version=record.version + 1, updated_at=now)
                if record.version == 0:
                    stmt = _insert_ignore(conn, {"agent_id": record.agent_id, **values})
                else:
                    stmt = (
                        agent_state.update()
                        .where(agent_state.c.agent_id == record.agent_id, agent_state.c.version == record.version)
                        .values(**values)
                    )
                if conn.execute(stmt).rowcount != 1:
                    out.conflicts.append(record.agent_id)
                    continue
                saved = record.evolve(version=record.version + 1)
                out.saved.append(saved)
                if transition is not None:
                    conn.execute(
                        transitions.insert().values(
                            agent_id=transition.agent_id,
                            seq=saved.version,
                            from_state=transition.from_state.value,
                            to_state=transition.to_state.value,
                            reason=transition.reason,
                            failures=transition.failures,
                            at=_column_value(transition.at),
                            run_id=run_id,
                        )
                    )
                    out.transitions.append(transition)
            return out

        return await self._run(write, begin=True)

    async def drop_missing(self, keep: Iterable[str]) -> list[str]:
        """Forget the records (counters, backoff) of agents no longer in the fleet; history stays."""
        keep_set = set(keep)

        def drop(conn: Connection) -> list[str]:
            gone = [r.agent_id for r in conn.execute(sa.select(agent_state.c.agent_id)) if r.agent_id not in keep_set]
            for chunk in _chunks(gone, 500):
                conn.execute(agent_state.delete().where(agent_state.c.agent_id.in_(chunk)))
            return gone

        return await self._run(drop, begin=True)

    async def history(self, agent_id: str | None = None, limit: int = 100) -> list[Transition]:
        """The newest transitions first (of one agent, or of the fleet)."""

        def read(conn: Connection) -> list[Transition]:
            query = sa.select(transitions).order_by(transitions.c.id.desc()).limit(limit)
            if agent_id is not None:
                query = query.where(transitions.c.agent_id == agent_id)
            return [
                Transition(
                    agent_id=r.agent_id,
                    from_state=AgentState(r.from_state),
                    to_state=AgentState(r.to_state),
                    reason=r.reason,
                    failures=r.failures,
                    at=_utc(r.at) or r.at,
                )
                for r in conn.execute(query)
            ]

        return await self._run(read)

    async def record_beats(self, beats: Iterable[Beat]) -> int:
        """Merge heartbeat deltas (a flush window's pings, per agent) into their rows, in one
        transaction. Returns the number of agents written."""
        merged: dict[str, Beat] = {}
        for beat in beats:
            merged[beat.agent_id] = merged[beat.agent_id].merged(beat) if beat.agent_id in merged else beat
        rows = [_beat_values(b) for b in merged.values()]
        if not rows:
            return 0

        def write(conn: Connection) -> int:
            conn.execute(_beat_upsert(conn), rows)
            return len(rows)

        return await self._run(write, begin=True)

    async def load_beats(self, agent_ids: Iterable[str] | None = None) -> dict[str, Beat]:
        """Heartbeat records by agent id (all, or those asked for); agents never heard from are absent."""
        ids = list(agent_ids) if agent_ids is not None else None

        def read(conn: Connection) -> dict[str, Beat]:
            query = sa.select(heartbeats)
            rows: list[Any] = []
            if ids is None:
                rows = list(conn.execute(query))
            else:
                for chunk in _chunks(ids, 500):
                    rows.extend(conn.execute(query.where(heartbeats.c.agent_id.in_(chunk))))
            return {row.agent_id: _beat(row) for row in rows}

        return await self._run(read)

    async def drop_missing_beats(self, keep: Iterable[str]) -> list[str]:
        """Forget the heartbeat records of agents no longer in the fleet."""
        keep_set = set(keep)

        def drop(conn: Connection) -> list[str]:
            gone = [r.agent_id for r in conn.execute(sa.select(heartbeats.c.agent_id)) if r.agent_id not in keep_set]
            for chunk in _chunks(gone, 500):
                conn.execute(heartbeats.delete().where(heartbeats.c.agent_id.in_(chunk)))
            return gone

        return await self._run(drop, begin=True)

    async def load_restart_budgets(self, agent_ids: Iterable[str] | None = None) -> dict[str, RestartBudget]:
        """Restart budgets by agent id (all, or those asked for); agents never restarted are absent."""
        ids = list(agent_ids) if agent_ids is not None else None

        def read(conn: Connection) -> dict[str, RestartBudget]:
            query = sa.select(restart_budget)
            rows: list[Any] = []
            if ids is None:
                rows = list(conn.execute(query))
            else:
                for chunk in _chunks(ids, 500):
                    rows.extend(conn.execute(query.where(restart_budget.c.agent_id.in_(chunk))))
            return {row.agent_id: _budget(row) for row in rows}

        return await self._run(read)

    async def save_restart_budget(self, budget: RestartBudget) -> RestartBudget | None:
        """Write a budget with compare-and-swap on the version it was read at (0 = new).

        Returns the saved budget (new version), or None when another writer changed it first.
        """
        values = {
            "restarts": json.dumps([t.isoformat() for t in budget.restarts]),
            "exhausted_at": _column_value(budget.exhausted_at),
            "retry_at": _column_value(budget.retry_at),
            "version": budget.version + 1,
            "updated_at": datetime.now(UTC),
        }

        def write(conn: Connection) -> bool:
            if budget.version == 0:
                stmt = _insert_ignore(conn, {"agent_id": budget.agent_id, **values}, restart_budget)
            else:
                stmt = (
                    restart_budget.update()
                    .where(restart_budget.c.agent_id == budget.agent_id, restart_budget.c.version == budget.version)
                    .values(**values)
                )
            return bool(conn.execute(stmt).rowcount == 1)

        saved = await self._run(write, begin=True)
        return dataclasses.replace(budget, version=budget.version + 1) if saved else None

    async def drop_missing_restart_budgets(self, keep: Iterable[str]) -> list[str]:
        """Forget the restart budgets of agents no longer in the fleet."""
        keep_set = set(keep)

        def drop(conn: Connection) -> list[str]:
            ids = conn.execute(sa.select(restart_budget.c.agent_id))
            gone = [r.agent_id for r in ids if r.agent_id not in keep_set]
            for chunk in _chunks(gone, 500):
                conn.execute(restart_budget.delete().where(restart_budget.c.agent_id.in_(chunk)))
            return gone

        return await self._run(drop, begin=True)

    async def _run(self, fn: Any, begin: bool = False) -> Any:
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
            raise StoreError(f"state store {_redacted(self.url)}: {exc.__class__.__name__}: {exc}") from exc
        except OSError as exc:
            raise StoreError(f"state store {_redacted(self.url)} unreachable: {exc}") from exc

    async def _create_schema(self) -> None:
        for attempt in range(1, 6):
            try:
                async with self.engine.begin() as conn:
                    await conn.run_sync(metadata.create_all)
                break
            except (sa.exc.OperationalError, sa.exc.ProgrammingError, sa.exc.IntegrityError):
                # Another process is creating the same tables (between our check and our CREATE):
                # give it a moment and look again; create_all skips what exists.
                if attempt == 5:
                    raise
                await asyncio.sleep(0.05 * attempt)
        self._ready = True


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    # WAL lets the heartbeat server read and write while a monitor run commits.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _insert_ignore(conn: Connection, values: dict[str, Any], table: sa.Table = agent_state) -> Any:
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).values(**values).on_conflict_do_nothing(index_elements=["agent_id"])
    if conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table).values(**values).on_conflict_do_nothing(index_elements=["agent_id"])
    return table.insert().values(**values)


def _column_value(value: Any) -> Any:
    if isinstance(value, AgentState):
        return value.value
    if isinstance(value, datetime):
        # SQLite keeps no offset: store every instant as UTC so it reads back as the same instant.
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return value


def _utc(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything agentwatch stores is UTC.
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _record(row: Any) -> AgentRecord:
    return AgentRecord(
        agent_id=row.agent_id,
        state=AgentState(row.state),
        since=_utc(row.since),
        reason=row.reason or "",
        failures=row.failures,
        successes=row.successes,
        first_seen=_utc(row.first_seen),
        last_checked=_utc(row.last_checked),
        next_check=_utc(row.next_check),
        latency_ms=row.latency_ms,
        paused=bool(row.paused),
        paused_until=_utc(row.paused_until),
        sticky=bool(row.sticky),
        version=row.version,
    )


def _beat_values(beat: Beat) -> dict[str, Any]:
    return {
        "agent_id": beat.agent_id,
        "last_beat_at": beat.last_beat_at,
        "last_start_at": beat.last_start_at,
        "last_fail_at": beat.last_fail_at,
        "last_exit_code": beat.last_exit_code,
        "beats": beat.beats,
        "updated_at": beat.updated_at or datetime.now(UTC),
    }


def _beat_upsert(conn: Connection) -> Any:
    """INSERT ... ON CONFLICT DO UPDATE with the merge rules of `Beat.merged`."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    else:
        raise StoreError(f"heartbeats need SQLite or PostgreSQL, not {conn.dialect.name}")
    stmt = insert(heartbeats)
    new, old = stmt.excluded, heartbeats.c
    sets_exit_code = sa.or_(new.last_fail_at.is_not(None), new.last_exit_code.is_not(None))
    return stmt.on_conflict_do_update(
        index_elements=["agent_id"],
        set_={
            "last_beat_at": sa.func.coalesce(new.last_beat_at, old.last_beat_at),
            "last_start_at": sa.func.coalesce(new.last_start_at, old.last_start_at),
            "last_fail_at": sa.func.coalesce(new.last_fail_at, old.last_fail_at),
            "last_exit_code": sa.case((sets_exit_code, new.last_exit_code), else_=old.last_exit_code),
            "beats": old.beats + new.beats,
            "updated_at": new.updated_at,
        },
    )


def _beat(row: Any) -> Beat:
    return Beat(
        agent_id=row.agent_id,
        last_beat_at=_utc(row.last_beat_at),
        last_start_at=_utc(row.last_start_at),
        last_fail_at=_utc(row.last_fail_at),
        last_exit_code=row.last_exit_code,
        beats=row.beats,
        updated_at=_utc(row.updated_at),
    )


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _budget(row: Any) -> RestartBudget:
    restarts = tuple(datetime.fromisoformat(t).astimezone(UTC) for t in json.loads(row.restarts or "[]"))
    return RestartBudget(
        agent_id=row.agent_id,
        restarts=restarts,
        exhausted_at=_utc(row.exhausted_at),
        retry_at=_utc(row.retry_at),
        version=row.version,
    )
