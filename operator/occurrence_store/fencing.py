"""The fencing token is the registry row: SQL fragments that make a claim check it.

Every statement that takes work for an occurrence (activating tasks, claiming thoughts)
carries the check in the same statement (:class:`occurrence_store.ports.Claim`), so a fenced
occurrence claims nothing from the instant its fence commits:

- PostgreSQL: the claim locks the occurrence's registry row ``FOR SHARE``
  (:data:`LOCKED_FENCE_CTE`, :data:`NOT_FENCED_BY_LOCKED_ROW`). A fence is an ``UPDATE`` of
  that row, so the two serialize: a claim that locked first commits before the fence can; a
  claim that comes second waits for the fence and then reads the row as the fence left it
  (READ COMMITTED re-reads a row it had to wait for) — and claims nothing.
- SQLite: one writer at a time, and a write statement takes the write lock before it reads:
  the check and the claim see the same committed state (:data:`NOT_FENCED`).

An occurrence that never registered has no row and is not fenced (the core works without
the registry); the operator's fence creates the row when it is missing. The occurrence is
the statement's ``:occurrence_id`` parameter.
"""

from __future__ import annotations

from occurrence_store.models import OccurrenceState

_ACTIVE = OccurrenceState.ACTIVE.value

LOCKED_FENCE_CTE = (
    "fence AS (SELECT state FROM occurrences WHERE occurrence_id = :occurrence_id FOR SHARE)")
"""A ``WITH`` item to put before the claim's own CTEs: the registry row, locked."""

NOT_FENCED_BY_LOCKED_ROW = f"NOT EXISTS (SELECT 1 FROM fence WHERE state <> '{_ACTIVE}')"
"""The condition, for the claim's ``WHERE``, over :data:`LOCKED_FENCE_CTE`."""

NOT_FENCED = (f"NOT EXISTS (SELECT 1 FROM occurrences WHERE occurrence_id = :occurrence_id "
              f"AND state <> '{_ACTIVE}')")
"""The condition, for the claim's ``WHERE``, where the write lock already excludes a fence."""
