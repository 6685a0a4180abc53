"""Explicit reads across occurrences, for operations: "where is task X, and how did it get
there?" — without naming its owner. Nothing here writes; the agent runtime never uses it
(its reads go through its scoped handle)."""

from __future__ import annotations

from dataclasses import dataclass

from occurrence_store.database import Database
from occurrence_store.models import Task, Thought, TransferRecord
from occurrence_store.rows import (
    TASK_COLUMNS,
    THOUGHT_COLUMNS,
    TRANSFERS_OF_TASK,
    task_from_row,
    thought_from_row,
)

_ANY_TASK = f"SELECT {TASK_COLUMNS} FROM tasks WHERE task_id = $1"
_ALL_THOUGHTS_OF_TASK = (f"SELECT {THOUGHT_COLUMNS} FROM thoughts WHERE source_task_id = $1 "
                         "ORDER BY created_at, thought_depth, thought_id")


@dataclass(frozen=True)
class TaskReport:
    """One task wherever it is: its row, all its thoughts, every move it made."""

    task: Task
    thoughts: list[Thought]
    transfers: list[TransferRecord]


class UnscopedReads:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def find_task(self, task_id: str) -> TaskReport | None:
        """The task with ``task_id`` whoever owns it (``__shared__`` included), or ``None``."""
        async with self.db.connection() as conn:
            row = await conn.fetchrow(_ANY_TASK, task_id)
            if row is None:
                return None
            thoughts = await conn.fetch(_ALL_THOUGHTS_OF_TASK, task_id)
            transfers = await conn.fetch(TRANSFERS_OF_TASK, task_id)
        return TaskReport(task_from_row(row), [thought_from_row(r) for r in thoughts],
                          [TransferRecord.model_validate(r) for r in transfers])
