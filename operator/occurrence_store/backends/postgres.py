"""The PostgreSQL adapter (asyncpg): a connection pool, row locks that skip what another
claimer holds, advisory locks, ``LISTEN``/``NOTIFY``.

Every asyncpg error is translated where it is raised — in the connection wrapper, around
the pool and around each transaction — into :class:`StoreUnavailable` (the database cannot
be reached) or :class:`StoreQueryError` (anything else), with the driver's error as the
cause.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NoReturn

import asyncpg

from occurrence_store import fencing
from occurrence_store.clock import DatabaseClock
from occurrence_store.errors import (
    DatabaseUnavailable,
    InvalidDatabaseURL,
    StoreError,
    StoreQueryError,
    StoreUnavailable,
)
from occurrence_store.locks import advisory_key, poll_until
from occurrence_store.models import OccurrenceId, ThoughtStatus
from occurrence_store.ports import Claim, Connection, Database, MovePlan, Row
from occurrence_store.redact import scrub
from occurrence_store.rows import RECORDED_TRANSFER_COLUMNS, prefixed
from occurrence_store.sql import bind
from occurrence_store.urls import DatabaseURL, Dialect

MIGRATION_LOCK_KEY = 0x0CC_0DB_01
"""Arbitrary but fixed: the key of the transaction-scoped advisory lock all migrators take."""

_DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError,
    TimeoutError,
)
SESSION_BOUNDS = {
    # a transaction left idle by a stuck client never holds its locks for long (a statement
    # is bounded by the client's command_timeout, which cancels it on the server)
    "idle_in_transaction_session_timeout": "60s",
    # the server notices a client that vanished (a killed pod, a dropped NAT entry) in ~2 min
    "tcp_keepalives_idle": "60",
    "tcp_keepalives_interval": "10",
    "tcp_keepalives_count": "6",
}
"""Session settings every connection of the store starts with."""
CLIENT_CHECK_INTERVAL = "5s"
"""``client_connection_check_interval`` of every pooled session (PostgreSQL 14 and later): a
statement whose client is gone (an operator killed mid-drain, its socket closed) stops within
seconds, instead of running on, or waiting on a lock, with the rows it already locked held
until it ends. Set after connecting, so that an older server (which refuses the name in a
startup packet) still connects."""


async def _bound_statements(conn: asyncpg.Connection) -> None:
    """Pool ``init`` of every new session: see :data:`CLIENT_CHECK_INTERVAL`. Pooled
    connections are never reset (:class:`_PooledConnection`), so the setting stays."""
    if conn.get_server_version() >= (14,):
        await conn.execute(f"SET client_connection_check_interval = '{CLIENT_CHECK_INTERVAL}'")
ACQUIRE_TIMEOUT_SECONDS = 30.0
"""Longest a caller waits for a pooled connection before the database counts as unavailable."""

_UNAVAILABLE: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,  # admin/crash shutdown, cannot connect now
    asyncpg.exceptions.ObjectNotInPrerequisiteStateError,  # database not accepting connections
    asyncpg.exceptions.TooManyConnectionsError, OSError, TimeoutError,
)


@dataclass(frozen=True)
class _Where:
    """The database a message is about: printed redacted, and every message scrubbed of
    any fragment of the URL's password (a driver may quote what it misparsed)."""

    url: DatabaseURL

    def __str__(self) -> str:
        return self.url.redacted

    def describe(self, exc: BaseException) -> str:
        text = str(exc) or type(exc).__name__
        return scrub(text.splitlines()[0], self.url.url)


def _translate(exc: BaseException, conn: asyncpg.Connection | None, where: _Where
               ) -> StoreError:
    """The store's error for a driver error raised on ``conn`` (to ``where``, redacted).

    A backend ended while its connection sat idle in the pool (``pg_terminate_backend``, a
    failover, a proxy) leaves asyncpg's protocol half-closed: the server's goodbye was read,
    the end of the stream not yet. The next statement then fails with ``InternalClientError``
    ("cannot switch to state ...") before anything is sent. That is the database going away,
    not a bug: the connection is terminated so the pool replaces it, and the caller gets
    :class:`DatabaseUnavailable` (a :class:`StoreUnavailable`), which it may retry.
    """
    if isinstance(exc, asyncpg.InternalClientError):
        if conn is not None:
            conn.terminate()
        return DatabaseUnavailable(f"connection to {where} was lost: {where.describe(exc)}")
    text = scrub(str(exc) or type(exc).__name__, where.url.url)
    if isinstance(exc, _UNAVAILABLE):
        return StoreUnavailable(text)
    return StoreQueryError(text)


class _PgConnection:
    def __init__(self, conn: asyncpg.Connection, where: _Where) -> None:
        self.raw = conn
        self._where = where

    def _failed(self, exc: BaseException) -> NoReturn:
        raise _translate(exc, self.raw, self._where) from exc

    async def fetch(self, sql: str, /, *args: Any, **params: Any) -> list[Row]:
        if params:
            sql, args = bind(sql, params)
        try:
            return [dict(r) for r in await self.raw.fetch(sql, *args)]
        except _DRIVER_ERRORS as exc:
            self._failed(exc)

    async def fetchrow(self, sql: str, /, *args: Any, **params: Any) -> Row | None:
        if params:
            sql, args = bind(sql, params)
        try:
            row = await self.raw.fetchrow(sql, *args)
        except _DRIVER_ERRORS as exc:
            self._failed(exc)
        return dict(row) if row is not None else None

    async def fetchval(self, sql: str, /, *args: Any, **params: Any) -> Any:
        if params:
            sql, args = bind(sql, params)
        try:
            return await self.raw.fetchval(sql, *args)
        except _DRIVER_ERRORS as exc:
            self._failed(exc)

    async def execute(self, sql: str, /, *args: Any, **params: Any) -> None:
        if params:
            sql, args = bind(sql, params)
        try:
            await self.raw.execute(sql, *args)
        except _DRIVER_ERRORS as exc:
            self._failed(exc)

    async def executemany(self, sql: str, args: Iterable[Sequence[Any]]) -> None:
        try:
            await self.raw.executemany(sql, list(args))
        except _DRIVER_ERRORS as exc:
            self._failed(exc)

    async def execute_script(self, sql: str) -> None:
        try:
            await self.raw.execute(sql)
        except _DRIVER_ERRORS as exc:
            self._failed(exc)


class _PooledConnection(asyncpg.Connection):  # type: ignore[misc]
    """A pooled connection returned to the pool without asyncpg's reset query.

    The reset (``UNLISTEN *; RESET ALL; pg_advisory_unlock_all(); CLOSE ALL``) costs a round
    trip on every release. The core leaves no session state on pooled connections: LISTEN
    runs on a dedicated connection, the one session-level advisory lock (:meth:`hold_lock`)
    is unlocked or its connection terminated, settings are ``SET LOCAL`` (the test clock's
    offset is set again on every use), cursors live inside transactions. An open
    transaction is still rolled back by asyncpg on release, whatever this returns.
    """

    def get_reset_query(self) -> str:
        return ""


class _PgSubscription:
    """``LISTEN`` on a connection outside the pool (a pool resets listeners on release)."""

    def __init__(self, conn: asyncpg.Connection, where: _Where) -> None:
        self.conn = conn
        self._where = where
        self.lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: self.lost.set())

    async def probe(self, timeout: float) -> None:
        try:
            await self.conn.execute("SELECT 1", timeout=timeout)
        except _DRIVER_ERRORS as exc:
            raise _translate(exc, self.conn, self._where) from exc

    async def close(self) -> None:
        try:
            await self.conn.close()
        except _DRIVER_ERRORS as exc:
            raise _translate(exc, self.conn, self._where) from exc

    def terminate(self) -> None:
        if not self.conn.is_closed():
            self.conn.terminate()


@functools.lru_cache(maxsize=8)
def _move_batch_sql(pick: str) -> str:
    return _MOVE_BATCH.format(pick=pick)


@functools.lru_cache(maxsize=64)
def _claim_sql(claim: Claim) -> str:
    """The pick is a CTE (a LIMITed sub-select inside ``IN (...)`` may be re-run by the
    planner) whose rows are locked ``SKIP LOCKED``: two claimers (or a claimer and a drain)
    never take the same row, and neither waits for the other."""
    lock = f"FOR UPDATE OF {claim.lock_of} SKIP LOCKED" if claim.lock_of else (
        "FOR UPDATE SKIP LOCKED")
    return (
        f"WITH {fencing.LOCKED_FENCE_CTE}, picked AS ({claim.pick} "
        f"AND {fencing.NOT_FENCED_BY_LOCKED_ROW} {claim.order} {lock}) "
        f"UPDATE {claim.table} {claim.alias} SET {claim.assignments} FROM picked "
        f"WHERE {claim.alias}.{claim.key} = picked.{claim.key} "
        f"RETURNING {prefixed(claim.columns, claim.alias)}"
    )


_MOVE_AND_RECORD = f"""moved AS (
    UPDATE tasks t SET agent_occurrence_id = p.target, updated_at = :now
    FROM plan p WHERE t.task_id = p.task_id AND t.agent_occurrence_id = :source
    RETURNING t.task_id, p.target
), moved_thoughts AS (
    UPDATE thoughts th SET agent_occurrence_id = m.target, updated_at = :now,
        status = CASE WHEN th.status = :processing THEN :arrival ELSE th.status END
    FROM moved m WHERE th.source_task_id = m.task_id AND th.agent_occurrence_id = :source
    RETURNING th.source_task_id
), per_task AS (
    SELECT source_task_id, COUNT(*) AS n FROM moved_thoughts GROUP BY source_task_id
), recorded AS (
    INSERT INTO task_transfers ({RECORDED_TRANSFER_COLUMNS})
    SELECT m.task_id, :source, m.target, :reason, COALESCE(pt.n, 0), :now
    FROM moved m LEFT JOIN per_task pt ON pt.source_task_id = m.task_id
    RETURNING thoughts_moved
)"""
"""The CTEs after a ``plan (task_id, target)``: move the tasks ``:source`` still owns, move
their thoughts (PROCESSING ones arrive as ``:arrival``), write the transfer records."""
_THOUGHTS_MOVED = "(SELECT COALESCE(SUM(thoughts_moved), 0) FROM recorded) AS th"

_MOVE_TASKS = f"""
WITH plan AS (
    SELECT * FROM unnest(:task_ids::text[], :targets::text[]) AS p(task_id, target)
), {_MOVE_AND_RECORD}
SELECT m.task_id, m.target, {_THOUGHTS_MOVED} FROM moved m
"""
"""One statement for a plan the caller made (the rebalance)."""

_BATCH_SETTINGS = ("SET LOCAL work_mem = '64MB'; SET LOCAL jit = off; "
                   "SET LOCAL enable_nestloop = off")
"""For the statements that move a batch of tasks:

- the per-task thought counts are hashed in memory (the default 4MB spills to disk);
- no JIT: the planner cannot see through ``unnest`` and CTEs, estimates millions of rows,
  and compiled each batch's statement for ~0.5 s, a third of a 100,000-task drain (measured
  with EXPLAIN ANALYZE);
- no nested loops: statistics taken while an occurrence had a handful of tasks (a table
  analyzed before 20,000 tasks were added) make the planner expect one row per side and
  join the moved tasks, their thoughts and their counts in nested loops without an index,
  quadratic in the batch: a 20,000-task drain took 96 s instead of 0.4 s. A batch is bulk
  by design; hash joins are the plan the planner picks with true estimates anyway
  (``tests/store/test_transfer.py::test_a_drain_stays_linear_on_stale_statistics``)."""

_MOVE_BATCH = f"""
WITH picked AS ({{pick}}
), plan AS (
    SELECT task_id, (:targets::text[])[(:slots::int[])[row_number() OVER ()::int] + 1] AS target
    FROM picked
), {_MOVE_AND_RECORD}
SELECT m.target, COUNT(*) AS n, {_THOUGHTS_MOVED} FROM moved m GROUP BY m.target
"""
"""A drain batch in one round trip: pick, plan (the slots say which target each picked task
goes to), move the tasks and their thoughts, record the moves; only per-target counts come
back. The ids never travel to the client and back."""


class PostgresDatabase(Database):
    dialect: Dialect = "postgresql"
    notifications = True
    timestamp_type = "TIMESTAMPTZ"

    def __init__(self, url: DatabaseURL, pool: asyncpg.Pool, clock: DatabaseClock,
                 application_name: str | None = None) -> None:
        self.url = url
        self.pool = pool
        self.clock = clock
        self.application_name = application_name
        self._where = _Where(url)
        self.acquire_timeout = ACQUIRE_TIMEOUT_SECONDS

    @classmethod
    async def connect(
        cls, url: DatabaseURL, *, clock: DatabaseClock, min_size: int = 1, max_size: int = 10,
        timeout: float = 10.0, application_name: str | None = None,
        acquire_timeout: float = ACQUIRE_TIMEOUT_SECONDS,
        session_settings: Mapping[str, str] | None = None,
    ) -> PostgresDatabase:
        """``application_name`` names this process's sessions in ``pg_stat_activity`` (an
        agent uses its occurrence id: an operator sees at once whose backend is whose).
        ``session_settings``: more server settings of every session (the operator bounds
        its lock waits with ``lock_timeout``)."""
        settings = {**SESSION_BOUNDS, **(session_settings or {})}
        if application_name:
            settings["application_name"] = application_name[:63]
        try:
            pool = await asyncpg.create_pool(
                url.url, min_size=min_size, max_size=max_size, timeout=timeout,
                command_timeout=300, connection_class=_PooledConnection,
                server_settings=settings, init=_bound_statements,
            )
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            where = _Where(url)
            raise DatabaseUnavailable(f"cannot connect to {where}: {where.describe(exc)}"
                                      ) from None
        except ValueError as exc:  # asyncpg's DSN parser (its message may quote the password)
            where = _Where(url)
            raise InvalidDatabaseURL(f"invalid PostgreSQL URL {where}: {where.describe(exc)}"
                                     ) from None
        database = cls(url, pool, clock, application_name)
        database.acquire_timeout = acquire_timeout
        return database

    async def _shift_clock(self, conn: asyncpg.Connection) -> None:
        """Tests shift the database clock; each session carries the offset it must add."""
        if self.clock.shifted:
            await conn.execute("SELECT set_config('occurrence.clock_offset', $1, false)",
                               self.clock.offset_interval)

    @contextlib.asynccontextmanager
    async def _acquire(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection with the clock's offset; one found broken is ended (see
        :func:`_translate`). Errors of the block itself are the block's business."""
        try:
            conn = await self.pool.acquire(timeout=self.acquire_timeout)
        except _DRIVER_ERRORS as exc:
            raise _translate(exc, None, self._where) from exc
        try:
            try:
                await self._shift_clock(conn)
            except _DRIVER_ERRORS as exc:
                raise _translate(exc, conn, self._where) from exc
            yield conn
        finally:
            try:
                await self.pool.release(conn)
            except _DRIVER_ERRORS as exc:
                raise _translate(exc, conn, self._where) from exc

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        async with self._acquire() as conn:
            yield _PgConnection(conn, self._where)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        async with self._acquire() as conn:
            try:
                async with conn.transaction():
                    yield _PgConnection(conn, self._where)
            except _DRIVER_ERRORS as exc:  # BEGIN, COMMIT or ROLLBACK (statements translate)
                raise _translate(exc, conn, self._where) from exc

    async def close(self) -> None:
        await self.pool.close()

    # ------------------------------------------------------------------ statements

    def claim_sql(self, claim: Claim) -> str:
        return _claim_sql(claim)

    def in_ids(self, column: str, param: str, *, negate: bool = False) -> str:
        return f"{column} <> ALL({param}::text[])" if negate else f"{column} = ANY({param}::text[])"

    def ids_arg(self, ids: Sequence[str]) -> object:
        return list(ids)

    def insert_ignoring_conflicts(self, insert: str, conflict_target: str) -> str:
        return f"{insert} ON CONFLICT ({conflict_target}) DO NOTHING"

    def row_lock(self, *, skip_locked: bool) -> str:
        return " FOR UPDATE SKIP LOCKED" if skip_locked else " FOR UPDATE"

    async def move_tasks(self, conn: Connection, plan: MovePlan, source: OccurrenceId,
                         reason: str, now: datetime, arrival: str
                         ) -> tuple[list[tuple[str, OccurrenceId]], int]:
        await conn.execute(_BATCH_SETTINGS)
        rows = await conn.fetch(
            _MOVE_TASKS, task_ids=[t for t, _ in plan], targets=[g for _, g in plan],
            source=source, now=now, reason=reason, processing=ThoughtStatus.PROCESSING.value,
            arrival=arrival,
        )
        thoughts = int(rows[0]["th"]) if rows else 0
        return [(r["task_id"], r["target"]) for r in rows], thoughts

    async def move_batch(self, conn: Connection, *, pick: str, source: OccurrenceId,
                         limit: int, targets: Sequence[OccurrenceId], slots: Sequence[int],
                         reason: str, now: datetime, arrival: str
                         ) -> tuple[dict[OccurrenceId, int], int]:
        await conn.execute(_BATCH_SETTINGS)
        rows = await conn.fetch(
            _move_batch_sql(pick), source=source, limit=limit, targets=list(targets),
            slots=list(slots), now=now, reason=reason,
            processing=ThoughtStatus.PROCESSING.value, arrival=arrival)
        thoughts = int(rows[0]["th"]) if rows else 0
        return {r["target"]: int(r["n"]) for r in rows}, thoughts

    # ------------------------------------------------------------------ coordination

    async def notify(self, conn: Connection, channel: str, payload: str) -> None:
        await conn.execute("SELECT pg_notify($1, $2)", channel, payload)

    async def listen(self, channel: str, on_payload: Callable[[str], None]) -> _PgSubscription:
        settings = dict(SESSION_BOUNDS)  # an idle LISTEN connection needs the keepalives most
        if self.application_name:
            settings["application_name"] = f"{self.application_name}:listen"[:63]
        try:
            conn = await asyncpg.connect(self.url.url, server_settings=settings)
        except _DRIVER_ERRORS as exc:
            raise _translate(exc, None, self._where) from exc
        subscription = _PgSubscription(conn, self._where)
        try:
            await conn.add_listener(
                channel, lambda _conn, _pid, _channel, payload: on_payload(payload))
        except BaseException as exc:
            subscription.terminate()
            if isinstance(exc, _DRIVER_ERRORS):
                raise _translate(exc, None, self._where) from exc
            raise
        return subscription

    @contextlib.asynccontextmanager
    async def hold_lock(self, name: str, *, wait_seconds: float,
                        lease_seconds: float) -> AsyncIterator[bool]:
        """A session-level advisory lock on a pooled connection: released at the end of the
        block — and by the server if the holder dies, since it goes with the session.
        ``lease_seconds`` is not needed here."""
        key = advisory_key(name)
        async with self._acquire() as raw:
            conn = _PgConnection(raw, self._where)

            async def attempt() -> bool:
                return bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", key))

            held = await poll_until(attempt, wait_seconds)
            try:
                yield held
            finally:
                if held:
                    try:
                        await conn.fetchval("SELECT pg_advisory_unlock($1)", key)
                    except BaseException:
                        # the lock goes with the session, not back to the pool (a proxy whose
                        # connection already died refuses: then it is gone anyway)
                        with contextlib.suppress(asyncpg.InterfaceError):
                            raw.terminate()
                        raise

    async def lock_migrations(self, conn: Connection) -> None:
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
