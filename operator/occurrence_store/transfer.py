"""Moving work between occurrences: single tasks, thoughts, and the bulk drain.

Every write is guarded on the owner it expects (``WHERE agent_occurrence_id = from``), so a
transfer can never take a task that moved or finished meanwhile. A task's thoughts move
with it in the same transaction, and each moved task gets one ``task_transfers`` row.
The drain works in batches, each one transaction: a drain killed half-way leaves every
task with exactly one owner, and running it again moves only what is left. A thought never
arrives PROCESSING at its new owner: the statement that moves it puts a PROCESSING thought
back to pending (or FAILED, with :attr:`InFlightRecovery.FAIL`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from occurrence_store.balance import balanced_quotas, spread_assignment, spread_slots
from occurrence_store.clock import NOW_SQL
from occurrence_store.database import Connection, Database, fetch_now
from occurrence_store.errors import StoreError
from occurrence_store.models import (
    SHARED_OCCURRENCE_ID,
    TRANSFERABLE_TASK_STATUSES,
    DrainResult,
    InFlightPolicy,
    InFlightRecovery,
    OccurrenceId,
    TaskStatus,
    ThoughtStatus,
    TransferRecord,
    validate_occurrence_id,
)
from occurrence_store.rows import TRANSFERS_OF_TASK, record_transfers
from occurrence_store.scoped import ScopedStore

log = logging.getLogger("occurrence_store.transfer")

DEFAULT_DRAIN_BATCH = 25_000
_MOVABLE = tuple(s.value for s in TRANSFERABLE_TASK_STATUSES)

_MOVE_TASK = ("UPDATE tasks SET agent_occurrence_id = :target, updated_at = :now "
              "WHERE task_id = :task_id AND agent_occurrence_id = :source RETURNING task_id")
_MOVE_TASK_THOUGHTS = (
    "UPDATE thoughts SET agent_occurrence_id = :target, updated_at = :now, "
    "status = CASE WHEN status = :processing THEN :pending ELSE status END "
    "WHERE source_task_id = :task_id AND agent_occurrence_id = :source RETURNING thought_id"
)
_MOVE_THOUGHTS = (
    f"UPDATE thoughts SET agent_occurrence_id = :target, updated_at = {NOW_SQL} "
    "WHERE source_task_id = :task_id AND agent_occurrence_id = :source RETURNING thought_id"
)
_MOVABLE_IN = f"status IN ({', '.join(repr(s) for s in _MOVABLE)})"
"""A condition: the task may move (the statuses are the enum's fixed values, inline)."""
_LEFT_BEHIND = f"SELECT COUNT(*) FROM tasks WHERE agent_occurrence_id = $1 AND {_MOVABLE_IN}"
_NOT_BUSY = (
    " AND NOT EXISTS (SELECT 1 FROM thoughts th WHERE th.source_task_id = t.task_id"
    " AND th.agent_occurrence_id = t.agent_occurrence_id"
    f" AND th.status = '{ThoughtStatus.PROCESSING.value}')"
)
"""With :attr:`InFlightPolicy.WAIT`: a task with a processing thought stays."""
_DRAIN_BATCH = (f"SELECT t.task_id FROM tasks t WHERE t.agent_occurrence_id = :source "
                f"AND t.{_MOVABLE_IN}")
_DRAIN_ORDER = " ORDER BY t.priority DESC, t.created_at, t.task_id LIMIT :limit"
_REBALANCE_PICK = (
    "SELECT task_id FROM tasks WHERE agent_occurrence_id = :donor AND status = :pending "
    "ORDER BY priority ASC, created_at DESC, task_id DESC LIMIT :limit"
)


def _arrival_status(recovery: InFlightRecovery) -> str:
    """What a PROCESSING thought becomes when it moves: it was stranded in flight."""
    if InFlightRecovery(recovery) is InFlightRecovery.FAIL:
        return ThoughtStatus.FAILED.value
    return ThoughtStatus.PENDING.value


def _check_not_shared(*occurrence_ids: OccurrenceId) -> None:
    if SHARED_OCCURRENCE_ID in occurrence_ids:
        raise StoreError("shared decisions stay in __shared__: they are never transferred")


class Transfers:
    def __init__(self, db: Database) -> None:
        self.db = db

    # ----------------------------------------------------------------- single task

    async def transfer_task_ownership(
        self, task_id: str, from_occurrence_id: OccurrenceId, to_occurrence_id: OccurrenceId,
        *, reason: str = "manual",
    ) -> bool:
        """Move one task (and its thoughts) if ``from_occurrence_id`` still owns it.

        A PROCESSING thought arrives pending. Shared decisions are never moved.
        """
        validate_occurrence_id(to_occurrence_id)
        _check_not_shared(from_occurrence_id)
        async with self.db.transaction() as conn:
            now = await fetch_now(conn)
            route = {"target": to_occurrence_id, "now": now, "task_id": task_id,
                     "source": from_occurrence_id}
            row = await conn.fetchrow(_MOVE_TASK, **route)
            if row is None:
                return False
            moved = await conn.fetch(_MOVE_TASK_THOUGHTS, **route,
                                     processing=ThoughtStatus.PROCESSING.value,
                                     pending=ThoughtStatus.PENDING.value)
            await record_transfers(conn, [(task_id, to_occurrence_id, len(moved))],
                                   from_occurrence_id, reason, now)
        log.info("transferred task %s from %s to %s (%d thoughts): %s", task_id,
                 from_occurrence_id, to_occurrence_id, len(moved), reason,
                 extra={"occurrence_id": from_occurrence_id})
        return True

    async def transfer_thought_ownership(
        self, from_occurrence_id: OccurrenceId, to_occurrence_id: OccurrenceId, task_id: str
    ) -> int:
        """Move the thoughts of ``task_id`` still owned by ``from`` to ``to``; return how many."""
        validate_occurrence_id(to_occurrence_id, allow_shared=True)
        async with self.db.connection() as conn:
            rows = await conn.fetch(_MOVE_THOUGHTS, target=to_occurrence_id, task_id=task_id,
                                    source=from_occurrence_id)
        return len(rows)

    # ----------------------------------------------------------------- drain

    async def drain(
        self,
        from_occurrence_id: OccurrenceId,
        to_occurrence_ids: Sequence[OccurrenceId],
        *,
        in_flight: InFlightPolicy,
        reason: str = "drain",
        batch_size: int = DEFAULT_DRAIN_BATCH,
        recovery: InFlightRecovery = InFlightRecovery.RETRY,
    ) -> DrainResult:
        """Move every pending/active task of ``from`` (with thoughts) to the survivors.

        Survivors receive work in proportion to what they lack (balanced by their current
        pending+active load). ``in_flight`` says what happens to tasks with a PROCESSING
        thought: :attr:`InFlightPolicy.RELEASE` takes those thoughts out of processing —
        back to pending, or FAILED under ``recovery=FAIL`` — and moves the task;
        :attr:`InFlightPolicy.WAIT` keeps such tasks with ``from`` (reported in
        ``tasks_left_in_flight``) for a later drain. Release only a fenced (or dead)
        occurrence's work: a live one would still finish what it no longer owns (its
        completion is refused, but its handler ran twice).
        """
        targets = list(dict.fromkeys(to_occurrence_ids))
        if not targets:
            raise StoreError("a drain needs at least one survivor")
        if from_occurrence_id in targets:
            raise StoreError(f"cannot drain {from_occurrence_id!r} into itself")
        for target in targets:
            validate_occurrence_id(target)
        _check_not_shared(from_occurrence_id)
        in_flight = InFlightPolicy(in_flight)
        recovery = InFlightRecovery(recovery)
        result = DrainResult(from_occurrence_id=from_occurrence_id)

        if in_flight is InFlightPolicy.RELEASE:
            released = await ScopedStore(self.db, from_occurrence_id).release_thoughts(
                reason=f"{reason}: in flight when {from_occurrence_id} was drained",
                fail=recovery is InFlightRecovery.FAIL,
            )
            result.thoughts_released = len(released)

        async with self.db.connection() as conn:
            known = await _loads(conn, targets)
        loads = [known.get(t, 0) for t in targets]  # kept up to date batch by batch
        while True:
            moved_thoughts, per_target = await self._drain_batch(
                from_occurrence_id, targets, loads, in_flight, reason, batch_size,
                _arrival_status(recovery),
            )
            moved_tasks = sum(per_target.values())
            if moved_tasks == 0:
                break
            result.batches += 1
            result.tasks_moved += moved_tasks
            result.thoughts_moved += moved_thoughts
            for k, target in enumerate(targets):
                loads[k] += per_target.get(target, 0)
            for target, n in per_target.items():
                result.per_target[target] = result.per_target.get(target, 0) + n

        async with self.db.connection() as conn:
            result.tasks_left_in_flight = int(
                await conn.fetchval(_LEFT_BEHIND, from_occurrence_id) or 0)
        log.info(
            "drained %s: %d tasks, %d thoughts moved to %s; %d left in flight",
            from_occurrence_id, result.tasks_moved, result.thoughts_moved,
            result.per_target, result.tasks_left_in_flight,
            extra={"occurrence_id": from_occurrence_id},
        )
        return result

    async def _drain_batch(
        self, source: OccurrenceId, targets: list[OccurrenceId], loads: list[int],
        in_flight: InFlightPolicy, reason: str, batch_size: int, arrival: str,
    ) -> tuple[int, dict[OccurrenceId, int]]:
        """One batch in one transaction: count what the pick will take (index only), share
        it out by the survivors' loads, and let the backend move it (in one statement on
        PostgreSQL). Returns the thoughts moved and the tasks moved per target."""
        busy_filter = _NOT_BUSY if in_flight is InFlightPolicy.WAIT else ""
        pick = _DRAIN_BATCH + busy_filter + _DRAIN_ORDER + self.db.row_lock(skip_locked=False)
        async with self.db.transaction() as conn:
            now = await fetch_now(conn)
            count = int(await conn.fetchval(
                f"SELECT COUNT(*) FROM ({_DRAIN_BATCH}{busy_filter} LIMIT :limit) AS movable",
                source=source, limit=batch_size) or 0)
            if count == 0:
                return 0, {}
            slots = spread_slots(balanced_quotas(loads, count))
            per_target, thoughts = await self.db.move_batch(
                conn, pick=pick, source=source, limit=batch_size, targets=targets, slots=slots,
                reason=reason, now=now, arrival=arrival)
        return thoughts, per_target

    async def rebalance(
        self, occurrence_ids: Sequence[OccurrenceId], *, reason: str = "rebalance",
        batch_size: int = DEFAULT_DRAIN_BATCH,
    ) -> dict[OccurrenceId, dict[OccurrenceId, int]]:
        """Even out PENDING backlog across live occurrences (e.g. after a scale-up).

        Only pending tasks move — active ones may be in a runtime's hands. Each donor gives
        its excess over the balanced level, lowest priority and newest first (it keeps what
        it would work next), to the occurrences below the level; guarded per row and
        recorded like a drain. Returns ``{donor: {recipient: tasks}}``.
        """
        members = list(dict.fromkeys(occurrence_ids))
        for member in members:
            validate_occurrence_id(member)
        if len(members) < 2:
            return {}
        async with self.db.connection() as conn:
            rows = await conn.fetch(
                f"SELECT agent_occurrence_id, COUNT(*) AS n FROM tasks "
                f"WHERE agent_occurrence_id IN ({_in_list(1, len(members))}) "
                f"AND status = ${len(members) + 1} GROUP BY agent_occurrence_id",
                *members, TaskStatus.PENDING.value,
            )
        counts = {r["agent_occurrence_id"]: int(r["n"]) for r in rows}
        loads = [counts.get(m, 0) for m in members]
        if max(loads) - min(loads) <= 1:
            return {}  # already even: moving would only churn
        targets = balanced_quotas([0] * len(members), sum(loads))  # the level each should hold
        excess = {m: load - target for m, load, target in
                  zip(members, loads, targets, strict=True) if load > target}
        moved: dict[OccurrenceId, dict[OccurrenceId, int]] = {}
        pick = _REBALANCE_PICK + self.db.row_lock(skip_locked=True)
        for donor, extra in excess.items():
            recipients = [m for m, load, target in zip(members, loads, targets, strict=True)
                          if load < target]
            if not recipients:
                break
            async with self.db.transaction() as conn:
                now = await fetch_now(conn)
                picked = await conn.fetch(pick, donor=donor, pending=TaskStatus.PENDING.value,
                                          limit=min(extra, batch_size))
                task_ids = [r["task_id"] for r in picked]
                live = [counts.get(r, 0) for r in recipients]
                wanted = [targets[members.index(r)] - load for r, load in
                          zip(recipients, live, strict=True)]
                quotas = _cap(balanced_quotas(live, len(task_ids)), wanted)
                plan = spread_assignment(task_ids[:sum(quotas)], recipients, quotas)
                applied, _ = await self.db.move_tasks(conn, plan, donor, reason, now,
                                                      ThoughtStatus.PENDING.value)
            for _task_id, target in applied:
                moved.setdefault(donor, {}).setdefault(target, 0)
                moved[donor][target] += 1
                counts[target] = counts.get(target, 0) + 1
            loads = [counts.get(m, 0) for m in members]
        if moved:
            log.info("rebalanced pending tasks: %s", moved,
                     extra={"occurrence_id": ",".join(members)})
        return moved

    async def transfers_for_task(self, task_id: str) -> list[TransferRecord]:
        """The audit trail of one task: answers "where did my task go"."""
        async with self.db.connection() as conn:
            rows = await conn.fetch(TRANSFERS_OF_TASK, task_id)
        return [TransferRecord.model_validate(r) for r in rows]

    async def count_transfers(self, *, from_occurrence_id: OccurrenceId | None = None) -> int:
        async with self.db.connection() as conn:
            if from_occurrence_id is None:
                return int(await conn.fetchval("SELECT COUNT(*) FROM task_transfers") or 0)
            return int(await conn.fetchval(
                "SELECT COUNT(*) FROM task_transfers WHERE from_occurrence_id = $1",
                from_occurrence_id) or 0)


def _cap(quotas: list[int], wanted: list[int]) -> list[int]:
    """Water-filling quotas, but nobody gets more than it lacks."""
    return [max(0, min(q, w)) for q, w in zip(quotas, wanted, strict=True)]


def _in_list(first: int, count: int) -> str:
    return ", ".join(f"${i}" for i in range(first, first + count))


async def _loads(conn: Connection, targets: list[OccurrenceId]) -> dict[OccurrenceId, int]:
    rows = await conn.fetch(
        f"SELECT agent_occurrence_id, COUNT(*) AS n FROM tasks "
        f"WHERE agent_occurrence_id IN ({_in_list(1, len(targets))}) "
        f"AND {_MOVABLE_IN} GROUP BY agent_occurrence_id",
        *targets,
    )
    return {r["agent_occurrence_id"]: int(r["n"]) for r in rows}
