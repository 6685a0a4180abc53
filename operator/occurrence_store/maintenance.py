"""Housekeeping that respects occurrence boundaries.

Nothing here completes work or moves it: stale shared claims are removed (the next claim
recreates the task), thoughts whose task is gone are deleted, and finished work older than
the retention window is deleted — per occurrence when one is named, never ``__shared__``
work unless asked.
"""

from __future__ import annotations

from dataclasses import dataclass

from occurrence_store.clock import after_sql
from occurrence_store.database import Database
from occurrence_store.models import (
    FINISHED_TASK_STATUSES,
    SHARED_OCCURRENCE_ID,
    AgentId,
    OccurrenceId,
)

STALE_SHARED_AFTER_SECONDS = 300.0
_FINISHED_IN = f"status IN ({', '.join(repr(s.value) for s in FINISHED_TASK_STATUSES)})"
"""A condition: the task is finished (the statuses are the enum's fixed values, inline)."""

_CUTOFF = f"SELECT {after_sql('$1')}"
_STALE_SHARED = ("SELECT task_id FROM tasks WHERE agent_occurrence_id = :shared "
                 f"AND NOT {_FINISHED_IN} AND lease_expires_at < :cutoff")
_DELETE_THOUGHTS_OF_TASK = ("DELETE FROM thoughts WHERE source_task_id = $1 "
                            "AND agent_occurrence_id = $2")
_DELETE_STALE_TASK = ("DELETE FROM tasks WHERE task_id = :task_id "
                      "AND agent_occurrence_id = :shared AND lease_expires_at < :cutoff")
_ORPHANED_THOUGHTS = ("DELETE FROM thoughts WHERE NOT EXISTS "
                      "(SELECT 1 FROM tasks t WHERE t.task_id = thoughts.source_task_id)")
_FINISHED_BEFORE = f"{_FINISHED_IN} AND updated_at < {after_sql(':retention')}"
_EXPIRED_OF_AGENT = (f"SELECT task_id FROM tasks WHERE agent_id = :agent AND {_FINISHED_BEFORE} "
                     "ORDER BY updated_at LIMIT :batch")
_EXPIRED_TRANSFERS = (
    "SELECT transfer_id FROM task_transfers t WHERE transferred_at < "
    f"{after_sql(':retention')} AND NOT EXISTS "
    "(SELECT 1 FROM tasks k WHERE k.task_id = t.task_id) AND EXISTS "
    "(SELECT 1 FROM occurrences o WHERE o.occurrence_id = t.from_occurrence_id "
    "AND o.agent_id = :agent) ORDER BY transfer_id LIMIT :batch")
"""One agent's expired transfer records: those moved off its occurrences (the registry says
whose an occurrence is). On a shared database another agent's shorter ``auditDays`` must not
delete this one's audit trail; a record of an occurrence nobody owns any more is kept."""
_EXPIRED_REQUEUES = (
    "SELECT task_id, revision FROM task_requeues r WHERE agent_id = :agent AND requeued_at < "
    f"{after_sql(':retention')} AND NOT EXISTS "
    "(SELECT 1 FROM tasks k WHERE k.task_id = r.task_id) ORDER BY requeued_at LIMIT :batch")
"""One agent's expired requeue records (rollbacks that gave failed work back) whose task is
gone."""
RETENTION_BATCH = 1000
"""Rows deleted per statement: a batch holds its locks briefly, and never all at once."""


@dataclass(frozen=True)
class Retained:
    """What one retention run deleted."""

    tasks: int
    thoughts: int
    transfer_records: int
    requeue_records: int


class Maintenance:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def cleanup_stale_shared_tasks(
        self, older_than_seconds: float = STALE_SHARED_AFTER_SECONDS
    ) -> int:
        """Delete unfinished ``__shared__`` tasks (and thoughts) whose claim lease expired
        more than ``older_than_seconds`` ago: their claimer died before finishing."""
        async with self.db.transaction() as conn:
            cutoff = await conn.fetchval(_CUTOFF, -float(older_than_seconds))
            stale = await conn.fetch(_STALE_SHARED, shared=SHARED_OCCURRENCE_ID, cutoff=cutoff)
            ids = [r["task_id"] for r in stale]
            for task_id in ids:
                await conn.execute(_DELETE_THOUGHTS_OF_TASK, task_id, SHARED_OCCURRENCE_ID)
                await conn.execute(_DELETE_STALE_TASK, task_id=task_id,
                                   shared=SHARED_OCCURRENCE_ID, cutoff=cutoff)
        return len(ids)

    async def cleanup_orphaned_thoughts(self, occurrence_id: OccurrenceId | None = None) -> int:
        """Delete thoughts whose source task no longer exists at all."""
        sql = _ORPHANED_THOUGHTS
        args: list[object] = []
        if occurrence_id is not None:
            sql += " AND agent_occurrence_id = $1"
            args.append(occurrence_id)
        async with self.db.connection() as conn:
            rows = await conn.fetch(sql + " RETURNING thought_id", *args)
        return len(rows)

    async def cleanup_completed(
        self, retention_seconds: float, occurrence_id: OccurrenceId | None = None,
        include_shared: bool = False,
    ) -> int:
        """Delete finished tasks (and their thoughts) last updated before the window."""
        where = _FINISHED_BEFORE
        params: dict[str, object] = {"retention": -float(retention_seconds)}
        if occurrence_id is not None:
            where += " AND agent_occurrence_id = :occurrence_id"
            params["occurrence_id"] = occurrence_id
        elif not include_shared:
            where += " AND agent_occurrence_id <> :occurrence_id"
            params["occurrence_id"] = SHARED_OCCURRENCE_ID
        async with self.db.transaction() as conn:
            await conn.execute(
                "DELETE FROM thoughts WHERE source_task_id IN "
                f"(SELECT task_id FROM tasks WHERE {where})",
                **params,
            )
            rows = await conn.fetch(f"DELETE FROM tasks WHERE {where} RETURNING task_id",
                                    **params)
        return len(rows)

    async def apply_retention(
        self, agent_id: AgentId, *, finished_seconds: float, audit_seconds: float,
        batch: int = RETENTION_BATCH,
    ) -> Retained:
        """Delete one agent's finished tasks (with their thoughts) last updated more than
        ``finished_seconds`` ago, then its transfer records (moves off its occurrences) older
        than ``audit_seconds`` whose task is gone, and its requeue records likewise — in
        batches of ``batch`` rows, each its own short transaction."""
        tasks = thoughts = transfers = 0
        while True:
            async with self.db.transaction() as conn:
                ids = [r["task_id"] for r in await conn.fetch(
                    _EXPIRED_OF_AGENT, agent=agent_id, retention=-float(finished_seconds),
                    batch=batch)]
                if ids:
                    thoughts += len(await conn.fetch(
                        f"DELETE FROM thoughts WHERE {self.db.in_ids('source_task_id', ':ids')} "
                        "RETURNING thought_id", ids=self.db.ids_arg(ids)))
                    tasks += len(await conn.fetch(
                        f"DELETE FROM tasks WHERE {self.db.in_ids('task_id', ':ids')} AND "
                        f"{_FINISHED_IN} RETURNING task_id", ids=self.db.ids_arg(ids)))
            if len(ids) < batch:
                break
        while True:
            async with self.db.transaction() as conn:
                deleted = len(await conn.fetch(
                    f"DELETE FROM task_transfers WHERE transfer_id IN ({_EXPIRED_TRANSFERS}) "
                    "RETURNING transfer_id", retention=-float(audit_seconds), batch=batch,
                    agent=agent_id))
            transfers += deleted
            if deleted < batch:
                break
        requeues = 0
        while True:
            async with self.db.transaction() as conn:
                expired = await conn.fetch(_EXPIRED_REQUEUES, retention=-float(audit_seconds),
                                           batch=batch, agent=agent_id)
                for row in expired:
                    await conn.execute("DELETE FROM task_requeues WHERE task_id = $1 "
                                       "AND revision = $2", row["task_id"], row["revision"])
            requeues += len(expired)
            if len(expired) < batch:
                break
        return Retained(tasks=tasks, thoughts=thoughts, transfer_records=transfers,
                        requeue_records=requeues)
