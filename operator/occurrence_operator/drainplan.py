"""Scale planning: the scale-down drain protocol as a pure state machine.

The handler observes (StatefulSet size, registry, pods), calls `plan`, carries out the one
action the `Decision` names and, only if that succeeded, persists `Decision.record` as
`.status.scaleDown`; then it observes and plans again, until the action is WAIT or NOOP.
Every action is idempotent, and the record is written *before* anything it would have to
undo (the Fencing record precedes fencing), so an operator restarted at any point resumes
from the record and neither loses nor double-assigns work.

Phases of a drain from N to M < N replicas (departing ordinals M..N-1):

    Fencing ──FENCE──▶ WaitingInFlight ──(quiet | RELEASE_IN_FLIGHT)──▶ Transferring
    Transferring ──TRANSFER…──▶ (no work left) ──SHRINK──▶ Shrinking
    Shrinking ──(departing pods gone)──▶ Sweeping ──SWEEP──▶ Done

A change of spec.replicas before the StatefulSet is shrunk retargets the drain: occurrences
that no longer depart are un-fenced (UNFENCE), newly departing ones are fenced, and a
scale back to N or more cancels it (phase Cancelled). Once the StatefulSet has been shrunk
the drain runs to Done first; a scale-up after that is an ordinary scale-up, so the registry
must let a retired occurrence id register again.

Scaling to 0: ordinal 0 is not drained. Ordinals 1..N-1 are drained onto `<name>-0`, then
the StatefulSet goes to 0; the work stays parked on `<name>-0`, the first pod to return.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from .naming import occurrence_id
from .spec import DrainSpec, InFlightMode
from .status import ACTIVE_SCALE_DOWN_PHASES, ScaleDownPhase, ScaleDownStatus
from .timeutil import format_time, parse_time

POLL_SECONDS = 5.0
"""Longest wait before re-checking a drain that is waiting on agents or pods."""


class Action(StrEnum):
    NOOP = "Noop"
    """Nothing to do."""
    SCALE = "Scale"
    """Patch StatefulSet replicas to `statefulset_replicas` (create, scale up, 1 → 0)."""
    ADVANCE = "Advance"
    """No side effect: persist `record`."""
    FENCE = "Fence"
    """Mark `ordinals` draining in the registry: agents stop claiming work, fail readiness."""
    UNFENCE = "Unfence"
    """Mark `ordinals` active again: they stay after all."""
    WAIT = "Wait"
    """Re-observe and plan again after `requeue_after` seconds."""
    RELEASE_IN_FLIGHT = "ReleaseInFlight"
    """Put the in-flight (PROCESSING) work of `ordinals` back to pending."""
    TRANSFER = "Transfer"
    """Move the pending/active tasks (with thoughts) of `ordinals` to `survivors`, balanced;
    add the count to the record with `record_transferred`."""
    SHRINK = "Shrink"
    """Patch StatefulSet replicas to `statefulset_replicas` (the drain's target)."""
    SWEEP = "Sweep"
    """Transfer stragglers of `ordinals` to `survivors` once more, then mark them retired."""


@dataclass(frozen=True)
class Observations:
    """What the handler measured just before planning."""

    in_flight_quiet: bool = False
    """Departing occurrences hold no in-flight (PROCESSING) work."""
    departing_work: int | None = None
    """Pending/active tasks still owned by departing occurrences; None if not measured."""
    departing_pods: int = 0
    """Pods of departing ordinals that still exist."""


@dataclass(frozen=True)
class DrainSettings:
    timeout_seconds: int = 120
    in_flight: InFlightMode = "release"
    rebalance_on_scale_up: bool = False

    @classmethod
    def from_spec(cls, drain: DrainSpec) -> DrainSettings:
        return cls(
            timeout_seconds=drain.timeout_seconds,
            in_flight=drain.in_flight,
            rebalance_on_scale_up=drain.rebalance_on_scale_up,
        )


@dataclass(frozen=True)
class Decision:
    """The next action, and the `.status.scaleDown` to persist once it succeeded."""

    action: Action
    record: ScaleDownStatus | None
    ordinals: tuple[int, ...] = ()
    survivors: tuple[str, ...] = ()
    statefulset_replicas: int | None = None
    requeue_after: float | None = None
    rebalance: bool = False
    reason: str = ""
    new_ordinals: tuple[int, ...] = field(default=())
    """On a scale-up: the ordinals being added (rebalance targets)."""


def departing_ordinals(current: int, desired: int) -> tuple[int, ...]:
    """Ordinals whose work must move: desired..current-1, never ordinal 0 (scale to 0)."""
    return tuple(range(max(desired, 1), current))


def survivor_ids(name: str, desired: int) -> tuple[str, ...]:
    """Occurrences receiving the work: `<name>-0..M-1`, or `<name>-0` alone when M is 0."""
    return tuple(occurrence_id(name, k) for k in range(max(desired, 1)))


def is_active(record: ScaleDownStatus | None) -> bool:
    return record is not None and record.phase in ACTIVE_SCALE_DOWN_PHASES


def draining_count(record: ScaleDownStatus | None) -> int:
    """`.status.drainingReplicas`."""
    return len(record.ordinals) if record is not None and is_active(record) else 0


def replicas_to_render(current: int | None, desired: int, record: ScaleDownStatus | None) -> int:
    """StatefulSet size to use when (re)applying the StatefulSet for any other reason.

    Never the trigger of a scale-down: departing pods stay until their work has moved.
    """
    if record is not None and is_active(record):
        shrunk = record.phase in ("Shrinking", "Sweeping")
        return record.to_replicas if shrunk else record.from_replicas
    return desired if current is None else current


def record_transferred(record: ScaleDownStatus, moved: int) -> ScaleDownStatus:
    """The record after a TRANSFER or SWEEP that moved `moved` tasks."""
    return record.model_copy(update={"transferred": record.transferred + moved})


def _with(record: ScaleDownStatus, **changes: object) -> ScaleDownStatus:
    return record.model_copy(update=changes)


def plan(
    name: str,
    *,
    current: int | None,
    desired: int,
    record: ScaleDownStatus | None,
    settings: DrainSettings,
    observed: Observations,
    now: datetime,
) -> Decision:
    """Decide the next step of reconciling the StatefulSet size with spec.replicas.

    `current` is the StatefulSet's spec.replicas (None if it does not exist yet), `desired`
    the AgentDeployment's spec.replicas, `record` the persisted `.status.scaleDown`.
    """
    if desired < 0:
        raise ValueError(f"desired replicas must be >= 0, got {desired}")
    if record is not None and is_active(record):
        return _continue(name, desired, current, record, settings, observed, now)
    if current is None:
        return Decision(
            Action.SCALE, record, statefulset_replicas=desired, reason="create StatefulSet"
        )
    if desired > current:
        return Decision(
            Action.SCALE,
            record,
            statefulset_replicas=desired,
            rebalance=settings.rebalance_on_scale_up and current > 0,
            new_ordinals=tuple(range(current, desired)),
            reason=f"scale up from {current} to {desired}",
        )
    if desired == current:
        return Decision(Action.NOOP, record)
    departing = departing_ordinals(current, desired)
    if not departing:
        return Decision(
            Action.SCALE,
            record,
            statefulset_replicas=desired,
            reason="scale 1 to 0: the work stays parked on ordinal 0",
        )
    started = ScaleDownStatus.model_validate(
        {
            "phase": "Fencing",
            "fromReplicas": current,
            "toReplicas": desired,
            "ordinals": list(departing),
            "startedAt": format_time(now),
            "transferred": 0,
            "message": f"draining ordinals {_span(departing)} before scaling to {desired}",
        }
    )
    # Persist the intent before fencing anything, so a restart can always undo or finish it.
    return Decision(Action.ADVANCE, started, ordinals=departing, reason="scale-down requested")


def _span(ordinals: tuple[int, ...]) -> str:
    return f"{ordinals[0]}..{ordinals[-1]}" if len(ordinals) > 1 else str(ordinals[0])


def _continue(
    name: str,
    desired: int,
    current: int | None,
    record: ScaleDownStatus,
    settings: DrainSettings,
    observed: Observations,
    now: datetime,
) -> Decision:
    phase: ScaleDownPhase = record.phase
    ordinals = tuple(record.ordinals)
    survivors = survivor_ids(name, record.to_replicas)
    if phase in ("Fencing", "WaitingInFlight", "Transferring") and desired != record.to_replicas:
        return _retarget(record, desired, now)

    if phase == "Fencing":
        return Decision(
            Action.FENCE,
            _with(record, phase="WaitingInFlight"),
            ordinals=ordinals,
            reason="fence departing occurrences",
        )

    if phase == "WaitingInFlight":
        after = _with(record, phase="Transferring")
        if observed.in_flight_quiet:
            return Decision(Action.ADVANCE, after, ordinals=ordinals, reason="in-flight work done")
        if settings.in_flight == "release":
            return Decision(
                Action.RELEASE_IN_FLIGHT,
                after,
                ordinals=ordinals,
                reason="inFlight=release: in-flight work back to pending",
            )
        elapsed = (now - parse_time(record.started_at)).total_seconds()
        remaining = settings.timeout_seconds - elapsed
        if remaining <= 0:
            return Decision(
                Action.RELEASE_IN_FLIGHT,
                _with(
                    after,
                    message=f"in-flight work released after the {settings.timeout_seconds}s "
                    "drain timeout",
                ),
                ordinals=ordinals,
                reason="drain timeout: in-flight work back to pending",
            )
        return Decision(
            Action.WAIT,
            record,
            ordinals=ordinals,
            requeue_after=min(POLL_SECONDS, remaining),
            reason="waiting for in-flight work",
        )

    if phase == "Transferring":
        if observed.departing_work == 0:
            return Decision(
                Action.SHRINK,
                _with(record, phase="Shrinking"),
                ordinals=ordinals,
                statefulset_replicas=record.to_replicas,
                reason=f"work moved; scale StatefulSet to {record.to_replicas}",
            )
        return Decision(
            Action.TRANSFER,
            record,
            ordinals=ordinals,
            survivors=survivors,
            reason="transfer departing work to survivors",
        )

    if phase == "Shrinking":
        if current != record.to_replicas:
            return Decision(
                Action.SHRINK,
                record,
                ordinals=ordinals,
                statefulset_replicas=record.to_replicas,
                reason=f"scale StatefulSet to {record.to_replicas}",
            )
        if observed.departing_pods > 0:
            return Decision(
                Action.WAIT,
                record,
                ordinals=ordinals,
                requeue_after=POLL_SECONDS,
                reason="waiting for departing pods to terminate",
            )
        return Decision(
            Action.ADVANCE, _with(record, phase="Sweeping"), ordinals=ordinals, reason="pods gone"
        )

    # Sweeping
    return Decision(
        Action.SWEEP,
        _with(
            record,
            phase="Done",
            message=f"scaled from {record.from_replicas} to {record.to_replicas}; "
            f"ordinals {_span(ordinals)} retired",
        ),
        ordinals=ordinals,
        survivors=survivors,
        reason="final sweep and retire",
    )


def _retarget(record: ScaleDownStatus, desired: int, now: datetime) -> Decision:
    """spec.replicas changed while the drain had not shrunk the StatefulSet yet."""
    old = tuple(record.ordinals)
    if desired >= record.from_replicas:
        return Decision(
            Action.UNFENCE,
            _with(
                record,
                phase="Cancelled",
                message=f"cancelled: replicas set to {desired} during the drain",
            ),
            ordinals=old,
            reason="scale-up during drain: un-fence",
        )
    new = departing_ordinals(record.from_replicas, desired)
    no_longer = tuple(k for k in old if k not in new)
    newly = tuple(k for k in new if k not in old)
    changes: dict[str, object] = {
        "to_replicas": desired,
        "ordinals": list(new),
        "message": f"retargeted to {desired} replicas: draining ordinals {_span(new)}",
    }
    if newly:
        # More occurrences depart: fence them and restart the in-flight wait for all.
        changes.update(phase="Fencing", started_at=format_time(now))
        return Decision(
            Action.ADVANCE, _with(record, **changes), ordinals=new, reason="drain widened"
        )
    if no_longer:
        return Decision(
            Action.UNFENCE, _with(record, **changes), ordinals=no_longer, reason="drain narrowed"
        )
    return Decision(Action.ADVANCE, _with(record, **changes), ordinals=new, reason="drain target")
