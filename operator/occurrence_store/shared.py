"""Decisions taken once for all occurrences: shared tasks in the ``__shared__`` namespace.

``try_claim_shared_task`` creates the day's task with a deterministic id in one atomic
statement; whoever's insert lands is the winner and holds a lease on it. If the winner
dies, its lease runs out and the next claimer takes over by a guarded ``UPDATE`` (only an
unfinished task with an expired lease can change hands) — never check-delete-insert.
The task stays in ``__shared__`` so everyone finds it by id; ``claimed_by`` says who runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta
from typing import Any

from occurrence_store.clock import Clock
from occurrence_store.database import Database, PostgresDatabase
from occurrence_store.errors import StoreError
from occurrence_store.models import SHARED_OCCURRENCE_ID, Task, TaskStatus, validate_occurrence_id
from occurrence_store.rows import TASK_COLUMNS, dump_json, task_from_row

log = logging.getLogger("occurrence_store.shared")

NOTIFY_CHANNEL = "occurrence_shared_tasks"
DEFAULT_LEASE_SECONDS = 300.0
_FINISHED = (TaskStatus.COMPLETED.value, TaskStatus.FAILED.value)


def shared_task_id(task_type: str, day: datetime) -> str:
    """``{TYPE}_SHARED_{YYYYMMDD}``: every occurrence computes the same id for the same day."""
    kind = task_type.strip().upper()
    if not kind or not kind.replace("_", "").isalnum():
        raise ValueError(f"invalid shared task type {task_type!r}: use letters, digits and '_'")
    return f"{kind}_SHARED_{day.strftime('%Y%m%d')}"


class SharedTasks:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self._now = clock

    async def try_claim_shared_task(
        self,
        task_type: str,
        occurrence_id: str,
        *,
        channel_id: str = "",
        description: str | None = None,
        priority: int = 10,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        context: dict[str, Any] | None = None,
    ) -> tuple[Task, bool]:
        """Claim today's shared task of ``task_type``; return ``(task, was_created)``.

        ``was_created`` is True for exactly one caller per lease: the one whose insert
        landed, or the one that took over an expired lease of an unfinished task.
        """
        validate_occurrence_id(occurrence_id)
        now = self._now()
        task_id = shared_task_id(task_type, now)
        lease_until = now + timedelta(seconds=lease_seconds)
        description = description or f"{task_type.strip().upper()} decided once for all occurrences"
        insert_verb = "INSERT" if self.db.dialect == "postgresql" else "INSERT OR IGNORE"
        conflict = " ON CONFLICT (task_id) DO NOTHING" if self.db.dialect == "postgresql" else ""
        async with self.db.transaction() as conn:
            created = await conn.fetchrow(
                f"{insert_verb} INTO tasks (task_id, agent_occurrence_id, channel_id, description, "
                "status, priority, created_at, updated_at, context_json, claimed_by, "
                "lease_expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8, $9, $10)"
                f"{conflict} RETURNING task_id",
                task_id, SHARED_OCCURRENCE_ID, channel_id, description,
                TaskStatus.ACTIVE.value, priority, now, dump_json(context), occurrence_id,
                lease_until,
            )
            won = created is not None
            if not won:
                taken_over = await conn.fetchrow(
                    "UPDATE tasks SET claimed_by = $1, lease_expires_at = $2, updated_at = $3, "
                    "status = $4 WHERE task_id = $5 AND agent_occurrence_id = $6 "
                    "AND status NOT IN ($7, $8) AND lease_expires_at < $3 RETURNING task_id",
                    occurrence_id, lease_until, now, TaskStatus.ACTIVE.value, task_id,
                    SHARED_OCCURRENCE_ID, *_FINISHED,
                )
                won = taken_over is not None
                if won:
                    log.warning("took over shared task %s: previous lease expired", task_id,
                                extra={"occurrence_id": occurrence_id})
            row = await conn.fetchrow(f"SELECT {TASK_COLUMNS} FROM tasks WHERE task_id = $1",
                                      task_id)
        if row is None:  # the read-back proves the row exists for winner and losers alike
            raise StoreError(f"shared task {task_id} vanished right after the claim")
        return task_from_row(row), won

    async def renew_lease(self, task_id: str, occurrence_id: str,
                          lease_seconds: float = DEFAULT_LEASE_SECONDS) -> bool:
        """Extend the claim while the work goes on; ``False`` if no longer the holder."""
        now = self._now()
        async with self.db.connection() as conn:
            row = await conn.fetchrow(
                "UPDATE tasks SET lease_expires_at = $1, updated_at = $2 WHERE task_id = $3 "
                "AND agent_occurrence_id = $4 AND claimed_by = $5 AND status NOT IN ($6, $7) "
                "RETURNING task_id",
                now + timedelta(seconds=lease_seconds), now, task_id, SHARED_OCCURRENCE_ID,
                occurrence_id, *_FINISHED,
            )
        return row is not None

    async def complete_shared_task(
        self, task_id: str, occurrence_id: str, *, outcome: dict[str, Any] | None = None,
        status: TaskStatus = TaskStatus.COMPLETED,
    ) -> bool:
        """Finish a shared task; only its current claimer can. Wakes every waiter."""
        async with self.db.transaction() as conn:
            row = await conn.fetchrow(
                "UPDATE tasks SET status = $1, outcome_json = $2, updated_at = $3 "
                "WHERE task_id = $4 AND agent_occurrence_id = $5 AND claimed_by = $6 "
                "AND status NOT IN ($7, $8) RETURNING task_id",
                TaskStatus(status).value, dump_json(outcome), self._now(), task_id,
                SHARED_OCCURRENCE_ID, occurrence_id, *_FINISHED,
            )
            if row is not None and self.db.dialect == "postgresql":
                await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, task_id)
        return row is not None

    async def get_shared_task(self, task_id: str) -> Task | None:
        async with self.db.connection() as conn:
            row = await conn.fetchrow(
                f"SELECT {TASK_COLUMNS} FROM tasks WHERE task_id = $1 AND agent_occurrence_id = $2",
                task_id, SHARED_OCCURRENCE_ID,
            )
        return task_from_row(row) if row else None

    async def get_shared_task_status(self, task_type: str, day: datetime | None = None
                                     ) -> TaskStatus | None:
        task = await self.get_shared_task(shared_task_id(task_type, day or self._now()))
        return task.status if task else None

    async def is_shared_task_completed(self, task_type: str, day: datetime | None = None) -> bool:
        return await self.get_shared_task_status(task_type, day) == TaskStatus.COMPLETED

    async def get_latest_shared_task(self, task_type: str) -> Task | None:
        prefix = f"{task_type.strip().upper()}_SHARED_"
        async with self.db.connection() as conn:
            row = await conn.fetchrow(
                f"SELECT {TASK_COLUMNS} FROM tasks WHERE agent_occurrence_id = $1 "
                "AND substr(task_id, 1, $2) = $3 ORDER BY created_at DESC, task_id DESC LIMIT 1",
                SHARED_OCCURRENCE_ID, len(prefix), prefix,
            )
        return task_from_row(row) if row else None

    async def wait_for_shared_task_completion(
        self, task_id: str, timeout: float, *, poll_interval: float = 0.5
    ) -> Task | None:
        """Wait until ``task_id`` is finished; return it, or ``None`` on timeout.

        On PostgreSQL a dedicated LISTEN connection wakes the waiter at once; polling
        stays underneath, since a notification can be missed (sent before LISTEN ran,
        connection dropped) and is only a hint.
        """
        woken = asyncio.Event()
        listener = None
        if isinstance(self.db, PostgresDatabase):
            with contextlib.suppress(Exception):
                listener = await self.db.dedicated_connection()

                def _on_notify(_conn: object, _pid: int, _channel: str, payload: str) -> None:
                    if payload == task_id:
                        woken.set()

                await listener.add_listener(NOTIFY_CHANNEL, _on_notify)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while True:
                woken.clear()  # before the read: a notification after it is not lost
                task = await self.get_shared_task(task_id)
                if task is not None and task.status.value in _FINISHED:
                    return task
                left = deadline - loop.time()
                if left <= 0:
                    return None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), min(poll_interval, left))
        finally:
            if listener is not None:
                with contextlib.suppress(Exception):
                    await listener.close()
