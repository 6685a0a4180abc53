"""The occurrence-scoped handle: every query filters and every write guards by one owner.

A caller cannot forget the occurrence: it is fixed when the handle is made
(``store.scope("agent-0")``) and bound into every statement here. Reads of another
occurrence's rows return nothing; writes to them change nothing and return ``False``
(or raise :class:`NotOwnedError` where there is nothing to return).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from typing import Any

from occurrence_store.clock import Clock
from occurrence_store.database import Database
from occurrence_store.errors import NotOwnedError
from occurrence_store.models import Task, TaskStatus, Thought, ThoughtStatus
from occurrence_store.rows import (
    TASK_COLUMNS,
    THOUGHT_COLUMNS,
    dump_json,
    task_from_row,
    thought_from_row,
)

log = logging.getLogger("occurrence_store.scoped")

_INSERT_TASK = (
    "INSERT INTO tasks (task_id, agent_occurrence_id, channel_id, description, status, "
    "priority, created_at, updated_at, parent_task_id, context_json) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8, $9)"
)


class ScopedStore:
    """Tasks and thoughts of one occurrence. Made by :meth:`Store.scope`."""

    def __init__(self, db: Database, occurrence_id: str, clock: Clock) -> None:
        self.db = db
        self.occurrence_id = occurrence_id
        self._now = clock

    def __repr__(self) -> str:
        return f"ScopedStore({self.occurrence_id!r})"

    def _refused(self, what: str, ident: str) -> bool:
        log.warning(
            "refused %s of %s: not owned by this occurrence (or does not exist)", what, ident,
            extra={"occurrence_id": self.occurrence_id},
        )
        return False

    # ------------------------------------------------------------------ tasks

    async def add_task(
        self,
        description: str,
        *,
        channel_id: str = "",
        priority: int = 0,
        context: dict[str, Any] | None = None,
        task_id: str | None = None,
        parent_task_id: str | None = None,
        status: TaskStatus = TaskStatus.PENDING,
    ) -> Task:
        task_id = task_id or str(uuid.uuid4())
        now = self._now()
        async with self.db.connection() as conn:
            await conn.execute(
                _INSERT_TASK, task_id, self.occurrence_id, channel_id, description,
                TaskStatus(status).value, priority, now, parent_task_id, dump_json(context),
            )
            row = await conn.fetchrow(
                f"SELECT {TASK_COLUMNS} FROM tasks WHERE task_id = $1", task_id
            )
        assert row is not None
        return task_from_row(row)

    async def add_tasks(
        self, descriptions: Sequence[str], *, channel_id: str = "", priority: int = 0
    ) -> list[str]:
        """Insert many pending tasks in one transaction; return their ids."""
        now = self._now()
        ids = [str(uuid.uuid4()) for _ in descriptions]
        async with self.db.transaction() as conn:
            await conn.executemany(
                _INSERT_TASK,
                [
                    (tid, self.occurrence_id, channel_id, d, TaskStatus.PENDING.value,
                     priority, now, None, None)
                    for tid, d in zip(ids, descriptions, strict=True)
                ],
            )
        return ids

    async def get_task(self, task_id: str) -> Task | None:
        async with self.db.connection() as conn:
            row = await conn.fetchrow(
                f"SELECT {TASK_COLUMNS} FROM tasks WHERE task_id = $1 AND agent_occurrence_id = $2",
                task_id, self.occurrence_id,
            )
        return task_from_row(row) if row else None

    async def get_tasks_by_status(self, status: TaskStatus) -> list[Task]:
        async with self.db.connection() as conn:
            rows = await conn.fetch(
                f"SELECT {TASK_COLUMNS} FROM tasks WHERE agent_occurrence_id = $1 AND status = $2 "
                "ORDER BY created_at, task_id",
                self.occurrence_id, TaskStatus(status).value,
            )
        return [task_from_row(r) for r in rows]

    async def get_all_tasks(self) -> list[Task]:
        async with self.db.connection() as conn:
            rows = await conn.fetch(
                f"SELECT {TASK_COLUMNS} FROM tasks WHERE agent_occurrence_id = $1 "
                "ORDER BY created_at, task_id",
                self.occurrence_id,
            )
        return [task_from_row(r) for r in rows]

    async def count_tasks(self, status: TaskStatus | None = None) -> int:
        async with self.db.connection() as conn:
            if status is None:
                value = await conn.fetchval(
                    "SELECT COUNT(*) FROM tasks WHERE agent_occurrence_id = $1", self.occurrence_id
                )
            else:
                value = await conn.fetchval(
                    "SELECT COUNT(*) FROM tasks WHERE agent_occurrence_id = $1 AND status = $2",
                    self.occurrence_id, TaskStatus(status).value,
                )
        return int(value or 0)

    async def update_task_status(
        self, task_id: str, status: TaskStatus, *, outcome: dict[str, Any] | None = None
    ) -> bool:
        """Set a task's status; ``False`` (nothing changed) if the task is not this occurrence's."""
        async with self.db.connection() as conn:
            row = await conn.fetchrow(
                "UPDATE tasks SET status = $1, updated_at = $2, "
                "outcome_json = COALESCE($3, outcome_json) "
                "WHERE task_id = $4 AND agent_occurrence_id = $5 RETURNING task_id",
                TaskStatus(status).value, self._now(), dump_json(outcome), task_id,
                self.occurrence_id,
            )
        return True if row else self._refused("status update", task_id)

    async def complete_tasks(
        self, task_ids: Sequence[str], status: TaskStatus = TaskStatus.COMPLETED
    ) -> int:
        """Set the status of many of this occurrence's tasks in one statement.

        Returns how many rows changed. Ids of other occurrences' tasks (or unknown ids) are
        ignored: the statement is guarded by the owner, so they count for nothing.
        """
        ids = list(dict.fromkeys(task_ids))
        if not ids:
            return 0
        args = (TaskStatus(status).value, self._now(), ids, self.occurrence_id)
        async with self.db.connection() as conn:
            if self.db.dialect == "postgresql":
                return int(await conn.fetchval(
                    "WITH changed AS (UPDATE tasks SET status = $1, updated_at = $2 "
                    "WHERE task_id = ANY($3::text[]) AND agent_occurrence_id = $4 "
                    "RETURNING 1) SELECT count(*) FROM changed",
                    *args,
                ) or 0)
            rows = await conn.fetch(
                "UPDATE tasks SET status = $1, updated_at = $2 "
                "WHERE task_id IN (SELECT value FROM json_each($3)) AND agent_occurrence_id = $4 "
                "RETURNING task_id",
                args[0], args[1], json.dumps(ids), args[3],
            )
        return len(rows)

    async def get_pending_tasks_for_activation(self, limit: int = 10) -> list[Task]:
        async with self.db.connection() as conn:
            rows = await conn.fetch(
                f"SELECT {TASK_COLUMNS} FROM tasks WHERE agent_occurrence_id = $1 AND status = $2 "
                "ORDER BY priority DESC, created_at, task_id LIMIT $3",
                self.occurrence_id, TaskStatus.PENDING.value, limit,
            )
        return [task_from_row(r) for r in rows]

    async def activate_pending_tasks(self, limit: int) -> list[Task]:
        """Turn up to ``limit`` pending tasks active in one statement; return them.

        PostgreSQL locks the chosen rows with ``FOR UPDATE SKIP LOCKED`` so two activators
        (or an activator and a drain) never take the same row; SQLite runs it under
        ``BEGIN IMMEDIATE``, one writer at a time.
        """
        if limit <= 0:
            return []
        # One statement that picks and updates. On PostgreSQL the pick is a CTE: a LIMITed
        # sub-select inside IN (...) may be re-run by the planner and update more rows.
        pick = (
            "SELECT task_id FROM tasks WHERE agent_occurrence_id = $3 AND status = $4 "
            "ORDER BY priority DESC, created_at, task_id LIMIT $5"
        )
        if self.db.dialect == "postgresql":
            sql = (
                f"WITH picked AS ({pick} FOR UPDATE SKIP LOCKED) "
                "UPDATE tasks t SET status = $1, updated_at = $2 FROM picked "
                "WHERE t.task_id = picked.task_id "
                f"RETURNING {', '.join('t.' + c.strip() for c in TASK_COLUMNS.split(','))}"
            )
        else:
            sql = (
                f"UPDATE tasks SET status = $1, updated_at = $2 WHERE task_id IN ({pick}) "
                f"AND agent_occurrence_id = $3 AND status = $4 RETURNING {TASK_COLUMNS}"
            )
        async with self.db.connection() as conn:  # one statement: atomic on its own
            rows = await conn.fetch(
                sql, TaskStatus.ACTIVE.value, self._now(), self.occurrence_id,
                TaskStatus.PENDING.value, limit,
            )
        return sorted((task_from_row(r) for r in rows),
                      key=lambda t: (-t.priority, t.created_at, t.task_id))

    async def get_active_task_for_channel(self, channel_id: str) -> Task | None:
        async with self.db.connection() as conn:
            row = await conn.fetchrow(
                f"SELECT {TASK_COLUMNS} FROM tasks WHERE agent_occurrence_id = $1 "
                "AND channel_id = $2 AND status = $3 ORDER BY created_at DESC, task_id LIMIT 1",
                self.occurrence_id, channel_id, TaskStatus.ACTIVE.value,
            )
        return task_from_row(row) if row else None

    async def set_task_updated_info_flag(self, task_id: str, content: str) -> bool:
        """Flag new information for an active task; ``False`` if not this occurrence's."""
        async with self.db.connection() as conn:
            row = await conn.fetchrow(
                "UPDATE tasks SET updated_info_available = $1, updated_info_content = $2, "
                "updated_at = $3 WHERE task_id = $4 AND agent_occurrence_id = $5 "
                "RETURNING task_id",
                True, content, self._now(), task_id, self.occurrence_id,
            )
        return True if row else self._refused("updated-info flag", task_id)

    # ------------------------------------------------------------------ thoughts

    async def add_thought(
        self,
        task_id: str,
        content: str,
        *,
        thought_type: str = "standard",
        round_number: int = 0,
        thought_depth: int = 0,
        parent_thought_id: str | None = None,
        context: dict[str, Any] | None = None,
        thought_id: str | None = None,
    ) -> Thought:
        """Add a pending thought to one of this occurrence's tasks.

        Raises :class:`NotOwnedError` if the task is not this occurrence's: the insert is
        guarded by the task's owner in the same statement, so a task that moved away a
        moment ago cannot receive a thought stamped with the old owner.
        """
        thought_id = thought_id or str(uuid.uuid4())
        now = self._now()
        async with self.db.connection() as conn:
            row = await conn.fetchrow(
                "INSERT INTO thoughts (thought_id, source_task_id, agent_occurrence_id, "
                "thought_type, status, content, round_number, thought_depth, parent_thought_id, "
                "created_at, updated_at, context_json) "
                "SELECT $1, task_id, agent_occurrence_id, $2, $3, $4, $5, $6, $7, $8, $8, $9 "
                "FROM tasks WHERE task_id = $10 AND agent_occurrence_id = $11 "
                f"RETURNING {THOUGHT_COLUMNS}",
                thought_id, thought_type, ThoughtStatus.PENDING.value, content, round_number,
                thought_depth, parent_thought_id, now, dump_json(context), task_id,
                self.occurrence_id,
            )
        if row is None:
            self._refused("thought insert", task_id)
            raise NotOwnedError(f"task {task_id!r} is not owned by {self.occurrence_id!r}")
        return thought_from_row(row)

    async def get_thought(self, thought_id: str) -> Thought | None:
        async with self.db.connection() as conn:
            row = await conn.fetchrow(
                f"SELECT {THOUGHT_COLUMNS} FROM thoughts WHERE thought_id = $1 "
                "AND agent_occurrence_id = $2",
                thought_id, self.occurrence_id,
            )
        return thought_from_row(row) if row else None

    async def get_thoughts_by_task(self, task_id: str) -> list[Thought]:
        async with self.db.connection() as conn:
            rows = await conn.fetch(
                f"SELECT {THOUGHT_COLUMNS} FROM thoughts WHERE source_task_id = $1 "
                "AND agent_occurrence_id = $2 ORDER BY created_at, thought_id",
                task_id, self.occurrence_id,
            )
        return [thought_from_row(r) for r in rows]

    async def get_thoughts_by_status(self, status: ThoughtStatus) -> list[Thought]:
        async with self.db.connection() as conn:
            rows = await conn.fetch(
                f"SELECT {THOUGHT_COLUMNS} FROM thoughts WHERE agent_occurrence_id = $1 "
                "AND status = $2 ORDER BY created_at, thought_id",
                self.occurrence_id, ThoughtStatus(status).value,
            )
        return [thought_from_row(r) for r in rows]

    async def get_pending_thoughts_for_active_tasks(
        self, limit: int | None = None
    ) -> list[Thought]:
        """Pending or processing thoughts of this occurrence's active tasks, oldest first."""
        sql = (
            f"SELECT {', '.join('th.' + c.strip() for c in THOUGHT_COLUMNS.split(','))} "
            "FROM thoughts th JOIN tasks t ON t.task_id = th.source_task_id "
            "AND t.agent_occurrence_id = th.agent_occurrence_id "
            "WHERE th.agent_occurrence_id = $1 AND t.status = $2 AND th.status IN ($3, $4) "
            "ORDER BY th.created_at, th.thought_id"
        )
        args: list[Any] = [
            self.occurrence_id, TaskStatus.ACTIVE.value,
            ThoughtStatus.PENDING.value, ThoughtStatus.PROCESSING.value,
        ]
        if limit is not None:
            sql += " LIMIT $5"
            args.append(limit)
        async with self.db.connection() as conn:
            rows = await conn.fetch(sql, *args)
        return [thought_from_row(r) for r in rows]

    async def claim_pending_thoughts(self, limit: int) -> list[Thought]:
        """Mark up to ``limit`` pending thoughts of active tasks processing; return them."""
        if limit <= 0:
            return []
        pick = (
            "SELECT th.thought_id FROM thoughts th JOIN tasks t "
            "ON t.task_id = th.source_task_id AND t.agent_occurrence_id = th.agent_occurrence_id "
            "WHERE th.agent_occurrence_id = $3 AND th.status = $4 AND t.status = $5 "
            "ORDER BY th.created_at, th.thought_id LIMIT $6"
        )
        if self.db.dialect == "postgresql":
            sql = (
                f"WITH picked AS ({pick} FOR UPDATE OF th SKIP LOCKED) "
                "UPDATE thoughts x SET status = $1, updated_at = $2 FROM picked "
                "WHERE x.thought_id = picked.thought_id "
                f"RETURNING {', '.join('x.' + c.strip() for c in THOUGHT_COLUMNS.split(','))}"
            )
        else:
            sql = (
                f"UPDATE thoughts SET status = $1, updated_at = $2 WHERE thought_id IN ({pick}) "
                f"AND agent_occurrence_id = $3 AND status = $4 RETURNING {THOUGHT_COLUMNS}"
            )
        async with self.db.connection() as conn:  # one statement: atomic on its own
            rows = await conn.fetch(
                sql, ThoughtStatus.PROCESSING.value, self._now(), self.occurrence_id,
                ThoughtStatus.PENDING.value, TaskStatus.ACTIVE.value, limit,
            )
        return sorted((thought_from_row(r) for r in rows),
                      key=lambda t: (t.created_at, t.thought_id))

    async def update_thought_status(
        self,
        thought_id: str,
        status: ThoughtStatus,
        *,
        final_action: dict[str, Any] | None = None,
        expected_status: ThoughtStatus | None = None,
    ) -> bool:
        """Set a thought's status; ``False`` if not this occurrence's (or not in
        ``expected_status`` when given — e.g. a thought released by a drain meanwhile)."""
        sql = (
            "UPDATE thoughts SET status = $1, updated_at = $2, "
            "final_action_json = COALESCE($3, final_action_json) "
            "WHERE thought_id = $4 AND agent_occurrence_id = $5"
        )
        args: list[Any] = [
            ThoughtStatus(status).value, self._now(), dump_json(final_action), thought_id,
            self.occurrence_id,
        ]
        if expected_status is not None:
            sql += " AND status = $6"
            args.append(ThoughtStatus(expected_status).value)
        async with self.db.connection() as conn:
            row = await conn.fetchrow(sql + " RETURNING thought_id", *args)
        return True if row else self._refused("thought status update", thought_id)

    async def reset_processing_thoughts(self) -> int:
        """Put this occurrence's PROCESSING thoughts back to pending; return how many.

        Called at start: a predecessor with the same id crashed mid-thought. Nothing else
        runs under this id then, so nothing is run twice concurrently.
        """
        async with self.db.connection() as conn:
            rows = await conn.fetch(
                "UPDATE thoughts SET status = $1, updated_at = $2 "
                "WHERE agent_occurrence_id = $3 AND status = $4 RETURNING thought_id",
                ThoughtStatus.PENDING.value, self._now(), self.occurrence_id,
                ThoughtStatus.PROCESSING.value,
            )
        return len(rows)

    async def count_thoughts(self, status: ThoughtStatus | None = None) -> int:
        async with self.db.connection() as conn:
            if status is None:
                value = await conn.fetchval(
                    "SELECT COUNT(*) FROM thoughts WHERE agent_occurrence_id = $1",
                    self.occurrence_id,
                )
            else:
                value = await conn.fetchval(
                    "SELECT COUNT(*) FROM thoughts WHERE agent_occurrence_id = $1 AND status = $2",
                    self.occurrence_id, ThoughtStatus(status).value,
                )
        return int(value or 0)
