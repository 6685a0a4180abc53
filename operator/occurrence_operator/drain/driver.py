"""Carries out `planner` decisions: observe, plan, act, persist — until WAIT or NOOP.

The planner is pure; this module is the only place that turns its actions into registry
writes, transfers and StatefulSet size changes (through `DrainPort`, the Kubernetes side:
`cluster.KubeDrainPort`). It also carries out the skip-drain bypass (`bypass`) and the
rebalance after a scale-up (`rebalance`). Each action is idempotent, and the new
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
from dataclasses import dataclass
from typing import Protocol

from occurrence_store import (
    TRANSFERABLE_TASK_STATUSES,
    AgentId,
    InFlightPolicy,
    InFlightRecovery,
    OccurrenceId,
    OccurrenceState,
    Store,
    ThoughtStatus,
)

from ..kube import may_act
from ..kube.events import EventType
from ..model.naming import occurrence_id, ordinal_of
from ..model.status import RebalanceStatus, ScaleDownStatus
from ..model.timeutil import parse_time, utcnow
from ..render.statefulset import StatefulSetSize
from . import bypass as skip_drain
from . import planner
from . import rebalance as rebalancing
from .planner import DrainAction, DrainDecision, DrainSettings, Observations
from .rebalance import RebalanceAction

log = logging.getLogger(__name__)

MAX_ITERATIONS = 32
"""Plan/act rounds per reconcile; a drain needs about 8, more means something flaps."""
LOCK_WAIT_SECONDS = 2.0
"""How long a step waits for another operator's step on the same AgentDeployment."""


class DrainPort(Protocol):
    """The Kubernetes side of a drain (`cluster.KubeDrainPort`; a fake in unit tests)."""

    async def scale(self, replicas: int) -> None:
        """Set the StatefulSet's spec.replicas; create the StatefulSet if there is none."""

    async def persist(self, record: ScaleDownStatus | None) -> None:
        """Write `.status.scaleDown` (and `.status.drainingReplicas`)."""

    async def persist_rebalance(self, record: RebalanceStatus) -> None:
        """Write `.status.rebalance`."""

    async def reload(self) -> ScaleDownStatus | None:
        """`.status.scaleDown` as persisted now."""

    async def departing_pods(self, ordinals: tuple[int, ...]) -> int:
        """How many pods of these ordinals still exist."""

    async def event(self, type_: EventType, reason: str, message: str) -> None:
        """Post an Event on the AgentDeployment now."""

    def queue_event(self, type_: EventType, reason: str, message: str) -> None:
        """Queue an Event on the AgentDeployment, posted at the end of the pass."""

    def transferred(self, tasks: int) -> None:
        """Count tasks moved to survivors (metrics)."""

    def drain_finished(self, seconds: float) -> None:
        """Count a drain that reached Done, and how long it took (metrics)."""


@dataclass
class DriveResult:
    current: int | None
    """StatefulSet spec.replicas after the actions."""
    record: ScaleDownStatus | None
    requeue_after: float | None = None
    transferred: int = 0


async def observe(
    store: Store, name: str, record: ScaleDownStatus | None, port: DrainPort, *,
    desired: int, agent_id: AgentId, fenced: frozenset[int] = frozenset(),
) -> Observations:
    """Measure what the planner needs: the active drain's departing occurrences, or, outside a
    drain, the fences the registry has that the spec does not (stale) and the other way
    round (due), and the fenced occurrences' work."""
    if not planner.is_active(record):
        rows = await store.registry.list(state=OccurrenceState.DRAINING, agent_id=agent_id)
        draining = {k for k in (ordinal_of(o.occurrence_id, name) for o in rows)
                    if k is not None and k < max(desired, 1)}
        stale = sorted(k for k in draining if k not in fenced)
        wanted = sorted(k for k in fenced if k < desired)
        movable: list[int] = []
        busy = False
        for k in (k for k in wanted if k in draining):
            work, quiet, dead = await _occupancy(store, name, k)
            if quiet or dead:
                movable += [k] if work else []
            else:
                busy = True
        return Observations(stale_fences=tuple(stale),
                            fences_due=tuple(k for k in wanted if k not in draining),
                            fenced_to_evacuate=tuple(movable), fenced_busy=busy)
    assert record is not None
    ordinals = tuple(record.ordinals)
    work = 0
    quiet = True
    dead = True
    for k in ordinals:
        held, quiet_k, dead_k = await _occupancy(store, name, k)
        work += held
        if not quiet_k:
            quiet = False
            dead = dead and dead_k
    pods = await port.departing_pods(ordinals) if record.phase in ("Shrinking", "Sweeping") else 0
    return Observations(in_flight_quiet=quiet, unresponsive=not quiet and dead,
                        departing_work=work, departing_pods=pods)


async def _occupancy(store: Store, name: str, ordinal: int) -> tuple[int, bool, bool]:
    """(unfinished tasks — pending, active, deferred —, quiet, dead) of an occurrence
    leaving work (departing or fenced): quiet when it holds no
    in-flight (PROCESSING) work or acknowledged the fence, dead when its lease expired (or it
    never registered)."""
    occ = occurrence_id(name, ordinal)
    scoped = store.scope(occ)
    work = sum([await scoped.count_tasks(status) for status in TRANSFERABLE_TASK_STATUSES])
    if await scoped.count_thoughts(ThoughtStatus.PROCESSING) == 0:
        return work, True, False
    row = await store.registry.get(occ)
    if row is not None and row.quiesced:
        return work, True, False
    return work, False, row is None or row.lease_expired()


async def _move(
    store: Store, name: str, ordinals: tuple[int, ...], survivors: tuple[OccurrenceId, ...],
    reason: str, recovery: InFlightRecovery,
) -> int:
    moved = 0
    for k in ordinals:
        may_act.check()
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
    decision: DrainDecision,
    *,
    store: Store,
    name: str,
    record: ScaleDownStatus | None,
    port: DrainPort,
    settings: DrainSettings,
    current: int | None,
) -> int:
    """Carry out one action; returns the number of tasks it moved. `current` is the
    StatefulSet's spec.replicas before the action (None: there is no StatefulSet yet)."""
    action = decision.action
    recovery = InFlightRecovery(settings.recovery)
    if action in (DrainAction.SCALE, DrainAction.SHRINK):
        replicas = decision.statefulset_replicas
        assert replicas is not None
        intent = rebalancing.rebalance_intent(settings, current, replicas, utcnow())
        if action is DrainAction.SCALE and intent is not None:
            # intent first (like status.scaleDown): a restarted operator still rebalances
            await port.persist_rebalance(intent)
        await port.scale(replicas)
        return 0
    if action is DrainAction.FENCE:
        for k in decision.ordinals:
            await store.registry.set_state(occurrence_id(name, k), OccurrenceState.DRAINING,
                                           grace_seconds=decision.grace_seconds)
        return 0
    if action is DrainAction.UNFENCE:
        for k in decision.ordinals:
            if k not in settings.fenced:  # a user's fence outlives a cancelled drain
                await store.registry.set_state(occurrence_id(name, k), OccurrenceState.ACTIVE)
        return 0
    if action is DrainAction.EVACUATE:
        return await _move(store, name, decision.ordinals, decision.survivors,
                           "fenced occurrence", recovery)
    target = decision.record or record
    assert target is not None
    survivors = decision.survivors or planner.survivor_ids(name, target.to_replicas,
                                                           settings.fenced)
    if action in (DrainAction.RELEASE_IN_FLIGHT, DrainAction.TRANSFER):
        return await _move(store, name, decision.ordinals, survivors, "scale-down drain",
                           recovery)
    if action is DrainAction.SWEEP:
        moved = await _move(store, name, decision.ordinals, survivors, "scale-down sweep",
                            recovery)
        for k in decision.ordinals:
            await store.registry.set_state(occurrence_id(name, k), OccurrenceState.RETIRED)
        return moved
    return 0  # ADVANCE, NOOP, WAIT: no side effect


async def drive(
    *,
    name: str,
    store: Store,
    settings: DrainSettings,
    desired: int,
    current: int | None,
    record: ScaleDownStatus | None,
    port: DrainPort,
    agent_id: AgentId,
) -> DriveResult:
    """Plan and act until the planner waits or has nothing left to do."""
    transferred = 0
    look_again: float | None = None
    """After a fence or an evacuation: work may still trickle in to a fenced occurrence until
    its pod leaves the Service's endpoints, so look again shortly (once nothing moved, the
    resync is enough)."""
    for _ in range(MAX_ITERATIONS):
        decision = await _plan(store, name, settings, desired, current, record, port, agent_id)
        if decision.action is DrainAction.NOOP:
            return DriveResult(current, record, look_again, transferred)
        if decision.action is DrainAction.WAIT:
            return DriveResult(current, record, decision.requeue_after, transferred)
        async with store.locks.hold(f"drain:{agent_id}", wait_seconds=LOCK_WAIT_SECONDS) as held:
            if not held:
                log.warning("%s: another operator holds the drain lock of %s; retrying later",
                            name, agent_id)
                return DriveResult(current, record, planner.POLL_SECONDS, transferred)
            # under the lock: the record as the last step (maybe another operator's) left it
            record = await port.reload()
            decision = await _plan(store, name, settings, desired, current, record, port,
                                   agent_id)
            if decision.action in (DrainAction.NOOP, DrainAction.WAIT):
                continue
            log.info(
                "%s: %s %s (%s)",
                name,
                decision.action.value,
                list(decision.ordinals) or decision.statefulset_replicas,
                decision.reason,
            )
            may_act.check()  # a replica paused by peering takes no further step
            current_before = current
            moved = await execute(decision, store=store, name=name, record=record, port=port,
                                  settings=settings, current=current)
            if decision.action in (DrainAction.SCALE, DrainAction.SHRINK):
                current = decision.statefulset_replicas
            new_record = decision.record
            if moved and new_record is not None:
                new_record = planner.record_transferred(new_record, moved)
                transferred += moved
                port.transferred(moved)
            before = record
            if new_record != record:
                await port.persist(new_record)
                await _milestone(port, record, new_record, decision, moved)
                record = new_record
            elif decision.action is DrainAction.SCALE and current_before is not None:
                await port.event("Normal", "Scaled", decision.reason)
            await _fence_milestone(port, name, before, decision, moved)
            if decision.action in (DrainAction.FENCE, DrainAction.EVACUATE) and \
                    not planner.is_active(before):
                look_again = planner.POLL_SECONDS
    log.warning("%s: drain planning did not settle in %d rounds", name, MAX_ITERATIONS)
    return DriveResult(current, record, planner.POLL_SECONDS, transferred)


async def _fence_milestone(port: DrainPort, name: str, before: ScaleDownStatus | None,
                           decision: DrainDecision, moved: int) -> None:
    """The events of a fence by hand (a step taken outside a drain)."""
    if planner.is_active(before):
        return
    ids = ", ".join(occurrence_id(name, k) for k in decision.ordinals)
    if decision.action is DrainAction.FENCE:
        await port.event("Normal", "OccurrencesFenced",
                         f"fenced {ids} (spec.fencedOccurrences): they claim no new work")
    elif decision.action is DrainAction.EVACUATE:
        if moved:
            port.transferred(moved)
        await port.event("Normal", "FencedWorkMoved",
                         f"moved {moved} tasks from fenced {ids} to the other occurrences")
    elif decision.action is DrainAction.UNFENCE:
        await port.event("Normal", "OccurrencesUnfenced", f"un-fenced {ids}")


async def _plan(
    store: Store, name: str, settings: DrainSettings, desired: int, current: int | None,
    record: ScaleDownStatus | None, port: DrainPort, agent_id: AgentId,
) -> DrainDecision:
    observed = await observe(store, name, record, port, desired=desired, agent_id=agent_id,
                             fenced=settings.fenced)
    return planner.plan(name, current=current, desired=desired, record=record,
                        settings=settings, observed=observed, now=utcnow())


async def _milestone(
    port: DrainPort,
    before: ScaleDownStatus | None,
    after: ScaleDownStatus | None,
    decision: DrainDecision,
    moved: int,
) -> None:
    if after is None:
        return
    phase_changed = (
        before is None or before.phase != after.phase or before.started_at != after.started_at
    )
    if moved:
        await port.event(
            "Normal",
            "TasksTransferred",
            f"moved {moved} tasks from ordinals {list(decision.ordinals)} to survivors",
        )
    if not phase_changed:
        return
    if after.phase == "Fencing":
        await port.event("Normal", "DrainStarted", after.message or "scale-down drain started")
    elif after.phase == "Shrinking":
        await port.event(
            "Normal",
            "ScalingDown",
            f"departing work moved ({after.transferred} tasks); StatefulSet scaled to "
            f"{after.to_replicas}",
        )
    elif after.phase == "Done":
        seconds = (utcnow() - parse_time(after.started_at)).total_seconds()
        port.drain_finished(seconds)
        await port.event("Normal", "DrainComplete", after.message or "drain complete")
    elif after.phase == "Cancelled":
        await port.event("Normal", "DrainCancelled", after.message or "drain cancelled")
    else:
        await port.event("Normal", f"Drain{after.phase}", decision.reason or after.phase)


# -- the skip-drain bypass and the rebalance after a scale-up -----------------------------


async def bypass(port: DrainPort, record: ScaleDownStatus) -> ScaleDownStatus:
    """Shrink to the drain's target at once, without moving the departing work (the
    database is unreachable and the user set the skip-drain annotation); record the drain
    Done. Returns the new record."""
    done = skip_drain.bypassed(record)
    await port.scale(record.to_replicas)
    await port.persist(done)
    port.queue_event("Warning", "DrainBypassed", done.message or "drain bypassed")
    return done


@dataclass
class RebalanceResult:
    record: RebalanceStatus | None
    requeue_after: float | None = None
    moved: int = 0


async def rebalance(
    *,
    name: str,
    store: Store,
    port: DrainPort,
    record: RebalanceStatus | None,
    desired: int,
    drain_active: bool,
    statefulset: StatefulSetSize,
    fenced: frozenset[int] = frozenset(),
) -> RebalanceResult:
    """One step of the rebalance recorded by a scale-up (`rebalance.plan_rebalance`)."""
    decision = rebalancing.plan_rebalance(
        name, record, desired=desired, drain_active=drain_active, statefulset=statefulset,
        fenced=fenced
    )
    if decision.action is RebalanceAction.WAIT:
        return RebalanceResult(record, decision.requeue_after)
    if decision.action is RebalanceAction.CANCEL:
        assert decision.record is not None
        await port.persist_rebalance(decision.record)
        return RebalanceResult(decision.record)
    if decision.action is RebalanceAction.NOOP:
        return RebalanceResult(record)
    assert record is not None
    may_act.check()
    moved = await store.transfers.rebalance(list(decision.occurrences),
                                            reason="scale-up rebalance")
    done, total = rebalancing.rebalance_done(record, moved, utcnow())
    await port.persist_rebalance(done)
    port.transferred(total)
    port.queue_event("Normal", "Rebalanced", done.message or "rebalanced")
    return RebalanceResult(done, moved=total)
