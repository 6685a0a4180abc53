"""The fencing token is the registry row: SQL fragments that make a claim check it.

Every statement that takes work for an occurrence (activating tasks, claiming thoughts)
carries the check in the same statement, so a fenced occurrence claims nothing from the
instant its fence commits:

- PostgreSQL: the claim locks the occurrence's registry row ``FOR SHARE``. A fence is an
  ``UPDATE`` of that row, so the two serialize: a claim that locked first commits before
  the fence can; a claim that comes second waits for the fence and then reads the row as
  the fence left it (READ COMMITTED re-reads a row it had to wait for) — and claims nothing.
- SQLite: one writer at a time, and a write statement takes the write lock before it reads:
  the check and the claim see the same committed state.

An occurrence that never registered has no row and is not fenced (the core works without
the registry); the operator's fence creates the row when it is missing.
"""

from __future__ import annotations

from occurrence_store.models import OccurrenceState
from occurrence_store.urls import Dialect

_ACTIVE = OccurrenceState.ACTIVE.value


def fence_cte(dialect: Dialect, occurrence_param: str) -> str:
    """A ``WITH`` item (PostgreSQL) to put before the claim's own CTEs; '' on SQLite."""
    if dialect != "postgresql":
        return ""
    return (f"fence AS (SELECT state FROM occurrences WHERE occurrence_id = {occurrence_param} "
            "FOR SHARE), ")


def not_fenced(dialect: Dialect, occurrence_param: str) -> str:
    """The condition, for the claim's ``WHERE``: the occurrence is not fenced."""
    if dialect == "postgresql":
        return f"NOT EXISTS (SELECT 1 FROM fence WHERE state <> '{_ACTIVE}')"
    return (f"NOT EXISTS (SELECT 1 FROM occurrences WHERE occurrence_id = {occurrence_param} "
            f"AND state <> '{_ACTIVE}')")
