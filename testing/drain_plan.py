"""The plan PostgreSQL picks for one drain batch (the store's batch statement, with its batch
settings), read inside a transaction that is rolled back: nothing moves. Used by the drain
benchmark (`--explain N`, with ANALYZE) and by the test that holds the plan free of nested
loops on stale statistics."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from occurrence_store import Store
from occurrence_store.backends import postgres as backend
from occurrence_store.balance import balanced_quotas, spread_slots
from occurrence_store.database import fetch_now
from occurrence_store.models import OccurrenceId
from occurrence_store.transfer import _DRAIN_BATCH, _DRAIN_ORDER


class _RolledBack(Exception):
    """Raised to roll the explained transaction back (EXPLAIN ANALYZE runs the statement)."""


async def explain_drain_batch(store: Store, source: OccurrenceId,
                              targets: Sequence[OccurrenceId], *, limit: int, movable: int,
                              analyze: bool = False) -> list[str]:
    """The plan's lines for a batch of up to `limit` of `source`'s `movable` tasks shared
    among `targets` (all empty so far)."""
    pick = _DRAIN_BATCH + _DRAIN_ORDER + store.db.row_lock(skip_locked=False)
    options = "(ANALYZE, BUFFERS) " if analyze else ""
    lines: list[str] = []
    with contextlib.suppress(_RolledBack):
        async with store.db.transaction() as conn:
            now = await fetch_now(conn)
            await conn.execute(backend._BATCH_SETTINGS)
            rows = await conn.fetch(
                f"EXPLAIN {options}" + backend._move_batch_sql(pick), source=source,
                limit=limit, targets=list(targets),
                slots=spread_slots(balanced_quotas([0] * len(targets), min(movable, limit))),
                now=now, reason="explain", processing="processing", arrival="pending")
            lines = [next(iter(row.values())) for row in rows]
            raise _RolledBack
    return lines
