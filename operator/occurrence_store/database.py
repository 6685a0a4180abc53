"""The database as the query modules use it: the port (:mod:`.ports`), how to open one
(:mod:`.backends`) and the database's clock."""

from __future__ import annotations

from datetime import datetime

from occurrence_store.backends import open_database
from occurrence_store.ports import Connection, Database, Row

__all__ = ["Connection", "Database", "Row", "fetch_now", "open_database"]


async def fetch_now(conn: Connection) -> datetime:
    """The database's clock (``occurrence_now()``), read on ``conn``: a timestamp from
    PostgreSQL, the fixed-width ISO text of :func:`~.backends.sqlite.to_sqlite_timestamp`
    from SQLite."""
    value = await conn.fetchval("SELECT occurrence_now()")
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))
