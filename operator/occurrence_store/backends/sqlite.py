"""The SQLite adapter (aiosqlite): one connection per process, one writer at a time.

SQL is written with PostgreSQL's ``$1`` placeholders (or named ones, :mod:`.sql`); this
adapter rewrites them to SQLite's numbered ``?1`` form, once per statement. Every
sqlite3 error is translated where it is raised into :class:`StoreUnavailable` (the file is
locked, unreadable or not a database) or :class:`StoreQueryError` (anything else), with the
driver's error as the cause.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import json
import os
import re
import socket
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

import aiosqlite

from occurrence_store import fencing
from occurrence_store.clock import NOW_SQL, DatabaseClock, after_sql
from occurrence_store.errors import (
    DatabaseUnavailable,
    StoreError,
    StoreQueryError,
    StoreUnavailable,
)
from occurrence_store.locks import poll_until
from occurrence_store.models import OccurrenceId, ThoughtStatus
from occurrence_store.ports import Claim, Connection, Database, MovePlan, Row, Subscription
from occurrence_store.rows import record_transfers
from occurrence_store.sql import bind
from occurrence_store.urls import DatabaseURL, Dialect

_PLACEHOLDER = re.compile(r"\$(\d+)")

_DRIVER_ERRORS: tuple[type[BaseException], ...] = (sqlite3.Error, OSError, TimeoutError)
_UNREACHABLE_HINTS = ("unable to open", "disk i/o error", "database is locked",
                      "readonly database", "file is not a database")
"""What sqlite3's ``OperationalError`` says when the file, not the statement, is the problem."""


def _translate(exc: BaseException) -> StoreError:
    if isinstance(exc, sqlite3.OperationalError):
        text = str(exc).lower()
        unreachable = any(hint in text for hint in _UNREACHABLE_HINTS)
    else:
        unreachable = isinstance(exc, OSError | TimeoutError)
    return (StoreUnavailable if unreachable else StoreQueryError)(str(exc) or type(exc).__name__)


def _sqlite_param(value: Any) -> Any:
    if isinstance(value, datetime):
        return to_sqlite_timestamp(value)
    if isinstance(value, bool):
        return int(value)
    return value


def to_sqlite_timestamp(value: datetime) -> str:
    """Fixed-width UTC ISO text, so that string order is time order in SQLite."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


@functools.lru_cache(maxsize=4096)
def _sqlite_sql(sql: str) -> str:
    return _PLACEHOLDER.sub(r"?\1", sql)


def _statement(sql: str, args: Sequence[Any], params: dict[str, Any]) -> tuple[str, list[Any]]:
    if params:
        sql, args = bind(sql, params)
    return _sqlite_sql(sql), [_sqlite_param(a) for a in args]


class _SqliteConnection:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.raw = conn

    @staticmethod
    def _failed(exc: BaseException) -> NoReturn:
        raise _translate(exc) from exc

    async def fetch(self, sql: str, /, *args: Any, **params: Any) -> list[Row]:
        text, values = _statement(sql, args, params)
        try:
            async with self.raw.execute(text, values) as cur:
                rows = await cur.fetchall()
        except _DRIVER_ERRORS as exc:
            self._failed(exc)
        return [dict(r) for r in rows]

    async def fetchrow(self, sql: str, /, *args: Any, **params: Any) -> Row | None:
        rows = await self.fetch(sql, *args, **params)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, /, *args: Any, **params: Any) -> Any:
        row = await self.fetchrow(sql, *args, **params)
        return next(iter(row.values())) if row else None

    async def execute(self, sql: str, /, *args: Any, **params: Any) -> None:
        text, values = _statement(sql, args, params)
        try:
            await self.raw.execute(text, values)
        except _DRIVER_ERRORS as exc:
            self._failed(exc)

    async def executemany(self, sql: str, args: Iterable[Sequence[Any]]) -> None:
        try:
            await self.raw.executemany(
                _sqlite_sql(sql), [[_sqlite_param(a) for a in row] for row in args]
            )
        except _DRIVER_ERRORS as exc:
            self._failed(exc)

    async def execute_script(self, sql: str) -> None:
        """Run several statements one by one: ``executescript`` would COMMIT first."""
        for statement in split_sql_statements(sql):
            try:
                await self.raw.execute(statement)
            except _DRIVER_ERRORS as exc:
                self._failed(exc)


def split_sql_statements(sql: str) -> list[str]:
    statements: list[str] = []
    buffer = ""
    for line in sql.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            if buffer.strip():
                statements.append(buffer.strip())
            buffer = ""
    if buffer.strip() and not all(
        ln.strip().startswith("--") or not ln.strip() for ln in buffer.splitlines()
    ):
        statements.append(buffer.strip())
    return statements


@functools.lru_cache(maxsize=64)
def _claim_sql(claim: Claim) -> str:
    """Runs under the write lock, one writer at a time: picking and updating by
    ``key IN (pick)`` is atomic; ``still_claimable`` re-checks each picked row."""
    return (
        f"UPDATE {claim.table} SET {claim.assignments} WHERE {claim.key} IN ({claim.pick} "
        f"AND {fencing.NOT_FENCED} {claim.order}) AND {claim.still_claimable} "
        f"RETURNING {claim.columns}"
    )


_TAKE_LEASED_LOCK = (
    "INSERT INTO occurrence_locks AS l (name, holder, expires_at) "
    f"VALUES (:name, :holder, {after_sql(':lease_seconds')}) ON CONFLICT (name) DO UPDATE SET "
    "holder = excluded.holder, expires_at = excluded.expires_at "
    f"WHERE l.expires_at < {NOW_SQL} RETURNING holder"
)

# The drain's move, statement by statement under BEGIN IMMEDIATE: keep only the planned rows
# the source still owns (the guard), then move thoughts and tasks; the records follow.
_PLAN_TABLE = ("CREATE TEMP TABLE IF NOT EXISTS drain_plan "
               "(task_id TEXT PRIMARY KEY, target TEXT NOT NULL)")
_CLEAR_PLAN = "DELETE FROM drain_plan"
_ADD_TO_PLAN = "INSERT INTO drain_plan (task_id, target) VALUES ($1, $2)"
_KEEP_OWNED = ("DELETE FROM drain_plan WHERE task_id NOT IN "
               "(SELECT task_id FROM tasks WHERE agent_occurrence_id = $1)")
_PLANNED_THOUGHTS = (
    "SELECT p.task_id, p.target, (SELECT COUNT(*) FROM thoughts th WHERE "
    "th.source_task_id = p.task_id AND th.agent_occurrence_id = $1) AS n FROM drain_plan p")
_MOVE_THOUGHTS = (
    "UPDATE thoughts SET agent_occurrence_id = (SELECT target FROM drain_plan p "
    "WHERE p.task_id = thoughts.source_task_id), updated_at = :now, "
    "status = CASE WHEN status = :processing THEN :arrival ELSE status END "
    "WHERE agent_occurrence_id = :source AND source_task_id IN (SELECT task_id FROM drain_plan)"
)
_MOVE_PLANNED_TASKS = (
    "UPDATE tasks SET agent_occurrence_id = (SELECT target FROM drain_plan p "
    "WHERE p.task_id = tasks.task_id), updated_at = $2 "
    "WHERE agent_occurrence_id = $1 AND task_id IN (SELECT task_id FROM drain_plan)"
)


class SqliteDatabase(Database):
    """One SQLite connection per :class:`SqliteDatabase`, used by one task at a time.

    Writers take ``BEGIN IMMEDIATE`` so the write lock is taken up front (no upgrade
    deadlocks between processes); WAL lets readers go on meanwhile; ``busy_timeout``
    makes a second process wait for the lock instead of failing.
    """

    dialect: Dialect = "sqlite"
    notifications = False
    timestamp_type = "TEXT"

    def __init__(self, url: DatabaseURL, conn: aiosqlite.Connection,
                 clock: DatabaseClock) -> None:
        self.url = url
        self.conn = conn
        self.clock = clock
        self._lock = asyncio.Lock()

    @classmethod
    async def connect(cls, url: DatabaseURL, *, clock: DatabaseClock,
                      busy_timeout_ms: int = 30000,
                      application_name: str | None = None) -> SqliteDatabase:
        assert url.sqlite_path is not None
        path = Path(url.sqlite_path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = await aiosqlite.connect(str(path), isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise DatabaseUnavailable(f"cannot open SQLite database {path}: {exc}") from None
        conn.row_factory = aiosqlite.Row
        try:
            await conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            await conn.execute("PRAGMA journal_mode = WAL")
            await conn.execute("PRAGMA synchronous = NORMAL")
            await conn.create_function(
                "occurrence_now", 0, lambda: to_sqlite_timestamp(clock.host_now()))
            await conn.create_function(
                "occurrence_after", 1,
                lambda seconds: to_sqlite_timestamp(
                    clock.host_now() + timedelta(seconds=seconds)))
        except _DRIVER_ERRORS as exc:
            await conn.close()
            raise _translate(exc) from exc
        return cls(url, conn, clock)

    async def _run(self, sql: str) -> None:
        try:
            await self.conn.execute(sql)
        except _DRIVER_ERRORS as exc:
            raise _translate(exc) from exc

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        async with self._lock:
            yield _SqliteConnection(self.conn)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        async with self._lock:
            await self._run("BEGIN IMMEDIATE")
            try:
                yield _SqliteConnection(self.conn)
            except BaseException:
                await self._run("ROLLBACK")
                raise
            else:
                await self._run("COMMIT")

    async def close(self) -> None:
        await self.conn.close()

    # ------------------------------------------------------------------ statements

    def claim_sql(self, claim: Claim) -> str:
        return _claim_sql(claim)

    def in_ids(self, column: str, param: str, *, negate: bool = False) -> str:
        return f"{column} {'NOT IN' if negate else 'IN'} (SELECT value FROM json_each({param}))"

    def ids_arg(self, ids: Sequence[str]) -> object:
        return json.dumps(list(ids))

    def insert_ignoring_conflicts(self, insert: str, conflict_target: str) -> str:
        """``INSERT OR IGNORE``: any conflict inserts nothing (the target is implied)."""
        return "INSERT OR IGNORE" + insert.removeprefix("INSERT")

    def row_lock(self, *, skip_locked: bool) -> str:
        return ""  # BEGIN IMMEDIATE holds the write lock: nobody else writes meanwhile

    async def move_tasks(self, conn: Connection, plan: MovePlan, source: OccurrenceId,
                         reason: str, now: datetime, arrival: str
                         ) -> tuple[list[tuple[str, OccurrenceId]], int]:
        await conn.execute(_PLAN_TABLE)
        await conn.execute(_CLEAR_PLAN)
        await conn.executemany(_ADD_TO_PLAN, plan)
        await conn.execute(_KEEP_OWNED, source)
        counts = await conn.fetch(_PLANNED_THOUGHTS, source)
        await conn.execute(_MOVE_THOUGHTS, now=now, processing=ThoughtStatus.PROCESSING.value,
                           arrival=arrival, source=source)
        await conn.execute(_MOVE_PLANNED_TASKS, source, now)
        await record_transfers(
            conn, [(r["task_id"], r["target"], int(r["n"])) for r in counts], source, reason, now)
        await conn.execute(_CLEAR_PLAN)
        return [(r["task_id"], r["target"]) for r in counts], sum(int(r["n"]) for r in counts)

    async def move_batch(self, conn: Connection, *, pick: str, source: OccurrenceId,
                         limit: int, targets: Sequence[OccurrenceId], slots: Sequence[int],
                         reason: str, now: datetime, arrival: str
                         ) -> tuple[dict[OccurrenceId, int], int]:
        # one writer at a time holds the database: the pick needs no lock, and the ids stay
        # in this process (no network between here and the rows)
        picked = [r["task_id"] for r in await conn.fetch(pick, source=source, limit=limit)]
        plan = [(task_id, targets[slot]) for task_id, slot in zip(picked, slots, strict=False)]
        moved, thoughts = await self.move_tasks(conn, plan, source, reason, now, arrival)
        return dict(collections.Counter(target for _task_id, target in moved)), thoughts

    # ------------------------------------------------------------------ coordination

    async def notify(self, conn: Connection, channel: str, payload: str) -> None:
        """Nothing: every waiter polls (the notification is only ever a hint)."""

    async def listen(self, channel: str, on_payload: Callable[[str], None]) -> Subscription:
        raise StoreError("SQLite has no notifications: poll instead")

    @contextlib.asynccontextmanager
    async def hold_lock(self, name: str, *, wait_seconds: float,
                        lease_seconds: float) -> AsyncIterator[bool]:
        """A row with a lease in ``occurrence_locks``: a holder that dies loses it when the
        lease runs out."""
        holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"

        async def take() -> bool:
            async with self.transaction() as conn:
                row = await conn.fetchrow(_TAKE_LEASED_LOCK, name=name, holder=holder,
                                          lease_seconds=float(lease_seconds))
            return row is not None

        held = await poll_until(take, wait_seconds)
        try:
            yield held
        finally:
            if held:
                async with self.connection() as conn:
                    await conn.execute(
                        "DELETE FROM occurrence_locks WHERE name = $1 AND holder = $2",
                        name, holder)

    async def lock_migrations(self, conn: Connection) -> None:
        """Nothing more: the transaction is ``BEGIN IMMEDIATE``, which holds the write lock."""
