"""Telling "the database cannot be reached" apart from every other error.

Both the agent (a 503 instead of a 500, metrics without task counts) and the operator (the
skip-drain escape hatch applies to an unreachable database only) need to know.
"""

from __future__ import annotations

import sqlite3

import asyncpg

from occurrence_store.errors import DatabaseUnavailable

DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    DatabaseUnavailable, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,  # admin/crash shutdown, cannot connect now
    asyncpg.exceptions.ObjectNotInPrerequisiteStateError,  # database not accepting connections
    asyncpg.exceptions.TooManyConnectionsError, sqlite3.OperationalError, OSError, TimeoutError,
)
"""What a database that is down, refusing connections or full raises (SQLite: also a
locked or unreadable file)."""

_SQLITE_UNREACHABLE = ("unable to open", "disk i/o error", "database is locked",
                       "readonly database", "file is not a database")


def is_unreachable(error: BaseException) -> bool:
    """Whether ``error`` means the database could not be reached (not a bug, not bad data)."""
    if isinstance(error, sqlite3.OperationalError):
        text = str(error).lower()
        return any(hint in text for hint in _SQLITE_UNREACHABLE)
    return isinstance(error, DATABASE_ERRORS)
