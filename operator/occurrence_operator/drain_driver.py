"""Carries out `drainplan` decisions: observe, plan, act, persist — until WAIT or NOOP.

The planner is pure; this module is the only place that turns its actions into registry
writes, transfers and StatefulSet size changes. Each action is idempotent, and the new
`.status.scaleDown` record is persisted right after its action succeeded, so an operator
killed at any point resumes from the record (re-running at most one idempotent action).

Each step that acts runs under a lock in the database, one per AgentDeployment
(`drain:<namespace>/<name>`, an advisory lock on PostgreSQL), taken before the record is
re-read and the step re-planned: beside Kopf's peering, two operators that both believe they
are active still never drive the same drain at once. All times the plan compares with
leases are the database's.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from occurrence_store import (
    InFlightPolicy,
    InFlightRecovery,
    OccurrenceState,
    Store,
    TaskStatus,
    ThoughtStatus,
)

from . import drainplan, gate
from .drainplan import Action, Decision, DrainSettings, Observations
from .events import EventType
from .naming import occurrence_id
from .status import ScaleDownStatus
from .timeutil import parse_time, utcnow

log = logging.getLogger(__name__)

MAX_ITERATIONS = 32
"""Plan/act rounds per reconcile; a drain needs about 8, more means something flaps."""
LOCK_WAIT_SECONDS = 2.0
"""How long a step waits for another operator's step on the same AgentDeployment."""


class DrainOps(Protocol):
    """The Kubernetes side of a drain (implemented by the reconciler)."""

    async def scale(self, replicas: int) -> None: ...
    async def persist(self, record: ScaleDownStatus | None) -> None: ...
    async def reload(self) -> ScaleDownStatus | None: ...
    async def departing_pods(self, ordinals: tuple[int, ...]) -> int: ...
    async def event(self, type_: EventType, reason: str, message: str) -> None: ...


@dataclass
class DriveResult:
    current: int | None
    """StatefulSet spec.replicas after the actions."""
    record: ScaleDownStatus | None
    requeue_after: float | None = None
    transferred: int = 0


async def observe(
    store: Store, name: str, record: ScaleDownStatus | None, ops: DrainOps, *,
    desired: int, agent_id: str,
) -> Observations:
    """Measure what the planner needs: the active drain's departing occurrences, or, outside a
    drain, the occurrences below `desired` that are still fenced."""
    if not drainplan.is_active(record):
        fenced = await store.registry.list(state=OccurrenceState.DRAINING, agent_id=agent_id)
        stale = sorted(k for k in (_ordinal(name, o.occurrence_id) for o in fenced)
                       if k is not None and k < max(desired, 1))
        return Observations(stale_fences=tuple(stale))
    assert record is not None
    ordinals = tuple(record.ordinals)
    work = 0
    quiet = True
    dead = True
    for k in ordinals:
        occ = occurrence_id(name, k)
        scoped = store.scope(occ)
        work += await scoped.count_tasks(TaskStatus.PENDING)
        work += await scoped.count_tasks(TaskStatus.ACTIVE)
        if await scoped.count_thoughts(ThoughtStatus.PROCESSING) > 0:
            row = await store.registry.get(occ)
            if row is None or not row.quiesced:
                quiet = False
                dead = dead and (row is None or row.lease_expired())
    pods = await ops.departing_pods(ordinals) if record.phase in ("Shrinking", "Sweeping") else 0
    return Observations(in_flight_quiet=quiet, unresponsive=not quiet and dead,
                        departing_work=work, departing_pods=pods)


def _ordinal(name: str, occurrence: str) -> int | None:
    prefix = f"{name}-"
    tail = occurrence[len(prefix):] if occurrence.startswith(prefix) else ""
    return int(tail) if tail.isdigit() else None


async def _move(
    store: Store, name: str, ordinals: tuple[int, ...], survivors: tuple[str, ...], reason: str,
    recovery: InFlightRecovery,
) -> int:
    moved = 0
    for k in ordinals:
        gate.check()
        result = await store.transfers.drain(
            occurrence_id(name, k),
            list(survivors),
            in_flight=InFlightPolicy.RELEASE,
            reason=reason,
            recovery=recovery,
        )
        moved += result.tasks_moved
    return moved


async def execute(
    decision: Decision,
    *,
    store: Store,
    name: str,
    record: ScaleDownStatus | None,
    ops: DrainOps,
    recovery: InFlightRecovery = InFlightRecovery.RETRY,
) -> int:
    """Carry out one action; returns the number of tasks it moved."""
    action = decision.action
    if action in (Action.SCALE, Action.SHRINK):
        assert decision.statefulset_replicas is not None
        await ops.scale(decision.statefulset_replicas)
        return 0
    if action is Action.FENCE:
        for k in decision.ordinals:
            await store.registry.set_state(occurrence_id(name, k), OccurrenceState.DRAINING,
                                           grace_seconds=decision.grace_seconds)
        return 0
    if action is Action.UNFENCE:
        for k in decision.ordinals:
            await store.registry.set_state(occurrence_id(name, k), OccurrenceState.ACTIVE)
        return 0
    target = decision.record or record
    assert target is not None
    survivors = decision.survivors or drainplan.survivor_ids(name, target.to_replicas)
    if action in (Action.RELEASE_IN_FLIGHT, Action.TRANSFER):
        return await _move(store, name, decision.ordinals, survivors, "scale-down drain",
                           recovery)
    if action is Action.SWEEP:
        moved = await _move(store, name, decision.ordinals, survivors, "scale-down sweep",
                            recovery)
        for k in decision.ordinals:
            await store.registry.set_state(occurrence_id(name, k), OccurrenceState.RETIRED)
        return moved
    return 0  # ADVANCE, NOOP, WAIT: no side effect


Clock = Callable[[], Awaitable[None]]


async def drive(
    *,
    name: str,
    store: Store,
    settings: DrainSettings,
    desired: int,
    current: int | None,
    record: ScaleDownStatus | None,
    ops: DrainOps,
    agent_id: str,
    on_transferred: Callable[[int], None] | None = None,
    on_drain_done: Callable[[ScaleDownStatus, float], None] | None = None,
) -> DriveResult:
    """Plan and act until the planner waits or has nothing left to do."""
    transferred = 0
    recovery = InFlightRecovery(settings.recovery)
    for _ in range(MAX_ITERATIONS):
        decision, now = await _plan(store, name, settings, desired, current, record, ops,
                                    agent_id)
        if decision.action is Action.NOOP:
            return DriveResult(current, record, None, transferred)
        if decision.action is Action.WAIT:
            return DriveResult(current, record, decision.requeue_after, transferred)
        async with store.locks.hold(f"drain:{agent_id}", wait_seconds=LOCK_WAIT_SECONDS) as held:
            if not held:
                log.warning("%s: another operator holds the drain lock of %s; retrying later",
                            name, agent_id)
                return DriveResult(current, record, drainplan.POLL_SECONDS, transferred)
            # under the lock: the record as the last step (maybe another operator's) left it
            record = await ops.reload()
            decision, now = await _plan(store, name, settings, desired, current, record, ops,
                                        agent_id)
            if decision.action in (Action.NOOP, Action.WAIT):
                continue
            log.info(
                "%s: %s %s (%s)",
                name,
                decision.action.value,
                list(decision.ordinals) or decision.statefulset_replicas,
                decision.reason,
            )
            gate.check()  # a replica paused by peering takes no further step
            current_before = current
            moved = await execute(decision, store=store, name=name, record=record, ops=ops,
                                  recovery=recovery)
            if decision.action in (Action.SCALE, Action.SHRINK):
                current = decision.statefulset_replicas
            new_record = decision.record
            if moved and new_record is not None:
                new_record = drainplan.record_transferred(new_record, moved)
                transferred += moved
                if on_transferred is not None:
                    on_transferred(moved)
            if new_record != record:
                await ops.persist(new_record)
                await _milestone(ops, record, new_record, decision, moved, now, on_drain_done)
                record = new_record
            elif decision.action is Action.SCALE and current_before is not None:
                await ops.event("Normal", "Scaled", decision.reason)
    log.warning("%s: drain planning did not settle in %d rounds", name, MAX_ITERATIONS)
    return DriveResult(current, record, drainplan.POLL_SECONDS, transferred)


async def _plan(
    store: Store, name: str, settings: DrainSettings, desired: int, current: int | None,
    record: ScaleDownStatus | None, ops: DrainOps, agent_id: str,
) -> tuple[Decision, object]:
    observed = await observe(store, name, record, ops, desired=desired, agent_id=agent_id)
    now = utcnow()
    decision = drainplan.plan(name, current=current, desired=desired, record=record,
                              settings=settings, observed=observed, now=now)
    return decision, now


async def _milestone(
    ops: DrainOps,
    before: ScaleDownStatus | None,
    after: ScaleDownStatus | None,
    decision: Decision,
    moved: int,
    now: object,
    on_drain_done: Callable[[ScaleDownStatus, float], None] | None,
) -> None:
    if after is None:
        return
    phase_changed = (
        before is None or before.phase != after.phase or before.started_at != after.started_at
    )
    if moved:
        await ops.event(
            "Normal",
            "TasksTransferred",
            f"moved {moved} tasks from ordinals {list(decision.ordinals)} to survivors",
        )
    if not phase_changed:
        return
    if after.phase == "Fencing":
        await ops.event("Normal", "DrainStarted", after.message or "scale-down drain started")
    elif after.phase == "Shrinking":
        await ops.event(
            "Normal",
            "ScalingDown",
            f"departing work moved ({after.transferred} tasks); StatefulSet scaled to "
            f"{after.to_replicas}",
        )
    elif after.phase == "Done":
        seconds = (utcnow() - parse_time(after.started_at)).total_seconds()
        if on_drain_done is not None:
            on_drain_done(after, seconds)
        await ops.event("Normal", "DrainComplete", after.message or "drain complete")
    elif after.phase == "Cancelled":
        await ops.event("Normal", "DrainCancelled", after.message or "drain cancelled")
    else:
        await ops.event("Normal", f"Drain{after.phase}", decision.reason or after.phase)
