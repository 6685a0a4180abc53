"""Scale planning: the scale-down drain protocol as a pure state machine.

The driver (`driver.py`) observes (StatefulSet size, registry, pods), calls `plan`, carries
out the one action the `DrainDecision` names and, only if that succeeded, persists
`DrainDecision.record` as `.status.scaleDown`; then it observes and plans again, until the
action is WAIT or NOOP.
Every action is idempotent, and the record is written *before* anything it would have to
undo (the Fencing record precedes fencing), so an operator restarted at any point resumes
from the record and neither loses nor double-assigns work.

Phases of a drain from N to M < N replicas (departing ordinals M..N-1):

    Fencing ──FENCE──▶ WaitingInFlight ──(quiet | RELEASE_IN_FLIGHT)──▶ Transferring

The fence carries a grace — `releaseGraceSeconds` with `inFlight: release`, `timeoutSeconds`
with `wait` — for which the departing agents may finish in-flight work (they claim nothing
new from the instant of the fence). WaitingInFlight ends when that work is done (the agents
acknowledge by quiescing), when every agent still holding work is dead (lease expired), or
when the grace (plus a margin for the acknowledgement) or the timeout runs out.
    Transferring ──TRANSFER…──▶ (no work left) ──SHRINK──▶ Shrinking
    Shrinking ──(departing pods gone)──▶ Sweeping ──SWEEP──▶ Done

A change of spec.replicas before the StatefulSet is shrunk retargets the drain: occurrences
that no longer depart are un-fenced (UNFENCE), newly departing ones are fenced, and a
scale back to N or more cancels it (phase Cancelled). Once the StatefulSet has been shrunk
the drain runs to Done first; a scale-up after that is an ordinary scale-up, so the registry
must let a retired occurrence id register again.

Scaling to 0: ordinal 0 is not drained. Ordinals 1..N-1 are drained onto `<name>-0`, then
the StatefulSet goes to 0; the work stays parked on `<name>-0`, the first pod to return.

Outside a drain, occurrences that will run (ordinals below spec.replicas) but are still
fenced — a drain bypassed with the skip-drain annotation while the database was down left
them so — are un-fenced before anything else, so returning pods are not unready forever.

Fencing by hand (`spec.fencedOccurrences`, any ordinal, not only the highest): with the
StatefulSet at its size and no drain under way, a fenced occurrence still active in the
registry is fenced (FENCE, with the drain's grace); once it is quiet (its in-flight work done
or released and acknowledged) or dead, its pending and active work moves to the occurrences
that are not fenced (EVACUATE); while it is still busy the planner waits. A user's fence is
never un-fenced by the planner, and never receives work (`survivor_ids`): only removing it
from the spec un-fences it (as a stale fence). With every running occurrence fenced, work
cannot go anywhere: it stays where it is.

The two smaller state machines of the StatefulSet size live beside this one: the skip-drain
bypass (`bypass.py`) and the rebalance after a scale-up (`rebalance.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from occurrence_store import OccurrenceId

from ..model.naming import occurrence_id
from ..model.spec import DrainSpec, InFlightMode, RecoveryMode, RecoverySpec
from ..model.status import (
    ACTIVE_SCALE_DOWN_PHASES,
    ScaleDownPhase,
    ScaleDownStatus,
)
from ..model.timeutil import format_time, parse_time

POLL_SECONDS = 5.0
"""Longest wait before re-checking a drain that is waiting on agents or pods."""
ACK_MARGIN_SECONDS = 5.0
"""After the fence's grace, how long the agents get to release what is left and acknowledge
before the operator releases it itself."""


class DrainAction(StrEnum):
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
    EVACUATE = "Evacuate"
    """Move the pending/active tasks of the fenced `ordinals` (quiet or dead) to
    `survivors`; the StatefulSet and the record stay as they are."""


@dataclass(frozen=True)
class Observations:
    """What the handler measured just before planning."""

    in_flight_quiet: bool = False
    """Departing occurrences hold no in-flight (PROCESSING) work, or have acknowledged the
    fence (quiesced: theirs is done or released)."""
    unresponsive: bool = False
    """Every departing occurrence that still holds in-flight work is dead: its lease expired
    (or it never registered). Nothing of it will finish; waiting longer is pointless."""
    departing_work: int | None = None
    """Pending/active tasks still owned by departing occurrences; None if not measured."""
    departing_pods: int = 0
    """Pods of departing ordinals that still exist."""
    stale_fences: tuple[int, ...] = ()
    """Outside a drain: ordinals below spec.replicas that the registry still has fenced
    although the spec does not fence them."""
    fences_due: tuple[int, ...] = ()
    """Outside a drain: ordinals below spec.replicas the spec fences that the registry does
    not (yet)."""
    fenced_to_evacuate: tuple[int, ...] = ()
    """Outside a drain: fenced ordinals that hold pending/active work and are quiet or dead."""
    fenced_busy: bool = False
    """Outside a drain: a fenced ordinal still finishes (or is to release) in-flight work."""


@dataclass(frozen=True)
class DrainSettings:
    timeout_seconds: int = 120
    in_flight: InFlightMode = "release"
    rebalance_on_scale_up: bool = False
    release_grace_seconds: int = 10
    recovery: RecoveryMode = "retry"
    fenced: frozenset[int] = frozenset()
    """Ordinals `spec.fencedOccurrences` takes out of work."""

    @classmethod
    def from_spec(cls, drain: DrainSpec, recovery: RecoverySpec | None = None,
                  fenced: frozenset[int] = frozenset()) -> DrainSettings:
        return cls(
            timeout_seconds=drain.timeout_seconds,
            in_flight=drain.in_flight,
            rebalance_on_scale_up=drain.rebalance_on_scale_up,
            release_grace_seconds=drain.release_grace_seconds,
            recovery=(recovery or RecoverySpec()).in_flight,
            fenced=fenced,
        )

    @property
    def grace_seconds(self) -> int:
        """How long fenced occurrences may finish in-flight work."""
        if self.in_flight == "release":
            return min(self.release_grace_seconds, self.timeout_seconds)
        return self.timeout_seconds


@dataclass(frozen=True)
class DrainDecision:
    """The next action, and the `.status.scaleDown` to persist once it succeeded."""

    action: DrainAction
    record: ScaleDownStatus | None
    ordinals: tuple[int, ...] = ()
    survivors: tuple[OccurrenceId, ...] = ()
    statefulset_replicas: int | None = None
    requeue_after: float | None = None
    reason: str = ""
    grace_seconds: float | None = None
    """On a FENCE: how long the fenced occurrences may finish in-flight work."""


def departing_ordinals(current: int, desired: int) -> tuple[int, ...]:
    """Ordinals whose work must move: desired..current-1, never ordinal 0 (scale to 0)."""
    return tuple(range(max(desired, 1), current))


def survivor_ids(name: str, desired: int, fenced: frozenset[int] = frozenset()
                 ) -> tuple[OccurrenceId, ...]:
    """Occurrences receiving the work: `<name>-0..M-1` (`<name>-0` alone when M is 0) but
    the fenced ones — all of them when every one is fenced (the work must go somewhere)."""
    every = range(max(desired, 1))
    return tuple(occurrence_id(name, k) for k in ([k for k in every if k not in fenced]
                                                  or every))


def is_active(record: ScaleDownStatus | None) -> bool:
    return record is not None and record.phase in ACTIVE_SCALE_DOWN_PHASES


def draining_count(record: ScaleDownStatus | None) -> int:
    """`.status.drainingReplicas`."""
    return len(record.ordinals) if record is not None and is_active(record) else 0


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
) -> DrainDecision:
    """Decide the next step of reconciling the StatefulSet size with spec.replicas.

    `current` is the StatefulSet's spec.replicas (None if it does not exist yet), `desired`
    the AgentDeployment's spec.replicas, `record` the persisted `.status.scaleDown`.
    """
    if desired < 0:
        raise ValueError(f"desired replicas must be >= 0, got {desired}")
    if record is not None and is_active(record):
        return _continue(name, desired, current, record, settings, observed, now)
    if observed.stale_fences:
        return DrainDecision(
            DrainAction.UNFENCE,
            record,
            ordinals=observed.stale_fences,
            reason="un-fence occurrences left fenced outside a drain (a bypassed drain)",
        )
    if current is None:
        return DrainDecision(
            DrainAction.SCALE, record, statefulset_replicas=desired, reason="create StatefulSet"
        )
    if desired > current:
        return DrainDecision(
            DrainAction.SCALE,
            record,
            statefulset_replicas=desired,
            reason=f"scale up from {current} to {desired}",
        )
    if desired == current:
        return _fences(name, desired, record, settings, observed)
    departing = departing_ordinals(current, desired)
    if not departing:
        return DrainDecision(
            DrainAction.SCALE,
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
    return DrainDecision(
        DrainAction.ADVANCE, started, ordinals=departing, reason="scale-down requested"
    )


def _fences(name: str, desired: int, record: ScaleDownStatus | None, settings: DrainSettings,
            observed: Observations) -> DrainDecision:
    """At size, no drain under way: the occurrences the spec fences are fenced and emptied."""
    if observed.fences_due:
        return DrainDecision(
            DrainAction.FENCE, record, ordinals=observed.fences_due,
            grace_seconds=settings.grace_seconds, reason="fence (spec.fencedOccurrences)")
    survivors = survivor_ids(name, desired, settings.fenced)
    movable = tuple(k for k in observed.fenced_to_evacuate
                    if occurrence_id(name, k) not in survivors)
    if movable:
        return DrainDecision(
            DrainAction.EVACUATE, record, ordinals=movable, survivors=survivors,
            reason="move the fenced occurrences' work to the others")
    if observed.fenced_busy:
        return DrainDecision(
            DrainAction.WAIT, record, requeue_after=POLL_SECONDS,
            reason="fenced occurrences finishing in-flight work")
    return DrainDecision(DrainAction.NOOP, record)


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
) -> DrainDecision:
    phase: ScaleDownPhase = record.phase
    ordinals = tuple(record.ordinals)
    survivors = survivor_ids(name, record.to_replicas, settings.fenced)
    if phase in ("Fencing", "WaitingInFlight", "Transferring") and desired != record.to_replicas:
        return _retarget(record, desired, now)

    if phase == "Fencing":
        return DrainDecision(
            DrainAction.FENCE,
            _with(record, phase="WaitingInFlight"),
            ordinals=ordinals,
            grace_seconds=settings.grace_seconds,
            reason="fence departing occurrences",
        )

    if phase == "WaitingInFlight":
        return _wait_in_flight(record, settings, observed, now)

    if phase == "Transferring":
        if observed.departing_work == 0:
            return DrainDecision(
                DrainAction.SHRINK,
                _with(record, phase="Shrinking"),
                ordinals=ordinals,
                statefulset_replicas=record.to_replicas,
                reason=f"work moved; scale StatefulSet to {record.to_replicas}",
            )
        return DrainDecision(
            DrainAction.TRANSFER,
            record,
            ordinals=ordinals,
            survivors=survivors,
            reason="transfer departing work to survivors",
        )

    if phase == "Shrinking":
        if current != record.to_replicas:
            return DrainDecision(
                DrainAction.SHRINK,
                record,
                ordinals=ordinals,
                statefulset_replicas=record.to_replicas,
                reason=f"scale StatefulSet to {record.to_replicas}",
            )
        if observed.departing_pods > 0:
            return DrainDecision(
                DrainAction.WAIT,
                record,
                ordinals=ordinals,
                requeue_after=POLL_SECONDS,
                reason="waiting for departing pods to terminate",
            )
        return DrainDecision(
            DrainAction.ADVANCE,
            _with(record, phase="Sweeping"),
            ordinals=ordinals,
            reason="pods gone",
        )

    # Sweeping
    return DrainDecision(
        DrainAction.SWEEP,
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


def _wait_in_flight(
    record: ScaleDownStatus, settings: DrainSettings, observed: Observations, now: datetime
) -> DrainDecision:
    """Fenced: until in-flight work is done or acknowledged, its holders dead, or time is up."""
    ordinals = tuple(record.ordinals)
    after = _with(record, phase="Transferring")
    if observed.in_flight_quiet:
        return DrainDecision(
            DrainAction.ADVANCE, after, ordinals=ordinals, reason="in-flight work done"
        )
    if observed.unresponsive:
        return DrainDecision(
            DrainAction.RELEASE_IN_FLIGHT,
            _with(after, message="in-flight work of dead occurrences (lease expired) released"),
            ordinals=ordinals,
            reason="departing occurrences holding in-flight work are dead: release it",
        )
    elapsed = (now - parse_time(record.started_at)).total_seconds()
    if settings.in_flight == "release":
        limit = settings.grace_seconds + ACK_MARGIN_SECONDS
        why = f"the {settings.grace_seconds}s release grace (not acknowledged)"
    else:
        limit = settings.timeout_seconds
        why = f"the {settings.timeout_seconds}s drain timeout"
    remaining = limit - elapsed
    if remaining <= 0:
        return DrainDecision(
            DrainAction.RELEASE_IN_FLIGHT,
            _with(after, message=f"in-flight work released after {why}"),
            ordinals=ordinals,
            reason=f"in-flight work back to pending after {why}",
        )
    return DrainDecision(
        DrainAction.WAIT,
        record,
        ordinals=ordinals,
        requeue_after=min(POLL_SECONDS, remaining),
        reason="waiting for in-flight work to finish or be acknowledged",
    )


def _retarget(record: ScaleDownStatus, desired: int, now: datetime) -> DrainDecision:
    """spec.replicas changed while the drain had not shrunk the StatefulSet yet."""
    old = tuple(record.ordinals)
    if desired >= record.from_replicas:
        return DrainDecision(
            DrainAction.UNFENCE,
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
        return DrainDecision(
            DrainAction.ADVANCE, _with(record, **changes), ordinals=new, reason="drain widened"
        )
    if no_longer:
        return DrainDecision(
            DrainAction.UNFENCE,
            _with(record, **changes),
            ordinals=no_longer,
            reason="drain narrowed",
        )
    return DrainDecision(
        DrainAction.ADVANCE, _with(record, **changes), ordinals=new, reason="drain target"
    )
