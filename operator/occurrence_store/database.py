"""A thin async database interface with one implementation per backend.

SQL is written once with PostgreSQL's ``$1`` placeholders; the SQLite adapter rewrites them
to SQLite's numbered ``?1`` form. Where the dialects truly differ (locking, arrays, upserts
of leases) the caller picks the statement by :attr:`Database.dialect`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import aiosqlite
import asyncpg

from occurrence_store.clock import DatabaseClock
from occurrence_store.errors import DatabaseUnavailable, InvalidDatabaseURL
from occurrence_store.redact import scrub
from occurrence_store.urls import DatabaseURL, Dialect, parse_database_url

Row = dict[str, Any]

_PLACEHOLDER = re.compile(r"\$(\d+)")


class Connection(Protocol):
    """What the core needs from one connection (inside or outside a transaction)."""

    async def fetch(self, sql: str, *args: Any) -> list[Row]: ...
    async def fetchrow(self, sql: str, *args: Any) -> Row | None: ...
    async def fetchval(self, sql: str, *args: Any) -> Any: ...
    async def execute(self, sql: str, *args: Any) -> None: ...
    async def executemany(self, sql: str, args: Iterable[Sequence[Any]]) -> None: ...
    async def execute_script(self, sql: str) -> None: ...


class Database(Protocol):
    dialect: Dialect
    url: DatabaseURL
    clock: DatabaseClock

    def connection(self) -> contextlib.AbstractAsyncContextManager[Connection]: ...
    def transaction(self) -> contextlib.AbstractAsyncContextManager[Connection]: ...
    async def close(self) -> None: ...


# --------------------------------------------------------------------------- PostgreSQL


class _PgConnection:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.raw = conn

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return [dict(r) for r in await self.raw.fetch(sql, *args)]

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        row = await self.raw.fetchrow(sql, *args)
        return dict(row) if row is not None else None

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self.raw.fetchval(sql, *args)

    async def execute(self, sql: str, *args: Any) -> None:
        await self.raw.execute(sql, *args)

    async def executemany(self, sql: str, args: Iterable[Sequence[Any]]) -> None:
        await self.raw.executemany(sql, list(args))

    async def execute_script(self, sql: str) -> None:
        await self.raw.execute(sql)


class _PooledConnection(asyncpg.Connection):
    """A pooled connection returned to the pool without asyncpg's reset query.

    The reset (``UNLISTEN *; RESET ALL; pg_advisory_unlock_all(); CLOSE ALL``) costs a round
    trip on every release. The core leaves no session state on pooled connections: LISTEN
    runs on a dedicated connection, the one session-level advisory lock (locks.py) is
    unlocked or its connection terminated, settings are ``SET LOCAL`` (the test clock's
    offset is set again on every use), cursors live inside transactions. An open
    transaction is still rolled back by asyncpg on release, whatever this returns.
    """

    def get_reset_query(self) -> str:
        return ""


class PostgresDatabase:
    dialect: Dialect = "postgresql"

    def __init__(self, url: DatabaseURL, pool: asyncpg.Pool, clock: DatabaseClock,
                 application_name: str | None = None) -> None:
        self.url = url
        self.pool = pool
        self.clock = clock
        self.application_name = application_name

    @classmethod
    async def connect(
        cls, url: DatabaseURL, *, clock: DatabaseClock, min_size: int = 1, max_size: int = 10,
        timeout: float = 10.0, application_name: str | None = None,
    ) -> PostgresDatabase:
        """``application_name`` names this process's sessions in ``pg_stat_activity`` (an
        agent uses its occurrence id: an operator sees at once whose backend is whose)."""
        settings = {"application_name": application_name[:63]} if application_name else None
        try:
            pool = await asyncpg.create_pool(
                url.url, min_size=min_size, max_size=max_size, timeout=timeout,
                command_timeout=300, connection_class=_PooledConnection,
                server_settings=settings,
            )
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            raise DatabaseUnavailable(
                f"cannot connect to {url.redacted}: {scrub(_describe(exc), url.url)}"
            ) from None
        except ValueError as exc:  # asyncpg's DSN parser (its message may quote the password)
            raise InvalidDatabaseURL(
                f"invalid PostgreSQL URL {url.redacted}: {scrub(str(exc), url.url)}") from None
        return cls(url, pool, clock, application_name)

    async def _shift_clock(self, conn: asyncpg.Connection) -> None:
        """Tests shift the database clock; each session carries the offset it must add."""
        if self.clock.shifted:
            await conn.execute("SELECT set_config('occurrence.clock_offset', $1, false)",
                               f"{self.clock.offset_seconds} seconds")

    @contextlib.asynccontextmanager
    async def _acquire(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection; one found broken is ended and reported as unavailable.

        A backend ended while its connection sat idle in the pool (``pg_terminate_backend``,
        a failover, a proxy) leaves asyncpg's protocol half-closed: the server's goodbye was
        read, the end of the stream not yet. The next statement then fails with
        ``InternalClientError`` ("cannot switch to state ...") before anything is sent. That is
        the database going away, not a bug: the connection is terminated so the pool replaces
        it, and the caller gets :class:`DatabaseUnavailable`, which it may retry.
        """
        async with self.pool.acquire() as conn:
            try:
                await self._shift_clock(conn)
                yield conn
            except asyncpg.InternalClientError as exc:
                conn.terminate()
                raise DatabaseUnavailable(
                    f"connection to {self.url.redacted} was lost: "
                    f"{scrub(_describe(exc), self.url.url)}"
                ) from exc

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        async with self._acquire() as conn:
            yield _PgConnection(conn)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        async with self._acquire() as conn, conn.transaction():
            yield _PgConnection(conn)

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[asyncpg.Connection]:
        """One pooled connection for session state (an advisory lock held across steps).

        The caller must leave the session clean (unlock what it locked) or terminate the
        connection, so that no state goes back to the pool with it.
        """
        async with self._acquire() as conn:
            yield conn

    async def dedicated_connection(self) -> asyncpg.Connection:
        """A connection outside the pool, for LISTEN (a pool resets listeners on release)."""
        settings = ({"application_name": f"{self.application_name}:listen"[:63]}
                    if self.application_name else None)
        return await asyncpg.connect(self.url.url, server_settings=settings)

    async def close(self) -> None:
        await self.pool.close()


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0]


# --------------------------------------------------------------------------- SQLite


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


def _sqlite_sql(sql: str) -> str:
    return _PLACEHOLDER.sub(r"?\1", sql)


class _SqliteConnection:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.raw = conn

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        async with self.raw.execute(_sqlite_sql(sql), [_sqlite_param(a) for a in args]) as cur:
            rows = await cur.fetchall()
        return [dict(r) for r in rows]

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, *args: Any) -> Any:
        row = await self.fetchrow(sql, *args)
        return next(iter(row.values())) if row else None

    async def execute(self, sql: str, *args: Any) -> None:
        await self.raw.execute(_sqlite_sql(sql), [_sqlite_param(a) for a in args])

    async def executemany(self, sql: str, args: Iterable[Sequence[Any]]) -> None:
        await self.raw.executemany(
            _sqlite_sql(sql), [[_sqlite_param(a) for a in row] for row in args]
        )

    async def execute_script(self, sql: str) -> None:
        """Run several statements one by one: ``executescript`` would COMMIT first."""
        for statement in split_sql_statements(sql):
            await self.raw.execute(statement)


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


class SqliteDatabase:
    """One SQLite connection per :class:`SqliteDatabase`, used by one task at a time.

    Writers take ``BEGIN IMMEDIATE`` so the write lock is taken up front (no upgrade
    deadlocks between processes); WAL lets readers go on meanwhile; ``busy_timeout``
    makes a second process wait for the lock instead of failing.
    """

    dialect: Dialect = "sqlite"

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
        await conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        await conn.execute("PRAGMA journal_mode = WAL")
        await conn.execute("PRAGMA synchronous = NORMAL")
        await conn.create_function(
            "occurrence_now", 0, lambda: to_sqlite_timestamp(clock.host_now()))
        await conn.create_function(
            "occurrence_after", 1,
            lambda seconds: to_sqlite_timestamp(clock.host_now() + timedelta(seconds=seconds)))
        return cls(url, conn, clock)

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        async with self._lock:
            yield _SqliteConnection(self.conn)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        async with self._lock:
            await self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield _SqliteConnection(self.conn)
            except BaseException:
                await self.conn.execute("ROLLBACK")
                raise
            else:
                await self.conn.execute("COMMIT")

    async def close(self) -> None:
        await self.conn.close()


async def fetch_now(conn: Connection) -> datetime:
    """The database's clock (``occurrence_now()``), read on ``conn``."""
    value = await conn.fetchval("SELECT occurrence_now()")
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


async def open_database(url: str | DatabaseURL | None, *, clock: DatabaseClock | None = None,
                        **kwargs: Any) -> Database:
    parsed = url if isinstance(url, DatabaseURL) else parse_database_url(url)
    clock = clock or DatabaseClock()
    if parsed.dialect == "postgresql":
        return await PostgresDatabase.connect(parsed, clock=clock, **kwargs)
    return await SqliteDatabase.connect(parsed, clock=clock, **kwargs)
