"""Named locks held in the database, so that processes on different machines exclude each
other: the operator holds one per AgentDeployment around each drain step, beside Kopf's
peering, so two operators never drive the same drain at once.

PostgreSQL: a session-level advisory lock on a pooled connection, released at the end of the
block — and by the server if the holder dies, since it goes with the session. SQLite: a row
with a lease in ``occurrence_locks`` (a holder that dies loses it when the lease runs out).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg

from occurrence_store.clock import NOW_SQL, after_sql
from occurrence_store.database import Database, PostgresDatabase

DEFAULT_LEASE_SECONDS = 600.0
_POLL_SECONDS = 0.1


def advisory_key(name: str) -> int:
    """A stable signed 64-bit key for ``pg_advisory_lock`` from a lock name."""
    return int.from_bytes(hashlib.sha256(f"occurrence-lock:{name}".encode()).digest()[:8],
                          "big", signed=True)


class Locks:
    def __init__(self, db: Database) -> None:
        self.db = db

    @contextlib.asynccontextmanager
    async def hold(self, name: str, *, wait_seconds: float = 0.0,
                   lease_seconds: float = DEFAULT_LEASE_SECONDS) -> AsyncIterator[bool]:
        """Hold lock ``name`` for the block. Yields ``True`` when held; ``False`` when another
        holder kept it for ``wait_seconds`` (the block then runs without it: check)."""
        if isinstance(self.db, PostgresDatabase):
            async with self._advisory(self.db, name, wait_seconds) as held:
                yield held
        else:
            async with self._leased(name, wait_seconds, lease_seconds) as held:
                yield held

    @contextlib.asynccontextmanager
    async def _advisory(self, db: PostgresDatabase, name: str,
                        wait_seconds: float) -> AsyncIterator[bool]:
        key = advisory_key(name)
        async with db.session() as conn:
            held = await _poll(lambda: conn.fetchval("SELECT pg_try_advisory_lock($1)", key),
                               wait_seconds)
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
                            conn.terminate()
                        raise

    @contextlib.asynccontextmanager
    async def _leased(self, name: str, wait_seconds: float,
                      lease_seconds: float) -> AsyncIterator[bool]:
        holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"

        async def take() -> bool:
            async with self.db.transaction() as conn:
                row = await conn.fetchrow(
                    "INSERT INTO occurrence_locks AS l (name, holder, expires_at) "
                    f"VALUES ($1, $2, {after_sql('$3')}) ON CONFLICT (name) DO UPDATE SET "
                    "holder = excluded.holder, expires_at = excluded.expires_at "
                    f"WHERE l.expires_at < {NOW_SQL} RETURNING holder",
                    name, holder, float(lease_seconds))
            return row is not None

        held = await _poll(take, wait_seconds)
        try:
            yield held
        finally:
            if held:
                async with self.db.connection() as conn:
                    await conn.execute(
                        "DELETE FROM occurrence_locks WHERE name = $1 AND holder = $2",
                        name, holder)


async def _poll(attempt: Callable[[], Awaitable[bool]], wait_seconds: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_seconds
    while True:
        if await attempt():
            return True
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(_POLL_SECONDS)
