"""One open Store per distinct database URL, shared by all AgentDeployments using it."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from occurrence_store import Store

from .secrets import redact

log = logging.getLogger(__name__)


CONNECTIONS_PER_PASS = 2
"""What one pass may hold at once: a drain holds its session advisory lock (`drain:<agent>`)
on one pooled connection while its statements run on another."""
POOL_SIZE = 22
"""PostgreSQL connections per database. The passes that run at once are bounded to what
this serves at `CONNECTIONS_PER_PASS` each (`scheduling.MAX_CONCURRENT_PASSES`), so passes
never wait on each other for connections: with more drains than connections / 2, every
connection can end up holding a lock while its pass waits for a second one, and the
waits end in the pool's acquire timeout (seen with 100 AgentDeployments draining at once)."""


class Stores:
    def __init__(self) -> None:
        self._stores: dict[str, Store] = {}
        self._lock = asyncio.Lock()

    async def get(self, url: str) -> Store:
        """The Store for `url`, opened on first use (no migration: the Job does that)."""
        store = self._stores.get(url)
        if store is not None:
            return store
        async with self._lock:
            store = self._stores.get(url)
            if store is None:
                options: dict[str, Any] = ({"max_size": POOL_SIZE} if url.startswith("postgres")
                                           else {})
                store = await Store.open(url, **options)
                self._stores[url] = store
                log.info("opened database %s", redact(url))
            return store

    async def discard(self, url: str, failed: Store | None = None) -> None:
        """Close a Store whose connection broke; the next `get` reopens it.

        `failed`: the Store the caller saw fail. If another caller has already replaced
        it, the new one stays: a thousand passes failing on one broken pool close it once,
        not each other's fresh ones in turn."""
        async with self._lock:
            if failed is not None and self._stores.get(url) is not failed:
                return
            store = self._stores.pop(url, None)
        if store is not None:
            try:
                await store.close()
            except Exception:  # a broken pool may fail to close; it is dropped anyway
                log.debug("closing %s failed", redact(url), exc_info=True)

    async def close(self) -> None:
        async with self._lock:
            stores, self._stores = list(self._stores.values()), {}
        for store in stores:
            try:
                await store.close()
            except Exception:
                log.debug("closing a store failed", exc_info=True)
