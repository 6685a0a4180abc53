"""The one port between the core and a database backend: what every backend must provide.

The query modules (scoped, shared, registry, transfer, maintenance, migrations, locks,
notify) write portable SQL — named parameters (``:task_id``, see :mod:`.sql`) where a
statement takes several values, positional ``$1``/``$2`` in the short lookups of one or two
(the SQLite adapter turns both into ``?n``, once per statement) — and ask the
:class:`Database` for whatever differs between backends — the claim statement, id lists,
conflict-ignoring inserts, row locks, the drain's bulk move, notifications, named locks and
the migration lock. The adapters live in :mod:`occurrence_store.backends`: PostgreSQL
(asyncpg) and SQLite (aiosqlite). They also translate every driver error into the store's
own (:class:`~occurrence_store.errors.StoreUnavailable`,
:class:`~occurrence_store.errors.StoreQueryError`), so none escapes the store.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from occurrence_store.clock import DatabaseClock
from occurrence_store.models import OccurrenceId
from occurrence_store.urls import DatabaseURL, Dialect

Row = dict[str, Any]

MovePlan = Sequence[tuple[str, OccurrenceId]]
"""``(task_id, target occurrence)`` pairs of one drain or rebalance batch."""


class Connection(Protocol):
    """What the core needs from one connection (inside or outside a transaction).

    A statement takes either positional arguments for ``$1..$n`` or named ones for
    ``:name`` placeholders (:func:`occurrence_store.sql.compile_named`), never both.
    """

    async def fetch(self, sql: str, /, *args: Any, **params: Any) -> list[Row]: ...
    async def fetchrow(self, sql: str, /, *args: Any, **params: Any) -> Row | None: ...
    async def fetchval(self, sql: str, /, *args: Any, **params: Any) -> Any: ...
    async def execute(self, sql: str, /, *args: Any, **params: Any) -> None: ...
    async def executemany(self, sql: str, args: Iterable[Sequence[Any]]) -> None: ...
    async def execute_script(self, sql: str) -> None: ...


@dataclass(frozen=True)
class Claim:
    """One statement that picks rows of ``table`` and takes them, checking the fence.

    ``pick`` selects the candidates' ``key`` (its ``WHERE`` without the fence check),
    ``order`` orders and limits them, ``assignments`` is the ``SET`` list (unqualified
    columns), ``columns`` what comes back. ``still_claimable`` re-checks a picked row where
    the backend updates by ``key IN (pick)``; ``lock_of`` names the alias to lock when the
    pick joins tables; ``alias`` is the updated table's where the statement needs one (the
    statement's text is what ``pg_stat_activity`` shows: keep it recognisable). The occurrence
    is the ``:occurrence_id`` parameter.
    """

    table: str
    key: str
    pick: str
    order: str
    assignments: str
    columns: str
    still_claimable: str
    lock_of: str = ""
    alias: str = "x"


class Subscription(Protocol):
    """A live ``LISTEN``: notifications go to the callback given to :meth:`Database.listen`."""

    lost: asyncio.Event
    """Set when the connection behind it ended."""

    async def probe(self, timeout: float) -> None:
        """A round trip: a connection that died silently fails it."""

    async def close(self) -> None:
        """End it politely (the connection may still be healthy)."""

    def terminate(self) -> None:
        """End it at once, whatever state the connection is in."""


class Database(abc.ABC):
    """One database shared by all occurrences, as the core sees it."""

    dialect: Dialect
    """Informational: ``"postgresql"`` or ``"sqlite"`` (migrations are kept per dialect)."""
    url: DatabaseURL
    clock: DatabaseClock
    notifications: bool
    """Whether :meth:`listen` / :meth:`notify` do anything (SQLite has no notifications)."""
    timestamp_type: str
    """The column type of a timestamp in tables the core creates outside migrations."""

    @abc.abstractmethod
    def connection(self) -> contextlib.AbstractAsyncContextManager[Connection]:
        """A connection for statements that are atomic on their own."""

    @abc.abstractmethod
    def transaction(self) -> contextlib.AbstractAsyncContextManager[Connection]:
        """A connection inside a transaction, committed when the block ends normally."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    # ------------------------------------------------------------------ statements

    @abc.abstractmethod
    def claim_sql(self, claim: Claim) -> str:
        """The single statement that takes ``claim``'s rows; concurrent claimers never take
        the same row, and a fenced occurrence takes none (see :mod:`.fencing`)."""

    @abc.abstractmethod
    def in_ids(self, column: str, param: str, *, negate: bool = False) -> str:
        """``column`` is (not) one of the ids passed as the one parameter ``param``."""

    @abc.abstractmethod
    def ids_arg(self, ids: Sequence[str]) -> object:
        """The value of the parameter of :meth:`in_ids`."""

    @abc.abstractmethod
    def insert_ignoring_conflicts(self, insert: str, conflict_target: str) -> str:
        """``insert`` (``INSERT INTO ... VALUES (...)``) inserting nothing on a conflict."""

    @abc.abstractmethod
    def row_lock(self, *, skip_locked: bool) -> str:
        """The clause that locks a ``SELECT``'s rows until the transaction ends ('' where a
        write transaction already excludes every other writer)."""

    @abc.abstractmethod
    async def move_tasks(self, conn: Connection, plan: MovePlan, source: OccurrenceId,
                         reason: str, now: datetime, arrival: str
                         ) -> tuple[list[tuple[str, OccurrenceId]], int]:
        """Move the planned tasks ``source`` still owns, with their thoughts (PROCESSING ones
        arrive as ``arrival``), and record each move; return the moved pairs and how many
        thoughts moved."""

    @abc.abstractmethod
    async def move_batch(self, conn: Connection, *, pick: str, source: OccurrenceId,
                         limit: int, targets: Sequence[OccurrenceId], slots: Sequence[int],
                         reason: str, now: datetime, arrival: str
                         ) -> tuple[dict[OccurrenceId, int], int]:
        """Move the tasks ``pick`` selects (a ``SELECT t.task_id ... LIMIT :limit`` over
        ``source``'s tasks, locked), the ``k``-th to ``targets[slots[k]]``, with their
        thoughts, recording each move (as :meth:`move_tasks`); return the tasks moved per
        target and how many thoughts moved. Picked rows beyond ``slots`` stay."""

    # ------------------------------------------------------------------ coordination

    @abc.abstractmethod
    async def notify(self, conn: Connection, channel: str, payload: str) -> None:
        """Notify ``channel`` when ``conn``'s transaction commits (nothing on SQLite)."""

    @abc.abstractmethod
    async def listen(self, channel: str, on_payload: Callable[[str], None]) -> Subscription:
        """``LISTEN channel`` on a connection of its own (only when :attr:`notifications`)."""

    @abc.abstractmethod
    def hold_lock(self, name: str, *, wait_seconds: float,
                  lease_seconds: float) -> contextlib.AbstractAsyncContextManager[bool]:
        """Hold the named lock for the block (see :class:`occurrence_store.locks.Locks`)."""

    @abc.abstractmethod
    async def lock_migrations(self, conn: Connection) -> None:
        """Exclude every other migrator until ``conn``'s transaction ends."""
