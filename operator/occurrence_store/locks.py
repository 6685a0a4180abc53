"""Named locks held in the database, so that processes on different machines exclude each
other: the operator holds one per AgentDeployment around each drain step, beside Kopf's
peering, so two operators never drive the same drain at once.

PostgreSQL: a session-level advisory lock on a pooled connection, released at the end of the
block — and by the server if the holder dies, since it goes with the session. SQLite: a row
with a lease in ``occurrence_locks`` (a holder that dies loses it when the lease runs out).
Each backend's way is its adapter's :meth:`~occurrence_store.ports.Database.hold_lock`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from occurrence_store.ports import Database

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
        async with self.db.hold_lock(name, wait_seconds=wait_seconds,
                                     lease_seconds=lease_seconds) as held:
            yield held


async def poll_until(attempt: Callable[[], Awaitable[bool]], wait_seconds: float) -> bool:
    """Try ``attempt`` until it succeeds or ``wait_seconds`` passed; whether it succeeded."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_seconds
    while True:
        if await attempt():
            return True
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(_POLL_SECONDS)
