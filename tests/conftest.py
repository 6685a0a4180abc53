"""Session-wide fixtures: a real PostgreSQL server and stores on both backends."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from occurrence_store import Store
from testing.postgres import PostgresServer, create_database, postgres_server

BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    with postgres_server() as server:
        yield server


async def _drop_database(server: PostgresServer, name: str) -> None:
    admin = await asyncpg.connect(server.url())
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def pg_url(pg_server: PostgresServer) -> AsyncIterator[str]:
    """A fresh, empty database on the session's server; dropped afterwards."""
    name = await create_database(pg_server)
    yield pg_server.url(name)
    await _drop_database(pg_server, name)


@pytest.fixture(params=BACKENDS)
async def db_url(
    request: pytest.FixtureRequest, tmp_path: Path, pg_server: PostgresServer
) -> AsyncIterator[str]:
    """An empty database URL on each backend in turn."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    name = await create_database(pg_server)
    yield pg_server.url(name)
    await _drop_database(pg_server, name)


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    """A migrated store on each backend in turn."""
    s = await Store.open(db_url, migrate=True)
    try:
        yield s
    finally:
        await s.close()
