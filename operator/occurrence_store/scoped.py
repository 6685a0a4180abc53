"""The occurrence-scoped handle: every query filters and every write guards by one owner.

A caller cannot forget the occurrence: it is fixed when the handle is made
(``store.scope("agent-0")``) and bound into every statement here. Reads of another
occurrence's rows return nothing; writes to them change nothing and return ``False``
(or raise :class:`NotOwnedError` where there is nothing to return).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypedDict, Unpack

from occurrence_store.clock import NOW_SQL, after_sql
from occurrence_store.database import Database, Row
from occurrence_store.errors import InvalidTaskId, NotOwnedError, StoreError
from occurrence_store.models import (
    OccurrenceId,
    Task,
    TaskStatus,
    Thought,
    ThoughtStatus,
    is_shared_task_id,
)
from occurrence_store.ports import Claim
from occurrence_store.rows import (
    TASK_COLUMNS,
    THOUGHT_COLUMNS,
    dump_json,
    prefixed,
    task_from_row,
    thought_from_row,
)
from occurrence_store.sql import compile_named

log = logging.getLogger("occurrence_store.scoped")

MAX_IDEMPOTENCY_KEY = 255
_NO_LIMIT = 2**31 - 1

# The revision of the occurrence's process (registry), stamped on every status it sets: a
# finished row keeps the revision that finished it (NULL when unregistered or unknown).
_REVISION_OF = ("(SELECT o.revision FROM occurrences o "
                "WHERE o.occurrence_id = :occurrence_id)")
# The agent of a new task is its occurrence's agent in the registry ('' when unregistered).
_AGENT_OF = ("COALESCE((SELECT o.agent_id FROM occurrences o "
             "WHERE o.occurrence_id = :occurrence_id), '')")
_INSERT_TASK = (
    "INSERT INTO tasks (task_id, agent_occurrence_id, agent_id, channel_id, description, status, "
    "priority, created_at, updated_at, parent_task_id, context_json, idempotency_key) "
    f"VALUES (:task_id, :occurrence_id, {_AGENT_OF}, :channel_id, :description, :status, "
    f":priority, {NOW_SQL}, {NOW_SQL}, :parent_task_id, :context, :idempotency_key)"
)
_INSERT_TASK_RETURNING = f"{_INSERT_TASK} RETURNING {TASK_COLUMNS}"
_INSERT_TASK_ONCE = (
    f"{_INSERT_TASK} ON CONFLICT (agent_id, idempotency_key) WHERE idempotency_key IS NOT NULL "
    f"DO NOTHING RETURNING {TASK_COLUMNS}"
)
_INSERT_TASK_POSITIONAL = compile_named(_INSERT_TASK)[0]
"""For ``executemany``: the arguments in :data:`_INSERT_TASK`'s order (task_id,
occurrence_id, channel_id, description, status, priority, parent_task_id, context, key)."""
_TASK_WITH_KEY = (f"SELECT {TASK_COLUMNS} FROM tasks WHERE idempotency_key = :idempotency_key "
                  f"AND agent_id = {_AGENT_OF}")
_TASK = f"SELECT {TASK_COLUMNS} FROM tasks WHERE task_id = $1 AND agent_occurrence_id = $2"
_TASKS_BY_STATUS = (f"SELECT {TASK_COLUMNS} FROM tasks WHERE agent_occurrence_id = $1 "
                    "AND status = $2 ORDER BY created_at, task_id")
_ALL_TASKS = (f"SELECT {TASK_COLUMNS} FROM tasks WHERE agent_occurrence_id = $1 "
              "ORDER BY created_at, task_id")
_COUNT_TASKS = "SELECT COUNT(*) FROM tasks WHERE agent_occurrence_id = $1"
_COUNT_TASKS_BY_STATUS = _COUNT_TASKS + " AND status = $2"
_SET_TASK_STATUS = (
    f"UPDATE tasks SET status = :status, updated_at = {NOW_SQL}, "
    f"outcome_json = COALESCE(:outcome, outcome_json), revision = {_REVISION_OF} "
    "WHERE task_id = :task_id AND agent_occurrence_id = :occurrence_id RETURNING task_id"
)
_PENDING_FOR_ACTIVATION = (
    f"SELECT {TASK_COLUMNS} FROM tasks WHERE agent_occurrence_id = :occurrence_id "
    "AND status = :pending ORDER BY priority DESC, created_at, task_id LIMIT :limit"
)
_ACTIVATE = Claim(
    table="tasks", key="task_id", alias="t",
    pick="SELECT task_id FROM tasks WHERE agent_occurrence_id = :occurrence_id "
         "AND status = :pending",
    order="ORDER BY priority DESC, created_at, task_id LIMIT :limit",
    assignments=f"status = :active, updated_at = {NOW_SQL}",
    columns=TASK_COLUMNS,
    still_claimable="agent_occurrence_id = :occurrence_id AND status = :pending",
)


def complete_tasks_sql(db: Database) -> str:
    """The one statement of :meth:`ScopedStore.complete_tasks` (guarded by the owner)."""
    return (f"UPDATE tasks SET status = :status, updated_at = {NOW_SQL}, "
            f"revision = {_REVISION_OF} "
            f"WHERE {db.in_ids('task_id', ':ids')} "
            "AND agent_occurrence_id = :occurrence_id RETURNING task_id")


_ACTIVE_FOR_CHANNEL = (
    f"SELECT {TASK_COLUMNS} FROM tasks WHERE agent_occurrence_id = :occurrence_id "
    "AND channel_id = :channel_id AND status = :active "
    "ORDER BY created_at DESC, task_id LIMIT 1"
)
_FLAG_UPDATED_INFO = (
    "UPDATE tasks SET updated_info_available = :flag, updated_info_content = :content, "
    f"updated_at = {NOW_SQL} WHERE task_id = :task_id AND agent_occurrence_id = :occurrence_id "
    "RETURNING task_id"
)
# The thought is stamped with its task's owner in the same statement that checks it.
_INSERT_THOUGHT = (
    "INSERT INTO thoughts (thought_id, source_task_id, agent_occurrence_id, "
    "thought_type, status, content, round_number, thought_depth, parent_thought_id, "
    "created_at, updated_at, context_json) "
    "SELECT :thought_id, task_id, agent_occurrence_id, :thought_type, :pending, :content, "
    f":round_number, :thought_depth, :parent_thought_id, {NOW_SQL}, {NOW_SQL}, :context "
    "FROM tasks WHERE task_id = :task_id AND agent_occurrence_id = :occurrence_id "
    f"RETURNING {THOUGHT_COLUMNS}"
)
_THOUGHT = (f"SELECT {THOUGHT_COLUMNS} FROM thoughts WHERE thought_id = $1 "
            "AND agent_occurrence_id = $2")
_THOUGHTS_OF_TASK = (f"SELECT {THOUGHT_COLUMNS} FROM thoughts WHERE source_task_id = $1 "
                     "AND agent_occurrence_id = $2 ORDER BY created_at, thought_id")
_THOUGHTS_BY_STATUS = (f"SELECT {THOUGHT_COLUMNS} FROM thoughts WHERE agent_occurrence_id = $1 "
                       "AND status = $2 ORDER BY created_at, thought_id")
_THOUGHTS_OF_ACTIVE_TASKS = (
    f"SELECT {prefixed(THOUGHT_COLUMNS, 'th')} "
    "FROM thoughts th JOIN tasks t ON t.task_id = th.source_task_id "
    "AND t.agent_occurrence_id = th.agent_occurrence_id "
    "WHERE th.agent_occurrence_id = :occurrence_id AND t.status = :active "
    "AND th.status IN (:pending, :processing) ORDER BY th.created_at, th.thought_id"
)
_CLAIM_THOUGHTS = Claim(
    table="thoughts", key="thought_id", lock_of="th",
    pick="SELECT th.thought_id FROM thoughts th JOIN tasks t "
         "ON t.task_id = th.source_task_id AND t.agent_occurrence_id = th.agent_occurrence_id "
         "WHERE th.agent_occurrence_id = :occurrence_id AND th.status = :pending "
         f"AND t.status = :active AND (th.retry_at IS NULL OR th.retry_at <= {NOW_SQL})",
    order="ORDER BY th.created_at, th.thought_id LIMIT :limit",
    assignments=f"status = :processing, updated_at = {NOW_SQL}, retry_at = NULL, "
                "attempts = attempts + 1",
    columns=THOUGHT_COLUMNS,
    still_claimable="agent_occurrence_id = :occurrence_id AND status = :pending",
)
_SET_THOUGHT_STATUS = (
    f"UPDATE thoughts SET status = :status, updated_at = {NOW_SQL}, "
    f"final_action_json = COALESCE(:final_action, final_action_json), "
    f"revision = {_REVISION_OF} "
    "WHERE thought_id = :thought_id AND agent_occurrence_id = :occurrence_id"
)
# Out of processing: back to pending after the backoff, or FAILED once out of attempts.
_RELEASE_THOUGHTS = (
    "UPDATE thoughts SET "
    "status = CASE WHEN attempts >= :max_attempts THEN :failed ELSE :pending END, "
    "retry_at = CASE WHEN attempts >= :max_attempts THEN NULL "
    f"ELSE {after_sql(':backoff')} END, "
    "final_action_json = CASE WHEN attempts >= :max_attempts THEN :failed_action "
    "ELSE final_action_json END, "
    f"last_error = :reason, updated_at = {NOW_SQL}, revision = {_REVISION_OF} "
    "WHERE agent_occurrence_id = :occurrence_id AND status = :processing"
)
_COUNT_THOUGHTS = "SELECT COUNT(*) FROM thoughts WHERE agent_occurrence_id = $1"
_COUNT_THOUGHTS_BY_STATUS = _COUNT_THOUGHTS + " AND status = $2"


def check_idempotency_key(key: str) -> str:
    if not isinstance(key, str) or not key or len(key) > MAX_IDEMPOTENCY_KEY or "\x00" in key:
        raise StoreError(f"idempotency key must be 1-{MAX_IDEMPOTENCY_KEY} characters without NUL")
    return key


class TaskFields(TypedDict, total=False):
    """What a new task may set besides its description (the keywords of
    :meth:`ScopedStore.add_task_once`)."""

    channel_id: str
    priority: int
    context: dict[str, Any] | None
    task_id: str | None
    parent_task_id: str | None
    status: TaskStatus


class ScopedStore:
    """Tasks and thoughts of one occurrence. Made by :meth:`Store.scope`."""

    def __init__(self, db: Database, occurrence_id: OccurrenceId) -> None:
        self.db = db
        self.occurrence_id = occurrence_id

    def __repr__(self) -> str:
        return f"ScopedStore({self.occurrence_id!r})"

    async def _row(self, sql: str, /, *args: Any, **params: Any) -> Row | None:
        """One statement's single row (or None) on a pooled connection: the reads below."""
        async with self.db.connection() as conn:
            return await conn.fetchrow(sql, *args, **params)

    async def _rows(self, sql: str, /, *args: Any, **params: Any) -> list[Row]:
        """One statement's rows on a pooled connection."""
        async with self.db.connection() as conn:
            return await conn.fetch(sql, *args, **params)

    def _refused(self, what: str, ident: str) -> bool:
        log.warning(
            "refused %s of %s: not owned by this occurrence (or does not exist)", what, ident,
            extra={"occurrence_id": self.occurrence_id},
        )
        return False

    # ------------------------------------------------------------------ tasks

    async def add_task(self, description: str, *, idempotency_key: str | None = None,
                       **fields: Unpack[TaskFields]) -> Task:
        """Add a task to this occurrence; with ``idempotency_key``, see :meth:`add_task_once`
        (which takes the same keywords and also says whether it created the task)."""
        task, _ = await self.add_task_once(description, idempotency_key=idempotency_key,
                                           **fields)
        return task

    async def add_task_once(
        self,
        description: str,
        *,
        idempotency_key: str | None,
        channel_id: str = "",
        priority: int = 0,
        context: dict[str, Any] | None = None,
        task_id: str | None = None,
        parent_task_id: str | None = None,
        status: TaskStatus = TaskStatus.PENDING,
    ) -> tuple[Task, bool]:
        """Add a task unless this agent already has one with ``idempotency_key``.

        Returns ``(task, created)``: the new task and ``True``, or the task an earlier
        submission with the same key created — on whichever occurrence of the agent it is
        now — and ``False``. The key is unique per agent in the database (a unique index),
        so concurrent submissions with one key create one task.
        """
        if task_id is not None and is_shared_task_id(task_id):
            raise InvalidTaskId(
                f"task id {task_id!r} has the form of a shared decision's id: only the "
                "__shared__ namespace holds those (use try_claim_shared_task)")
        if idempotency_key is not None:
            check_idempotency_key(idempotency_key)
        task_id = task_id or str(uuid.uuid4())
        async with self.db.connection() as conn:
            row = await conn.fetchrow(
                _INSERT_TASK_ONCE if idempotency_key is not None else _INSERT_TASK_RETURNING,
                task_id=task_id, occurrence_id=self.occurrence_id, channel_id=channel_id,
                description=description, status=TaskStatus(status).value, priority=priority,
                parent_task_id=parent_task_id, context=dump_json(context),
                idempotency_key=idempotency_key,
            )
            if row is not None:
                return task_from_row(row), True
            row = await conn.fetchrow(_TASK_WITH_KEY, idempotency_key=idempotency_key,
                                      occurrence_id=self.occurrence_id)
        if row is None:  # the key's task was deleted between the insert and the read
            raise StoreError(f"task with idempotency key {idempotency_key!r} vanished; retry")
        return task_from_row(row), False

    async def add_tasks(
        self, descriptions: Sequence[str], *, channel_id: str = "", priority: int = 0
    ) -> list[str]:
        """Insert many pending tasks in one transaction; return their ids."""
        ids = [str(uuid.uuid4()) for _ in descriptions]
        async with self.db.transaction() as conn:
            await conn.executemany(
                _INSERT_TASK_POSITIONAL,
                [
                    (tid, self.occurrence_id, channel_id, d, TaskStatus.PENDING.value,
                     priority, None, None, None)
                    for tid, d in zip(ids, descriptions, strict=True)
                ],
            )
        return ids

    async def get_task(self, task_id: str) -> Task | None:
        row = await self._row(_TASK, task_id, self.occurrence_id)
        return task_from_row(row) if row else None

    async def get_tasks_by_status(self, status: TaskStatus) -> list[Task]:
        rows = await self._rows(_TASKS_BY_STATUS, self.occurrence_id, TaskStatus(status).value)
        return [task_from_row(r) for r in rows]

    async def get_all_tasks(self) -> list[Task]:
        return [task_from_row(r) for r in await self._rows(_ALL_TASKS, self.occurrence_id)]

    async def list_tasks(
        self, *, status: TaskStatus | None = None, limit: int = 100,
        after: tuple[datetime, str] | None = None, offset: int = 0,
    ) -> list[Task]:
        """One page of this occurrence's tasks in creation order, read in SQL (bounded memory).

        ``after`` is the ``(created_at, task_id)`` of the last task of the previous page
        (keyset paging: served by an index whatever the page number); ``offset`` skips rows
        instead (kept for old clients; it costs what it skips).
        """
        params: dict[str, Any] = {"occurrence_id": self.occurrence_id, "limit": int(limit),
                                  "offset": int(offset)}
        where = "agent_occurrence_id = :occurrence_id"
        if status is not None:
            params["status"] = TaskStatus(status).value
            where += " AND status = :status"
        if after is not None:
            params["after_created"], params["after_id"] = after
            where += " AND (created_at, task_id) > (:after_created, :after_id)"
        async with self.db.connection() as conn:
            rows = await conn.fetch(
                f"SELECT {TASK_COLUMNS} FROM tasks WHERE {where} "
                "ORDER BY created_at, task_id LIMIT :limit OFFSET :offset", **params)
        return [task_from_row(r) for r in rows]

    async def _count(self, every: str, by_status: str, status: str | None) -> int:
        """This occurrence's rows counted by ``every``, or by ``by_status`` for one status."""
        async with self.db.connection() as conn:
            if status is None:
                value = await conn.fetchval(every, self.occurrence_id)
            else:
                value = await conn.fetchval(by_status, self.occurrence_id, status)
        return int(value or 0)

    async def count_tasks(self, status: TaskStatus | None = None) -> int:
        return await self._count(_COUNT_TASKS, _COUNT_TASKS_BY_STATUS,
                                 None if status is None else TaskStatus(status).value)

    async def update_task_status(
        self, task_id: str, status: TaskStatus, *, outcome: dict[str, Any] | None = None
    ) -> bool:
        """Set a task's status; ``False`` (nothing changed) if the task is not this occurrence's."""
        async with self.db.connection() as conn:
            row = await conn.fetchrow(
                _SET_TASK_STATUS, status=TaskStatus(status).value, outcome=dump_json(outcome),
                task_id=task_id, occurrence_id=self.occurrence_id,
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
        async with self.db.connection() as conn:
            rows = await conn.fetch(
                complete_tasks_sql(self.db),
                status=TaskStatus(status).value, ids=self.db.ids_arg(ids),
                occurrence_id=self.occurrence_id,
            )
        return len(rows)

    async def get_pending_tasks_for_activation(self, limit: int = 10) -> list[Task]:
        rows = await self._rows(_PENDING_FOR_ACTIVATION, occurrence_id=self.occurrence_id,
                                pending=TaskStatus.PENDING.value, limit=limit)
        return [task_from_row(r) for r in rows]

    async def activate_pending_tasks(self, limit: int) -> list[Task]:
        """Turn up to ``limit`` pending tasks active in one statement; return them.

        PostgreSQL locks the chosen rows with ``FOR UPDATE SKIP LOCKED`` so two activators
        (or an activator and a drain) never take the same row; SQLite runs it under
        ``BEGIN IMMEDIATE``, one writer at a time.
        """
        if limit <= 0:
            return []
        async with self.db.connection() as conn:  # one statement: atomic on its own
            rows = await conn.fetch(
                self.db.claim_sql(_ACTIVATE), active=TaskStatus.ACTIVE.value,
                occurrence_id=self.occurrence_id, pending=TaskStatus.PENDING.value, limit=limit,
            )
        return sorted((task_from_row(r) for r in rows),
                      key=lambda t: (-t.priority, t.created_at, t.task_id))

    async def get_active_task_for_channel(self, channel_id: str) -> Task | None:
        row = await self._row(_ACTIVE_FOR_CHANNEL, occurrence_id=self.occurrence_id,
                              channel_id=channel_id, active=TaskStatus.ACTIVE.value)
        return task_from_row(row) if row else None

    async def set_task_updated_info_flag(self, task_id: str, content: str) -> bool:
        """Flag new information for an active task; ``False`` if not this occurrence's."""
        async with self.db.connection() as conn:
            row = await conn.fetchrow(_FLAG_UPDATED_INFO, flag=True, content=content,
                                      task_id=task_id, occurrence_id=self.occurrence_id)
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
        async with self.db.connection() as conn:
            row = await conn.fetchrow(
                _INSERT_THOUGHT, thought_id=thought_id, thought_type=thought_type,
                pending=ThoughtStatus.PENDING.value, content=content, round_number=round_number,
                thought_depth=thought_depth, parent_thought_id=parent_thought_id,
                context=dump_json(context), task_id=task_id, occurrence_id=self.occurrence_id,
            )
        if row is None:
            self._refused("thought insert", task_id)
            raise NotOwnedError(f"task {task_id!r} is not owned by {self.occurrence_id!r}")
        return thought_from_row(row)

    async def get_thought(self, thought_id: str) -> Thought | None:
        row = await self._row(_THOUGHT, thought_id, self.occurrence_id)
        return thought_from_row(row) if row else None

    async def get_thoughts_by_task(self, task_id: str) -> list[Thought]:
        rows = await self._rows(_THOUGHTS_OF_TASK, task_id, self.occurrence_id)
        return [thought_from_row(r) for r in rows]

    async def get_thoughts_by_status(self, status: ThoughtStatus) -> list[Thought]:
        rows = await self._rows(_THOUGHTS_BY_STATUS, self.occurrence_id,
                                ThoughtStatus(status).value)
        return [thought_from_row(r) for r in rows]

    async def get_pending_thoughts_for_active_tasks(
        self, limit: int | None = None
    ) -> list[Thought]:
        """Pending or processing thoughts of this occurrence's active tasks, oldest first."""
        sql = _THOUGHTS_OF_ACTIVE_TASKS
        params: dict[str, Any] = {
            "occurrence_id": self.occurrence_id, "active": TaskStatus.ACTIVE.value,
            "pending": ThoughtStatus.PENDING.value, "processing": ThoughtStatus.PROCESSING.value,
        }
        if limit is not None:
            sql += " LIMIT :limit"
            params["limit"] = limit
        async with self.db.connection() as conn:
            rows = await conn.fetch(sql, **params)
        return [thought_from_row(r) for r in rows]

    async def claim_pending_thoughts(self, limit: int) -> list[Thought]:
        """Mark up to ``limit`` pending thoughts of active tasks processing; return them.

        Refused (nothing claimed) while the occurrence is fenced — checked in the same
        statement (see :mod:`occurrence_store.fencing`). Each claim counts as an attempt
        (``Thought.attempts``); a thought backing off after an error (``retry_at``) waits.
        """
        if limit <= 0:
            return []
        async with self.db.connection() as conn:  # one statement: atomic on its own
            rows = await conn.fetch(
                self.db.claim_sql(_CLAIM_THOUGHTS), processing=ThoughtStatus.PROCESSING.value,
                occurrence_id=self.occurrence_id, pending=ThoughtStatus.PENDING.value,
                active=TaskStatus.ACTIVE.value, limit=limit,
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
        sql = _SET_THOUGHT_STATUS
        params: dict[str, Any] = {
            "status": ThoughtStatus(status).value, "final_action": dump_json(final_action),
            "thought_id": thought_id, "occurrence_id": self.occurrence_id,
        }
        if expected_status is not None:
            sql += " AND status = :expected_status"
            params["expected_status"] = ThoughtStatus(expected_status).value
        async with self.db.connection() as conn:
            row = await conn.fetchrow(sql + " RETURNING thought_id", **params)
        return True if row else self._refused("thought status update", thought_id)

    async def reset_processing_thoughts(self) -> int:
        """Put this occurrence's PROCESSING thoughts back to pending; return how many.

        Called at start: a predecessor with the same id crashed mid-thought. Nothing else
        runs under this id then, so nothing is run twice concurrently.
        """
        released = await self.release_thoughts(reason="reset: the previous run stopped mid-thought")
        return len(released)

    async def release_thoughts(
        self,
        *,
        reason: str,
        thought_ids: Sequence[str] | None = None,
        exclude: Sequence[str] = (),
        fail: bool = False,
        max_attempts: int | None = None,
        backoff_seconds: float = 0.0,
    ) -> list[Thought]:
        """Take this occurrence's PROCESSING thoughts out of processing, in one statement.

        Each goes back to pending (claimable again after ``backoff_seconds``) — or to FAILED
        when ``fail`` is set or it already had ``max_attempts`` attempts; a failed thought's
        ``final_action`` records ``{"action": "fail", "reason": reason}`` so its task can be
        finished as failed. ``thought_ids`` limits it to those thoughts, ``exclude`` spares
        some (the ones this process is still working on). Guarded by owner and status: a
        thought that finished or moved meanwhile is left alone. Returns the changed thoughts.
        """
        limit = 0 if fail else (max_attempts if max_attempts is not None else _NO_LIMIT)
        failed_action = dump_json({"action": "fail", "reason": reason, "by": self.occurrence_id,
                                   "result": {"error": reason}})
        sql = _RELEASE_THOUGHTS
        params: dict[str, Any] = {
            "max_attempts": limit, "failed": ThoughtStatus.FAILED.value,
            "pending": ThoughtStatus.PENDING.value, "backoff": float(backoff_seconds),
            "failed_action": failed_action, "reason": reason[:1000],
            "occurrence_id": self.occurrence_id, "processing": ThoughtStatus.PROCESSING.value,
        }
        if thought_ids is not None:
            if not thought_ids:
                return []
            params["thought_ids"] = self.db.ids_arg(thought_ids)
            sql += f" AND {self.db.in_ids('thought_id', ':thought_ids')}"
        if exclude:
            params["exclude"] = self.db.ids_arg(exclude)
            sql += f" AND {self.db.in_ids('thought_id', ':exclude', negate=True)}"
        async with self.db.connection() as conn:
            rows = await conn.fetch(sql + f" RETURNING {THOUGHT_COLUMNS}", **params)
        return [thought_from_row(r) for r in rows]

    async def count_thoughts(self, status: ThoughtStatus | None = None) -> int:
        return await self._count(_COUNT_THOUGHTS, _COUNT_THOUGHTS_BY_STATUS,
                                 None if status is None else ThoughtStatus(status).value)
