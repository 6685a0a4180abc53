"""Housekeeping that respects occurrence boundaries.

Nothing here completes work or moves it: stale shared claims are removed (the next claim
recreates the task), thoughts whose task is gone are deleted, and finished work older than
the retention window is deleted — per occurrence when one is named, never ``__shared__``
work unless asked.
"""

from __future__ import annotations

from occurrence_store.clock import after_sql
from occurrence_store.database import Database
from occurrence_store.models import FINISHED_TASK_STATUSES, SHARED_OCCURRENCE_ID

STALE_SHARED_AFTER_SECONDS = 300.0
_FINISHED = tuple(s.value for s in FINISHED_TASK_STATUSES)


class Maintenance:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def cleanup_stale_shared_tasks(
        self, older_than_seconds: float = STALE_SHARED_AFTER_SECONDS
    ) -> int:
        """Delete unfinished ``__shared__`` tasks (and thoughts) whose claim lease expired
        more than ``older_than_seconds`` ago: their claimer died before finishing."""
        async with self.db.transaction() as conn:
            cutoff = await conn.fetchval(f"SELECT {after_sql('$1')}", -float(older_than_seconds))
            stale = await conn.fetch(
                "SELECT task_id FROM tasks WHERE agent_occurrence_id = $1 "
                "AND status NOT IN ($2, $3, $4) AND lease_expires_at < $5",
                SHARED_OCCURRENCE_ID, *_FINISHED, cutoff,
            )
            ids = [r["task_id"] for r in stale]
            for task_id in ids:
                await conn.execute(
                    "DELETE FROM thoughts WHERE source_task_id = $1 AND agent_occurrence_id = $2",
                    task_id, SHARED_OCCURRENCE_ID,
                )
                await conn.execute(
                    "DELETE FROM tasks WHERE task_id = $1 AND agent_occurrence_id = $2 "
                    "AND lease_expires_at < $3",
                    task_id, SHARED_OCCURRENCE_ID, cutoff,
                )
        return len(ids)

    async def cleanup_orphaned_thoughts(self, occurrence_id: str | None = None) -> int:
        """Delete thoughts whose source task no longer exists at all."""
        sql = ("DELETE FROM thoughts WHERE NOT EXISTS "
               "(SELECT 1 FROM tasks t WHERE t.task_id = thoughts.source_task_id)")
        args: list[object] = []
        if occurrence_id is not None:
            sql += " AND agent_occurrence_id = $1"
            args.append(occurrence_id)
        async with self.db.connection() as conn:
            rows = await conn.fetch(sql + " RETURNING thought_id", *args)
        return len(rows)

    async def cleanup_completed(
        self, retention_seconds: float, occurrence_id: str | None = None,
        include_shared: bool = False,
    ) -> int:
        """Delete finished tasks (and their thoughts) last updated before the window."""
        where = f"status IN ($1, $2, $3) AND updated_at < {after_sql('$4')}"
        args: list[object] = [*_FINISHED, -float(retention_seconds)]
        if occurrence_id is not None:
            where += " AND agent_occurrence_id = $5"
            args.append(occurrence_id)
        elif not include_shared:
            where += " AND agent_occurrence_id <> $5"
            args.append(SHARED_OCCURRENCE_ID)
        async with self.db.transaction() as conn:
            await conn.execute(
                "DELETE FROM thoughts WHERE source_task_id IN "
                f"(SELECT task_id FROM tasks WHERE {where})",
                *args,
            )
            rows = await conn.fetch(f"DELETE FROM tasks WHERE {where} RETURNING task_id", *args)
        return len(rows)
