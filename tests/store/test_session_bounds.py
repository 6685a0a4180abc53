"""Every PostgreSQL session of the store is bounded: keepalives, idle transactions, and a
caller never waits for a pooled connection without end."""

from __future__ import annotations

import time

import pytest

from occurrence_store import Store, StoreUnavailable
from occurrence_store.backends.postgres import SESSION_BOUNDS


async def test_sessions_start_with_the_bounds(pg_url: str) -> None:
    async with await Store.open(pg_url, migrate=True) as store:
        async with store.db.connection() as conn:
            for name, value in SESSION_BOUNDS.items():
                shown = await conn.fetchval(f"SELECT current_setting('{name}')")
                assert shown.removesuffix("s") == value.removesuffix("s") or \
                    (shown == "1min" and value == "60s"), (name, shown)


async def test_a_caller_waits_for_a_pooled_connection_only_so_long(pg_url: str) -> None:
    store = await Store.open(pg_url, migrate=True, min_size=1, max_size=1, acquire_timeout=0.5)
    try:
        async with store.db.connection():
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                async with store.db.connection():
                    pass
            assert time.monotonic() - started < 10
        async with store.db.connection() as conn:  # released: usable again
            assert await conn.fetchval("SELECT 1") == 1
    finally:
        await store.close()
