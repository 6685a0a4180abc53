"""What a set of occurrences' work came to over a recent window: the counts a canary is
judged on, against the stable occurrences over the same window (the operator's rollout
gates). Read-only; across occurrences on purpose, like :mod:`occurrence_store.unscoped`.

Finished work keeps the occurrence that finished it (a drain moves only unfinished work), and
``updated_at`` is when it finished, so "finished by these occurrences in the last N seconds"
is one indexed count per status. Times are the database's.

With a revision, a count is per revision, not per pod: a finished row records the revision of
the process that finished it (migration 006), and an occurrence changes revision in the middle
of a rollout — its pod is replaced, its id stays. Rows that record no revision (an agent that
does not report one, or work finished before it did) fall back to the occurrence that finished
them, so a fleet whose stable image predates revisions is still judged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from occurrence_store.clock import after_sql
from occurrence_store.database import Database
from occurrence_store.models import (
    AgentId,
    OccurrenceId,
    TaskStatus,
    ThoughtStatus,
    validate_occurrence_id,
)

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

    def _sql(self, *, by_revision: bool) -> str:
        ids = self.db.in_ids("agent_occurrence_id", ":ids")
        if by_revision:
            # the revision, done by the agent's processes (occurrence ids are unique per
            # database; a row's revision came from its occurrence's registration) — or, where
            # a row has none, done by the occurrences named
            ids = (f"((revision IS NULL AND {ids}) OR (revision = :revision AND "
                   "agent_occurrence_id IN (SELECT occurrence_id FROM occurrences "
                   "WHERE agent_id = :agent)))")
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

    async def finished(self, occurrence_ids: Sequence[OccurrenceId], *, seconds: float,
                       agent_id: AgentId | None = None,
                       revision: str | None = None) -> WorkOutcome:
        """Tasks and thoughts finished in the last `seconds`: by `occurrence_ids`, or — with
        `agent_id` and `revision` — by that agent's processes on that revision, on whichever
        pod (rows with no revision: by `occurrence_ids`). `occurrences` in the result is how
        many `occurrence_ids` there are (the per-occurrence rates divide by it)."""
        ids = [validate_occurrence_id(o) for o in occurrence_ids]
        if len(ids) > MAX_OCCURRENCES:
            raise ValueError(f"at most {MAX_OCCURRENCES} occurrences per count, got {len(ids)}")
        if (agent_id is None) != (revision is None):
            raise ValueError("agent_id and revision go together")
        if revision is not None and not revision.strip():
            raise ValueError("revision must not be empty")
        if not ids or seconds <= 0:
            return WorkOutcome(len(ids), max(seconds, 0.0))
        scope: dict[str, object] = {} if revision is None else \
            {"agent": agent_id, "revision": revision}
        async with self.db.connection() as conn:
            row = await conn.fetchrow(
                self._sql(by_revision=revision is not None), ids=self.db.ids_arg(ids),
                since=-float(seconds), **scope,
                task_completed=TaskStatus.COMPLETED.value, task_failed=TaskStatus.FAILED.value,
                thought_completed=ThoughtStatus.COMPLETED.value,
                thought_failed=ThoughtStatus.FAILED.value)
        assert row is not None
        return WorkOutcome(len(ids), float(seconds), int(row["tasks_completed"]),
                           int(row["tasks_failed"]), int(row["thoughts_completed"]),
                           int(row["thoughts_failed"]))
