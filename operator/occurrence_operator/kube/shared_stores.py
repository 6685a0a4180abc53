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


OPERATOR_SESSION = {
    # a row lock a tenant's own client holds makes the operator's statement fail in 10 s
    # (a DatabaseError the pass reports and retries), instead of holding a pass slot
    "lock_timeout": "10s",
    "statement_timeout": "120s",
}
"""Session settings of the operator's PostgreSQL connections (besides the store's own)."""
APPLICATION_NAME = "occurrence-operator"
"""How the operator's sessions show in `pg_stat_activity` (and `pg_stat_statements`)."""


class Stores:
    """One Store per database URL. A URL is opened under its own lock: a database that
    accepts connections and never answers delays the passes that need it, not the others.
    A Store no AgentDeployment uses any more (deleted, or pointed elsewhere) is closed."""

    def __init__(self) -> None:
        self._stores: dict[str, Store] = {}
        self._opening: dict[str, asyncio.Lock] = {}
        self._lock = asyncio.Lock()
        """Guards the dicts only; never held across a connect."""
        self._user_url: dict[tuple[str, str], str] = {}
        """Which URL each AgentDeployment used last."""

    async def get(self, url: str, user: tuple[str, str] | None = None) -> Store:
        """The Store for `url`, opened on first use (no migration: the Job does that).
        `user` (namespace, name): the AgentDeployment asking; a URL it leaves behind that
        nobody else uses is closed."""
        if user is not None and self._user_url.get(user) != url:
            previous = self._user_url.get(user)
            self._user_url[user] = url
            if previous is not None:
                await self._close_if_unused(previous)
        store = self._stores.get(url)
        if store is not None:
            return store
        async with self._lock:
            opening = self._opening.setdefault(url, asyncio.Lock())
        async with opening:
            store = self._stores.get(url)
            if store is None:
                options: dict[str, Any] = (
                    {"max_size": POOL_SIZE, "application_name": APPLICATION_NAME,
                     "session_settings": OPERATOR_SESSION}
                    if url.startswith("postgres") else {})
                store = await Store.open(url, **options)
                self._stores[url] = store
                log.info("opened database %s", redact(url))
            return store

    async def forget(self, namespace: str, name: str) -> None:
        """The AgentDeployment is gone: close its database if nobody else uses it."""
        url = self._user_url.pop((namespace, name), None)
        if url is not None:
            await self._close_if_unused(url)

    async def _close_if_unused(self, url: str) -> None:
        if url in self._user_url.values():
            return
        async with self._lock:
            store = self._stores.pop(url, None)
            self._opening.pop(url, None)
        if store is not None:
            log.info("closed database %s: no AgentDeployment uses it any more", redact(url))
            await _close_quietly(store, url)

    @property
    def open_urls(self) -> int:
        return len(self._stores)

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
            await _close_quietly(store, url)

    async def close(self) -> None:
        async with self._lock:
            stores, self._stores = dict(self._stores), {}
        for url, store in stores.items():
            await _close_quietly(store, url)


async def _close_quietly(store: Store, url: str) -> None:
    try:
        await store.close()
    except Exception:  # a broken pool may fail to close; it is dropped anyway
        log.debug("closing %s failed", redact(url), exc_info=True)
