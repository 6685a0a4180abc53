"""Telling "the database cannot be reached" apart from every other error.

Both the agent (a 503 instead of a 500, metrics without task counts) and the operator (the
skip-drain escape hatch applies to an unreachable database only) need to know. The store's
adapters already classify every driver error (:class:`StoreUnavailable`); ``OSError`` and
``TimeoutError`` stay here because the callers' blocks do more than store calls (sockets,
timeouts of their own), and those counted as unreachable before the store wrapped its errors.
"""

from __future__ import annotations

from occurrence_store.errors import StoreError, StoreUnavailable

DATABASE_ERRORS: tuple[type[BaseException], ...] = (StoreUnavailable, OSError, TimeoutError)
"""What a database that is down, refusing connections or full raises (SQLite: also a
locked or unreadable file)."""
STORE_ERRORS: tuple[type[BaseException], ...] = (*DATABASE_ERRORS, StoreError)
"""Every error a store call fails with that is not a bug of the caller's: unreachable, or a
query the database refused (unmigrated schema, bad data)."""


def is_unreachable(error: BaseException) -> bool:
    """Whether ``error`` means the database could not be reached (not a bug, not bad data)."""
    return isinstance(error, DATABASE_ERRORS)
