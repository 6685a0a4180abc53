"""No driver error escapes the store: each is the store's own, with the driver's as the cause."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import asyncpg
import pytest

from occurrence_store import DatabaseUnavailable, Store, StoreQueryError, StoreUnavailable
from occurrence_store.unreachable import is_unreachable

DRIVER_ERRORS = (asyncpg.PostgresError, sqlite3.Error)


async def test_a_bad_statement_is_a_query_error_caused_by_the_driver(store: Store) -> None:
    async with store.db.connection() as conn:
        with pytest.raises(StoreQueryError) as raised:
            await conn.fetch("SELECT * FROM no_such_table")
    assert isinstance(raised.value.__cause__, DRIVER_ERRORS)
    assert "no_such_table" in str(raised.value) and not is_unreachable(raised.value)
    with pytest.raises(StoreQueryError):
        async with store.db.transaction() as conn:
            await conn.execute("INSERT INTO no_such_table VALUES (1)")
    assert await store.scope("e-0").count_tasks() == 0  # the store still works


async def test_a_store_method_on_an_unmigrated_database_raises_the_stores_error(
    db_url: str,
) -> None:
    async with await Store.open(db_url) as store:
        with pytest.raises(StoreQueryError) as raised:
            await store.scope("e-0").add_task("x")
    assert isinstance(raised.value.__cause__, DRIVER_ERRORS)


async def test_an_unreachable_database_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(DatabaseUnavailable) as raised:
        await Store.open("postgresql://nobody@127.0.0.1:1/none", timeout=2)
    assert isinstance(raised.value, StoreUnavailable) and is_unreachable(raised.value)
    path = tmp_path / "locked.db"
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as holder:
        holder.execute("BEGIN EXCLUSIVE")  # another process writing, for longer than we wait
        with pytest.raises(StoreUnavailable) as raised_sqlite:
            await Store.open(f"sqlite:///{path}", migrate=True, busy_timeout_ms=50)
    assert "database is locked" in str(raised_sqlite.value)
    assert isinstance(raised_sqlite.value.__cause__, sqlite3.OperationalError)


async def test_a_lost_connection_is_unavailable(pg_url: str) -> None:
    async with await Store.open(pg_url, migrate=True, application_name="lost-conn") as store:
        admin = await asyncpg.connect(pg_url)
        try:
            async with store.db.connection() as conn:
                pid = await conn.fetchval("SELECT pg_backend_pid()")
                await admin.fetchval("SELECT pg_terminate_backend($1, 5000)", pid)
                await asyncio.sleep(0.05)
                with pytest.raises(StoreUnavailable) as raised:
                    await conn.fetchval("SELECT 1")
        finally:
            await admin.close()
        assert isinstance(raised.value.__cause__, (asyncpg.PostgresError, asyncpg.InterfaceError,
                                                   asyncpg.InternalClientError, OSError))
        assert await store.scope("e-0").count_tasks() == 0  # the pool replaced it
