"""Decisions taken once for all occurrences: shared tasks in the ``__shared__`` namespace.

``try_claim_shared_task`` creates the day's task with a deterministic id in one atomic
statement; whoever's insert lands is the winner and holds a lease on it. If the winner
dies, its lease runs out and the next claimer takes over by a guarded ``UPDATE`` (only an
unfinished task with an expired lease can change hands) — never check-delete-insert.
The task stays in ``__shared__`` so everyone finds it by id; ``claimed_by`` says who runs it.

Decisions belong to one agent (:attr:`SharedTasks.agent_id`, the AgentDeployment
``<namespace>/<name>``; '' for the default agent of a single-agent database, whose ids keep
their old form): two agents on one database never take or obey each other's decisions.
Every lookup matches ``__shared__`` rows only, and the day is the database's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime
from typing import Any

from occurrence_store.clock import NOW_SQL, after_sql
from occurrence_store.database import Database, fetch_now
from occurrence_store.errors import NotEligibleToDecide, StoreError
from occurrence_store.models import (
    DEFAULT_AGENT_ID,
    FINISHED_TASK_STATUSES,
    SHARED_OCCURRENCE_ID,
    AgentId,
    OccurrenceId,
    OccurrenceState,
    Task,
    TaskStatus,
    validate_occurrence_id,
)
from occurrence_store.rows import TASK_COLUMNS, dump_json, task_from_row

log = logging.getLogger("occurrence_store.shared")

NOTIFY_CHANNEL = "occurrence_shared_tasks"
DEFAULT_LEASE_SECONDS = 300.0
# REJECTED counts as finished, like everywhere else: no code path rejects a shared decision
# (complete_shared_task is given COMPLETED or FAILED), and one that was rejected is decided.
_FINISHED = tuple(s.value for s in FINISHED_TASK_STATUSES)
_UNFINISHED = f"status NOT IN ({', '.join(repr(s) for s in _FINISHED)})"
"""A condition: not finished (the statuses are the enum's fixed values, written inline)."""

_SHARED_TASK = (f"SELECT {TASK_COLUMNS} FROM tasks WHERE task_id = :task_id "
                "AND agent_occurrence_id = :shared")
_CREATE = (
    "INSERT INTO tasks (task_id, agent_occurrence_id, channel_id, description, status, priority, "
    "created_at, updated_at, context_json, claimed_by, lease_expires_at, agent_id) "
    f"VALUES (:task_id, :shared, :channel_id, :description, :active, :priority, {NOW_SQL}, "
    f"{NOW_SQL}, :context, :claimer, {after_sql(':lease')}, :agent_id)"
)
_TAKE_OVER = (
    f"UPDATE tasks SET claimed_by = :claimer, lease_expires_at = {after_sql(':lease')}, "
    f"updated_at = {NOW_SQL}, status = :active WHERE task_id = :task_id "
    f"AND agent_occurrence_id = :shared AND {_UNFINISHED} AND lease_expires_at < {NOW_SQL} "
    "RETURNING task_id"
)
_OWNER_OF_ID = "SELECT agent_occurrence_id FROM tasks WHERE task_id = $1"
_RENEW = (
    f"UPDATE tasks SET lease_expires_at = {after_sql(':lease')}, updated_at = {NOW_SQL} "
    "WHERE task_id = :task_id AND agent_occurrence_id = :shared AND claimed_by = :claimer "
    f"AND {_UNFINISHED} RETURNING task_id"
)
_COMPLETE = (
    f"UPDATE tasks SET status = :status, outcome_json = :outcome, updated_at = {NOW_SQL} "
    "WHERE task_id = :task_id AND agent_occurrence_id = :shared AND claimed_by = :claimer "
    f"AND {_UNFINISHED} RETURNING task_id"
)
_LATEST = (
    f"SELECT {TASK_COLUMNS} FROM tasks WHERE agent_occurrence_id = :shared "
    "AND substr(task_id, 1, :prefix_length) = :prefix AND agent_id = :agent_id "
    "ORDER BY created_at DESC, task_id DESC LIMIT 1"
)

# While a canary rollout is under way (a row in agent_rollouts), only an occurrence on the
# stable revision may claim: no row when none is under way — or when no live occurrence of
# the agent runs the stable revision (then nobody would decide: anyone may) — else the
# stable revision and the claimant's own.
_PINNED = ("SELECT r.stable_revision, (SELECT o.revision FROM occurrences o "
           "WHERE o.occurrence_id = :claimer) AS revision "
           "FROM agent_rollouts r WHERE r.agent_id = :agent_id AND EXISTS ("
           "SELECT 1 FROM occurrences s WHERE s.agent_id = :agent_id "
           "AND s.revision = r.stable_revision AND s.state <> :retired "
           f"AND s.lease_expires_at >= {NOW_SQL})")
_PIN = ("INSERT INTO agent_rollouts (agent_id, stable_revision) VALUES (:agent_id, :revision) "
        "ON CONFLICT (agent_id) DO UPDATE SET stable_revision = excluded.stable_revision")
_UNPIN = "DELETE FROM agent_rollouts WHERE agent_id = $1"
_PINNED_TO = "SELECT stable_revision FROM agent_rollouts WHERE agent_id = $1"

_OLDEST_UNFINISHED = (
    f"SELECT {TASK_COLUMNS} FROM tasks WHERE agent_occurrence_id = :shared "
    f"AND agent_id = :agent_id AND {_UNFINISHED} ORDER BY created_at, task_id LIMIT 1"
)


def _kind(task_type: str) -> str:
    kind = task_type.strip().upper()
    if not kind or not kind.replace("_", "").isalnum() or not kind.isascii():
        raise ValueError(f"invalid shared task type {task_type!r}: use letters, digits and '_'")
    return kind


def shared_task_id(task_type: str, day: datetime, agent_id: AgentId = DEFAULT_AGENT_ID) -> str:
    """``{TYPE}_SHARED_{YYYYMMDD}`` (``...@{agent}`` for a named agent): every occurrence of
    the agent computes the same id for the same day."""
    suffix = f"@{agent_id}" if agent_id else ""
    return f"{_kind(task_type)}_SHARED_{day.strftime('%Y%m%d')}{suffix}"


class SharedTasks:
    def __init__(self, db: Database, agent_id: AgentId = DEFAULT_AGENT_ID) -> None:
        self.db = db
        self.agent_id = agent_id

    def task_id(self, task_type: str, day: datetime) -> str:
        return shared_task_id(task_type, day, self.agent_id)

    async def now(self) -> datetime:
        async with self.db.connection() as conn:
            return await fetch_now(conn)

    async def try_claim_shared_task(
        self,
        task_type: str,
        occurrence_id: OccurrenceId,
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

        While a canary rollout of the agent is under way (:meth:`pin_to_stable`), only an
        occurrence on the stable revision claims: another one gets the decision to follow
        (``was_created`` False) or, when nobody claimed it yet, :class:`NotEligibleToDecide`
        — old and new versions never decide the same thing differently.
        """
        validate_occurrence_id(occurrence_id)
        kind = _kind(task_type)
        description = description or f"{kind} decided once for all occurrences"
        create = self.db.insert_ignoring_conflicts(_CREATE, "task_id") + " RETURNING task_id"
        async with self.db.transaction() as conn:
            task_id = self.task_id(kind, await fetch_now(conn))  # the database's day
            lease = float(lease_seconds)
            pinned = await conn.fetchrow(_PINNED, claimer=occurrence_id, agent_id=self.agent_id,
                                         retired=OccurrenceState.RETIRED.value)
            if pinned is not None and pinned["revision"] != pinned["stable_revision"]:
                row = await conn.fetchrow(_SHARED_TASK, task_id=task_id,
                                          shared=SHARED_OCCURRENCE_ID)
                if row is None:
                    raise NotEligibleToDecide(occurrence_id, pinned["revision"],
                                              pinned["stable_revision"])
                return task_from_row(row), False
            created = await conn.fetchrow(
                create, task_id=task_id, shared=SHARED_OCCURRENCE_ID, channel_id=channel_id,
                description=description, active=TaskStatus.ACTIVE.value, priority=priority,
                context=dump_json(context), claimer=occurrence_id, lease=lease,
                agent_id=self.agent_id,
            )
            won = created is not None
            if not won:
                taken_over = await conn.fetchrow(
                    _TAKE_OVER, claimer=occurrence_id, lease=lease,
                    active=TaskStatus.ACTIVE.value, task_id=task_id, shared=SHARED_OCCURRENCE_ID,
                )
                won = taken_over is not None
                if won:
                    log.warning("took over shared task %s: previous lease expired", task_id,
                                extra={"occurrence_id": occurrence_id})
            row = await conn.fetchrow(_SHARED_TASK, task_id=task_id, shared=SHARED_OCCURRENCE_ID)
            if row is None:  # the read-back proves the row exists for winner and losers alike
                squatter = await conn.fetchval(_OWNER_OF_ID, task_id)
        if row is None:
            if squatter is not None:
                raise StoreError(
                    f"shared task {task_id} cannot be created: occurrence {squatter!r} owns a "
                    "task with that id outside __shared__ (written before ids of that form were "
                    "refused); rename or delete it")
            raise StoreError(f"shared task {task_id} vanished right after the claim")
        return task_from_row(row), won

    async def pin_to_stable(self, stable_revision: str | None) -> None:
        """A canary rollout of this agent is under way on top of ``stable_revision``: only its
        occurrences claim shared decisions from now on (None: no rollout, anyone claims)."""
        async with self.db.connection() as conn:
            if stable_revision is None:
                await conn.execute(_UNPIN, self.agent_id)
            else:
                await conn.execute(_PIN, agent_id=self.agent_id, revision=stable_revision)

    async def pinned_to(self) -> str | None:
        """The stable revision shared decisions are pinned to (None: not pinned)."""
        async with self.db.connection() as conn:
            value = await conn.fetchval(_PINNED_TO, self.agent_id)
        return None if value is None else str(value)

    async def renew_lease(self, task_id: str, occurrence_id: OccurrenceId,
                          lease_seconds: float = DEFAULT_LEASE_SECONDS) -> bool:
        """Extend the claim while the work goes on; ``False`` if no longer the holder."""
        async with self.db.connection() as conn:
            row = await conn.fetchrow(
                _RENEW, lease=float(lease_seconds), task_id=task_id,
                shared=SHARED_OCCURRENCE_ID, claimer=occurrence_id,
            )
        return row is not None

    async def complete_shared_task(
        self, task_id: str, occurrence_id: OccurrenceId, *,
        outcome: dict[str, Any] | None = None,
        status: TaskStatus = TaskStatus.COMPLETED,
    ) -> bool:
        """Finish a shared task; only its current claimer can. Wakes every waiter."""
        async with self.db.transaction() as conn:
            row = await conn.fetchrow(
                _COMPLETE, status=TaskStatus(status).value, outcome=dump_json(outcome),
                task_id=task_id, shared=SHARED_OCCURRENCE_ID, claimer=occurrence_id,
            )
            if row is not None:
                await self.db.notify(conn, NOTIFY_CHANNEL, task_id)
        return row is not None

    async def get_shared_task(self, task_id: str) -> Task | None:
        async with self.db.connection() as conn:
            row = await conn.fetchrow(_SHARED_TASK, task_id=task_id, shared=SHARED_OCCURRENCE_ID)
        return task_from_row(row) if row else None

    async def get_shared_task_status(self, task_type: str, day: datetime | None = None
                                     ) -> TaskStatus | None:
        task = await self.get_shared_task(self.task_id(task_type, day or await self.now()))
        return task.status if task else None

    async def is_shared_task_completed(self, task_type: str, day: datetime | None = None) -> bool:
        return await self.get_shared_task_status(task_type, day) == TaskStatus.COMPLETED

    async def oldest_unfinished_age(self) -> float:
        """Seconds since the oldest unfinished decision of this agent was first claimed
        (0 when every decision is finished): a decision stuck in processing shows here."""
        async with self.db.connection() as conn:
            row = await conn.fetchrow(_OLDEST_UNFINISHED, shared=SHARED_OCCURRENCE_ID,
                                      agent_id=self.agent_id)
        if row is None:
            return 0.0
        task = task_from_row(row)
        return max(0.0, (await self.now() - task.created_at).total_seconds())

    async def get_latest_shared_task(self, task_type: str) -> Task | None:
        prefix = f"{_kind(task_type)}_SHARED_"
        async with self.db.connection() as conn:
            row = await conn.fetchrow(
                _LATEST, shared=SHARED_OCCURRENCE_ID, prefix_length=len(prefix), prefix=prefix,
                agent_id=self.agent_id,
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
        subscription = None
        if self.db.notifications:

            def on_payload(payload: str) -> None:
                if payload == task_id:
                    woken.set()

            try:
                subscription = await self.db.listen(NOTIFY_CHANNEL, on_payload)
            except Exception as exc:  # polling below still finds the outcome
                log.warning("cannot LISTEN for shared task %s, polling only: %s", task_id, exc,
                            extra={"event": "shared.listen_failed"})
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
            if subscription is not None:
                with contextlib.suppress(Exception):
                    await subscription.close()
