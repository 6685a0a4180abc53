"""Notifications from the database (PostgreSQL LISTEN), kept alive across connection loss.

A notification is only a hint that something changed: every user polls underneath, since
one can be missed (sent while the connection was down) — and SQLite has none at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from occurrence_store.ports import Database

KEEPALIVE_SECONDS = 15.0


class Listener:
    """``LISTEN channel`` on a dedicated connection; calls ``on_payload`` for each notification.

    :meth:`run` reconnects (after ``retry_seconds``, doubling up to ``max_retry_seconds``)
    whenever the connection drops or cannot be opened, reporting each failure to
    ``on_error``; it returns at once where there is nothing to listen to (SQLite).
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
        if not self.db.notifications:
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
        subscription = await self.db.listen(self.channel, self.on_payload)
        try:
            self.listening.set()
            while not subscription.lost.is_set():
                try:
                    await asyncio.wait_for(subscription.lost.wait(), KEEPALIVE_SECONDS)
                except TimeoutError:  # a connection that died silently fails this probe
                    await subscription.probe(KEEPALIVE_SECONDS)
            raise ConnectionError(f"LISTEN connection for {self.channel} was closed")
        finally:
            self.listening.clear()
            subscription.terminate()
