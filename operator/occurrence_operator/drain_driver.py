"""Carries out `drainplan` decisions: observe, plan, act, persist — until WAIT or NOOP.

The planner is pure; this module is the only place that turns its actions into registry
writes, transfers and StatefulSet size changes. Each action is idempotent, and the new
`.status.scaleDown` record is persisted right after its action succeeded, so an operator
killed at any point resumes from the record (re-running at most one idempotent action).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from occurrence_store import InFlightPolicy, OccurrenceState, Store, TaskStatus, ThoughtStatus

from . import drainplan, gate
from .drainplan import Action, Decision, DrainSettings, Observations
from .events import EventType
from .naming import occurrence_id
from .status import ScaleDownStatus
from .timeutil import parse_time, utcnow

log = logging.getLogger(__name__)

MAX_ITERATIONS = 32
"""Plan/act rounds per reconcile; a drain needs about 8, more means something flaps."""


class DrainOps(Protocol):
    """The Kubernetes side of a drain (implemented by the reconciler)."""

    async def scale(self, replicas: int) -> None: ...
    async def persist(self, record: ScaleDownStatus | None) -> None: ...
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
    store: Store, name: str, record: ScaleDownStatus | None, ops: DrainOps
) -> Observations:
    """Measure what the planner needs for the active drain (nothing without one)."""
    if not drainplan.is_active(record):
        return Observations()
    assert record is not None
    ordinals = tuple(record.ordinals)
    ids = [occurrence_id(name, k) for k in ordinals]
    work = 0
    quiet = True
    for occ in ids:
        scoped = store.scope(occ)
        work += await scoped.count_tasks(TaskStatus.PENDING)
        work += await scoped.count_tasks(TaskStatus.ACTIVE)
        if await scoped.count_thoughts(ThoughtStatus.PROCESSING) > 0:
            row = await store.registry.get(occ)
            if row is None or not row.quiesced:
                quiet = False
    pods = await ops.departing_pods(ordinals) if record.phase in ("Shrinking", "Sweeping") else 0
    return Observations(in_flight_quiet=quiet, departing_work=work, departing_pods=pods)


async def _move(
    store: Store, name: str, ordinals: tuple[int, ...], survivors: tuple[str, ...], reason: str
) -> int:
    moved = 0
    for k in ordinals:
        gate.check()
        result = await store.transfers.drain(
            occurrence_id(name, k),
            list(survivors),
            in_flight=InFlightPolicy.RELEASE,
            reason=reason,
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
) -> int:
    """Carry out one action; returns the number of tasks it moved."""
    action = decision.action
    if action in (Action.SCALE, Action.SHRINK):
        assert decision.statefulset_replicas is not None
        await ops.scale(decision.statefulset_replicas)
        return 0
    if action is Action.FENCE:
        for k in decision.ordinals:
            await store.registry.set_state(occurrence_id(name, k), OccurrenceState.DRAINING)
        return 0
    if action is Action.UNFENCE:
        for k in decision.ordinals:
            await store.registry.set_state(occurrence_id(name, k), OccurrenceState.ACTIVE)
        return 0
    target = decision.record or record
    assert target is not None
    survivors = decision.survivors or drainplan.survivor_ids(name, target.to_replicas)
    if action in (Action.RELEASE_IN_FLIGHT, Action.TRANSFER):
        return await _move(store, name, decision.ordinals, survivors, "scale-down drain")
    if action is Action.SWEEP:
        moved = await _move(store, name, decision.ordinals, survivors, "scale-down sweep")
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
    on_transferred: Callable[[int], None] | None = None,
    on_drain_done: Callable[[ScaleDownStatus, float], None] | None = None,
) -> DriveResult:
    """Plan and act until the planner waits or has nothing left to do."""
    transferred = 0
    for _ in range(MAX_ITERATIONS):
        observed = await observe(store, name, record, ops)
        now = utcnow()
        decision = drainplan.plan(
            name,
            current=current,
            desired=desired,
            record=record,
            settings=settings,
            observed=observed,
            now=now,
        )
        if decision.action is Action.NOOP:
            return DriveResult(current, record, None, transferred)
        if decision.action is Action.WAIT:
            return DriveResult(current, record, decision.requeue_after, transferred)
        log.info(
            "%s: %s %s (%s)",
            name,
            decision.action.value,
            list(decision.ordinals) or decision.statefulset_replicas,
            decision.reason,
        )
        gate.check()  # a replica paused by peering takes no further step
        current_before = current
        moved = await execute(decision, store=store, name=name, record=record, ops=ops)
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
