"""Notifications from the database (PostgreSQL LISTEN), kept alive across connection loss.

A notification is only a hint that something changed: every user polls underneath, since
one can be missed (sent while the connection was down) — and SQLite has none at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from occurrence_store.database import Database, PostgresDatabase

KEEPALIVE_SECONDS = 15.0


class Listener:
    """``LISTEN channel`` on a dedicated connection; calls ``on_payload`` for each notification.

    :meth:`run` reconnects (after ``retry_seconds``, doubling up to ``max_retry_seconds``)
    whenever the connection drops or cannot be opened, reporting each failure to
    ``on_error``; it returns at once on SQLite, where there is nothing to listen to.
    """

    def __init__(self, db: Database, channel: str, on_payload: Callable[[str], None], *,
                 on_error: Callable[[BaseException], None] | None = None,
                 retry_seconds: float = 1.0, max_retry_seconds: float = 10.0) -> None:
        self.db = db
        self.channel = channel
        self.on_payload = on_payload
        self.on_error = on_error
        self.retry_seconds = retry_seconds
        self.max_retry_seconds = max_retry_seconds
        self.listening = asyncio.Event()
        """Set while LISTEN is in place (tests and readiness wait for it)."""

    async def run(self) -> None:
        if not isinstance(self.db, PostgresDatabase):
            return
        delay = self.retry_seconds
        while True:
            try:
                await self._listen_once()
                delay = self.retry_seconds  # it was up: start the backoff afresh
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.listening.clear()
                if self.on_error is not None:
                    self.on_error(exc)
                await asyncio.sleep(delay)
                delay = min(self.max_retry_seconds, delay * 2)

    async def _listen_once(self) -> None:
        assert isinstance(self.db, PostgresDatabase)
        conn = await self.db.dedicated_connection()
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        try:
            await conn.add_listener(
                self.channel, lambda _c, _pid, _channel, payload: self.on_payload(payload))
            self.listening.set()
            while not lost.is_set():
                try:
                    await asyncio.wait_for(lost.wait(), KEEPALIVE_SECONDS)
                except TimeoutError:  # a connection that died silently fails this probe
                    await conn.execute("SELECT 1", timeout=KEEPALIVE_SECONDS)
            raise ConnectionError(f"LISTEN connection for {self.channel} was closed")
        finally:
            self.listening.clear()
            if not conn.is_closed():
                conn.terminate()
