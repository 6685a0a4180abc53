"""Notifications from the database (PostgreSQL LISTEN), kept alive across connection loss.

A notification is only a hint that something changed: every user polls underneath, since
one can be missed (sent while the connection was down) — and SQLite has none at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field

from occurrence_store.ports import Database

KEEPALIVE_SECONDS = 15.0


@dataclass(eq=False)
class Listener:
    """``LISTEN channel`` on a dedicated connection; calls ``on_payload`` for each notification.

    :meth:`run` reconnects (after ``retry_seconds``, doubling up to ``max_retry_seconds``)
    whenever the connection drops or cannot be opened, reporting each failure to
    ``on_error``; it returns at once where there is nothing to listen to (SQLite).
    """

    db: Database
    channel: str
    on_payload: Callable[[str], None]
    _: KW_ONLY
    on_error: Callable[[BaseException], None] | None = None
    retry_seconds: float = 1.0
    max_retry_seconds: float = 10.0
    listening: asyncio.Event = field(default_factory=asyncio.Event, init=False)
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
