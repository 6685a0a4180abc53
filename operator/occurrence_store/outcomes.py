"""What a set of occurrences' work came to over a recent window: the counts a canary is
judged on, against the stable occurrences over the same window (the operator's rollout
gates). Read-only; across occurrences on purpose, like :mod:`occurrence_store.unscoped`.

Finished work keeps the occurrence that finished it (a drain moves only unfinished work), and
``updated_at`` is when it finished, so "finished by these occurrences in the last N seconds"
is one indexed count per status. Times are the database's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from occurrence_store.clock import after_sql
from occurrence_store.database import Database
from occurrence_store.models import TaskStatus, ThoughtStatus, validate_occurrence_id

MAX_OCCURRENCES = 1000
"""The most occurrences one count takes (an AgentDeployment has at most 1,000)."""


@dataclass(frozen=True)
class WorkOutcome:
    """Work finished by some occurrences over a window."""

    occurrences: int
    seconds: float
    tasks_completed: int = 0
    tasks_failed: int = 0
    thoughts_completed: int = 0
    thoughts_failed: int = 0

    @property
    def tasks_finished(self) -> int:
        return self.tasks_completed + self.tasks_failed

    @property
    def thoughts_finished(self) -> int:
        return self.thoughts_completed + self.thoughts_failed


class Outcomes:
    """``store.outcomes``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def _sql(self) -> str:
        ids = self.db.in_ids("agent_occurrence_id", ":ids")
        since = after_sql(":since")
        count = "(SELECT COUNT(*) FROM {table} WHERE {ids} AND status = :{status} " \
                "AND updated_at >= {since})"
        return "SELECT " + ", ".join(
            count.format(table=table, ids=ids, status=status, since=since) + f" AS {name}"
            for name, table, status in (
                ("tasks_completed", "tasks", "task_completed"),
                ("tasks_failed", "tasks", "task_failed"),
                ("thoughts_completed", "thoughts", "thought_completed"),
                ("thoughts_failed", "thoughts", "thought_failed")))

    async def finished(self, occurrence_ids: Sequence[str], *, seconds: float) -> WorkOutcome:
        """Tasks and thoughts that `occurrence_ids` finished in the last `seconds`."""
        ids = [validate_occurrence_id(o) for o in occurrence_ids]
        if len(ids) > MAX_OCCURRENCES:
            raise ValueError(f"at most {MAX_OCCURRENCES} occurrences per count, got {len(ids)}")
        if not ids or seconds <= 0:
            return WorkOutcome(len(ids), max(seconds, 0.0))
        async with self.db.connection() as conn:
            row = await conn.fetchrow(
                self._sql(), ids=self.db.ids_arg(ids), since=-float(seconds),
                task_completed=TaskStatus.COMPLETED.value, task_failed=TaskStatus.FAILED.value,
                thought_completed=ThoughtStatus.COMPLETED.value,
                thought_failed=ThoughtStatus.FAILED.value)
        assert row is not None
        return WorkOutcome(len(ids), float(seconds), int(row["tasks_completed"]),
                           int(row["tasks_failed"]), int(row["thoughts_completed"]),
                           int(row["thoughts_failed"]))
