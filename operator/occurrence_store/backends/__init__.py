"""The adapters of :class:`occurrence_store.ports.Database`, one per backend."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from occurrence_store.backends.postgres import PostgresDatabase
from occurrence_store.backends.sqlite import SqliteDatabase
from occurrence_store.clock import DatabaseClock
from occurrence_store.ports import Database
from occurrence_store.urls import DatabaseURL, Dialect, parse_database_url

__all__ = ["PostgresDatabase", "SqliteDatabase", "open_database"]

_CONNECT: dict[Dialect, Callable[..., Awaitable[Database]]] = {
    "postgresql": PostgresDatabase.connect,
    "sqlite": SqliteDatabase.connect,
}


async def open_database(url: str | DatabaseURL | None, *, clock: DatabaseClock | None = None,
                        **kwargs: Any) -> Database:
    """Connect to ``url`` (``None``: the embedded SQLite default) with its backend's adapter;
    ``kwargs`` are that adapter's options (pool sizes, ``application_name``...)."""
    parsed = url if isinstance(url, DatabaseURL) else parse_database_url(url)
    return await _CONNECT[parsed.dialect](parsed, clock=clock or DatabaseClock(), **kwargs)
