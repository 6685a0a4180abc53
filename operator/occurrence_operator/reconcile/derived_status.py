"""The AgentDeployment status a reconcile pass writes, derived purely from what it found.

`derive_status` turns the pass's findings (`StatusInputs`: migrations, StatefulSet, drain
record, occurrences, a database problem) into the conditions, the summary phase, the
status document and the Events of the condition transitions. The document is an
`AgentDeploymentStatus` (status.py, the same model the CRD schema is generated from),
serialized camelCase without unset fields (`StatusDocument.to_wire`). No I/O here: the
pass writes the document (only the fields that differ, `agd_object.status_patch`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from occurrence_store import Occurrence

from ..drain import draining_count, is_active
from ..kube.events import EventType
from ..model.conditions import (
    DEGRADED,
    DRAINING,
    MIGRATIONS_COMPLETE,
    MIGRATIONS_FAILED,
    PROGRESSING,
    READY,
    MigrationState,
    PhaseInputs,
    compute_phase,
    find_condition,
    set_condition,
)
from ..model.naming import ordinal_of
from ..model.pause import (
    PAUSED,
    REASON_PAUSED,
    REASON_RESUMED,
    REASON_UNKNOWN_VALUE,
    RECONCILE_ANNOTATION,
    paused_message,
)
from ..model.status import (
    AgentDeploymentStatus,
    AutoscalingStatus,
    Condition,
    ConditionStatus,
    LastMigration,
    OccurrenceStatus,
    Phase,
    RolloutStatus,
    ScaleDownStatus,
)
from ..render.statefulset import StatefulSetSize
from ..rollout import held_back

OCCURRENCE_ID_CONFLICT = "OccurrenceIdConflict"
AUTOSCALER_CONFLICT = "AutoscalerConflict"
DATABASE_UNAVAILABLE = "DatabaseUnavailable"

Event = tuple[EventType, str, str]
"""(type, reason, message) of an Event to post."""


@dataclass(frozen=True)
class Problem:
    """Why the database side of this pass could not be done (reason: a condition reason)."""

    reason: str
    message: str


@dataclass(frozen=True)
class Migration:
    """What the migrations step found (migrations.py)."""

    state: MigrationState
    reason: str = ""
    message: str = ""
    last: dict[str, Any] | None = None
    """`.status.lastMigration`: the last Job that succeeded."""


@dataclass
class ConditionSet:
    """The conditions of one pass, updated in place; transitions keep their time."""

    conditions: list[dict[str, Any]]
    generation: int | None
    now: datetime

    def set(self, type_: str, status: ConditionStatus, reason: str, message: str) -> None:
        self.conditions = set_condition(
            self.conditions,
            type_,
            status,
            reason,
            message,
            observed_generation=self.generation,
            now=self.now,
        )

    def has(self, type_: str) -> bool:
        return find_condition(self.conditions, type_) is not None

    def remove(self, type_: str) -> None:
        self.conditions = [c for c in self.conditions if c.get("type") != type_]

    def models(self) -> list[Condition]:
        return [Condition.model_validate(c) for c in self.conditions]


@dataclass(frozen=True)
class StatusInputs:
    """What a pass found, all `derive_status` depends on (besides the conditions)."""

    desired: int
    """spec.replicas"""
    selector: str
    migration: Migration
    sts: Mapping[str, Any] | None
    record: ScaleDownStatus | None
    occurrences: Sequence[Occurrence] | None = None
    problem: Problem | None = None
    autoscaling: AutoscalingStatus | None = None
    """The autoscaler's decision; None: spec.autoscaling is not set (the field is removed)."""
    autoscaler_conflict: str | None = None
    """Another autoscaler targets the AgentDeployment (Degraded/AutoscalerConflict)."""
    rollout: RolloutStatus | None = None
    """The canary rollout's record; None: `strategy: RollingUpdate` (the field is removed)."""
    fenced: int = 0
    """Occurrences below spec.replicas that `spec.fencedOccurrences` fences (their pods run
    but are not Ready, on purpose)."""


@dataclass(frozen=True)
class StatusDocument:
    status: AgentDeploymentStatus
    events: list[Event] = field(default_factory=list)
    removed: tuple[str, ...] = ()
    """Top-level status fields to delete (written as null)."""

    def to_wire(self) -> dict[str, Any]:
        return {**self.status.to_wire(), **dict.fromkeys(self.removed)}


def derive_status(
    inputs: StatusInputs, conditions: ConditionSet, *, before: Sequence[Mapping[str, Any]]
) -> StatusDocument:
    """Set every condition from `inputs` (in `conditions`) and build the full status."""
    sts = inputs.sts
    size = StatefulSetSize.of(sts)
    replicas, ready, updated = size.current, size.ready, size.updated
    migration, record, problem = inputs.migration, inputs.record, inputs.problem
    draining = is_active(record)

    _migration_conditions(conditions, migration)
    _draining_condition(conditions, record)
    _progressing_condition(conditions, inputs.rollout)

    if migration.state == "Failed":
        conditions.set(DEGRADED, "True", "MigrationsFailed", migration.message)
    elif problem is not None:
        conditions.set(DEGRADED, "True", problem.reason, problem.message)
    elif inputs.autoscaler_conflict is not None:
        conditions.set(DEGRADED, "True", AUTOSCALER_CONFLICT, inputs.autoscaler_conflict)
    else:
        conditions.set(DEGRADED, "False", "AsExpected", "all good")
    degraded = (migration.state == "Failed" or problem is not None
                or inputs.autoscaler_conflict is not None)

    desired = inputs.desired
    # a canary rollout holds the ordinals below its partition on the stable template
    stable_on_purpose = held_back(inputs.rollout)
    # fenced occurrences' pods run, not Ready on purpose (they may still be, for a moment)
    fenced = min(inputs.fenced, desired)
    all_there = (
        sts is not None
        and size.observed
        and size.replicas == desired
        and replicas == desired
        and desired - fenced <= ready <= desired
        and updated == desired - stable_on_purpose
    )
    ready_text = f"{ready}/{desired} occurrences ready" + (f", {fenced} fenced" if fenced else "")
    if problem is not None and problem.reason == OCCURRENCE_ID_CONFLICT:
        conditions.set(READY, "False", OCCURRENCE_ID_CONFLICT,
                       "its occurrence ids belong to another AgentDeployment")
    elif all_there and migration.state in ("Succeeded", "Disabled") and not draining:
        conditions.set(READY, "True", "AllOccurrencesReady", ready_text)
    else:
        why = (
            "MigrationsPending"
            if migration.state in ("Pending", "Running")
            else "MigrationsFailed"
            if migration.state == "Failed"
            else "Draining"
            if draining
            else "OccurrencesNotReady"
        )
        conditions.set(READY, "False", why, ready_text)

    phase = compute_phase(
        PhaseInputs(
            migration=migration.state,
            draining=draining,
            desired=desired,
            current=replicas,
            ready=ready,
            updated=updated,  # a canary rollout under way is Progressing, Ready or not
            degraded=degraded,
            fenced=fenced,
        )
    )
    status = AgentDeploymentStatus.from_fields(
        observed_generation=conditions.generation,
        replicas=replicas,
        ready_replicas=ready,
        draining_replicas=draining_count(record),
        fenced_replicas=fenced or None,
        backlog=None if inputs.occurrences is None else sum(
            o.pending_tasks + o.active_tasks for o in inputs.occurrences),
        selector=inputs.selector,
        phase=phase,
        conditions=conditions.models(),
        last_migration=(
            None if migration.last is None else LastMigration.model_validate(migration.last)
        ),
        scale_down=record,
        autoscaling=inputs.autoscaling,
        rollout=inputs.rollout,
        occurrences=(
            None
            if inputs.occurrences is None
            else [occurrence_row(o) for o in inputs.occurrences]
        ),
    )
    removed = tuple(name for name, value in (("autoscaling", inputs.autoscaling),
                                             ("rollout", inputs.rollout),
                                             ("fencedReplicas", fenced or None))
                    if value is None)
    return StatusDocument(status, transition_events(before, conditions.conditions),
                          removed=removed)


def paused_status(conditions: ConditionSet, *, before: Sequence[Mapping[str, Any]]
                  ) -> StatusDocument:
    """The status of a paused pass: the `Paused` condition and the phase, nothing else
    (the rest stays as the last pass before the pause left it). Set once: a paused object
    whose spec changes keeps its condition as it was, `observedGeneration` included, so that
    nothing is written while it stays paused."""
    if (find_condition(conditions.conditions, PAUSED) or {}).get("status") != "True":
        conditions.set(PAUSED, "True", REASON_PAUSED, paused_message())
    phase: Phase = "Paused"
    status = AgentDeploymentStatus.from_fields(conditions=conditions.models(), phase=phase)
    return StatusDocument(status, transition_events(before, conditions.conditions))


def problem_status(conditions: ConditionSet, *, before: Sequence[Mapping[str, Any]]
                   ) -> StatusDocument:
    """The status of a pass stopped by a problem before anything was measured (invalid
    spec, no database URL, an object the API server refused): conditions and phase only."""
    phase: Phase = "Degraded"
    status = AgentDeploymentStatus.from_fields(
        conditions=conditions.models(), phase=phase, observed_generation=conditions.generation
    )
    return StatusDocument(status, transition_events(before, conditions.conditions))


def _migration_conditions(conditions: ConditionSet, migration: Migration) -> None:
    """MigrationsComplete / MigrationsFailed."""
    if migration.state == "Succeeded":
        job = (migration.last or {}).get("jobName", "")
        conditions.set(MIGRATIONS_COMPLETE, "True", "Succeeded", f"migrations Job {job} succeeded")
        if conditions.has(MIGRATIONS_FAILED):
            conditions.set(MIGRATIONS_FAILED, "False", "Succeeded", "migrations succeeded")
    elif migration.state == "Disabled":
        conditions.set(MIGRATIONS_COMPLETE, "True", "Disabled", "migrations are disabled")
    elif migration.state == "Failed":
        conditions.set(MIGRATIONS_COMPLETE, "False", "MigrationsFailed", migration.message)
        conditions.set(MIGRATIONS_FAILED, "True", condition_reason(migration.reason),
                       migration.message)
    else:
        conditions.set(
            MIGRATIONS_COMPLETE,
            "False",
            migration.reason or "Pending",
            migration.message or "migrations pending",
        )


def _draining_condition(conditions: ConditionSet, record: ScaleDownStatus | None) -> None:
    if is_active(record) and record is not None:
        conditions.set(DRAINING, "True", record.phase, record.message or record.phase)
    elif record is not None and record.phase in ("Done", "Cancelled"):
        conditions.set(DRAINING, "False", "Drain" + record.phase, record.message or record.phase)
    else:
        conditions.set(DRAINING, "False", "NoDrain", "no scale-down in progress")


def _progressing_condition(conditions: ConditionSet, rollout: RolloutStatus | None) -> None:
    """Only with a canary rollout record (`RollingUpdate` has no such condition)."""
    if rollout is None:
        return
    under_way = rollout.phase in ("Progressing", "Paused", "Inconclusive")
    conditions.set(PROGRESSING, "True" if under_way else "False", "Rollout" + rollout.phase,
                   rollout.message or rollout.phase)


def transition_events(
    before: Sequence[Mapping[str, Any]], after: Sequence[Mapping[str, Any]]
) -> list[Event]:
    """Events for condition transitions (status or reason changed)."""
    events: list[Event] = []
    for cond in after:
        old = find_condition(before, cond["type"])
        if old and (old.get("status"), old.get("reason")) == (cond["status"], cond["reason"]):
            continue
        type_, status, reason = cond["type"], cond["status"], cond.get("reason") or ""
        message = cond.get("message") or ""
        if type_ == DEGRADED and status == "True":
            events.append(("Warning", reason, message))
        elif type_ == DEGRADED and old is not None and old.get("status") == "True":
            events.append(("Normal", "Recovered", f"no longer degraded ({old.get('reason')})"))
        elif type_ == MIGRATIONS_COMPLETE and status == "True" and reason == "Succeeded":
            events.append(("Normal", "MigrationsSucceeded", message))
        elif type_ == MIGRATIONS_FAILED and status == "True":
            events.append(("Warning", "MigrationsFailed", message))
        elif type_ == READY and status == "True":
            events.append(("Normal", "Ready", message))
        elif type_ == PAUSED and status == "True":
            events.append(("Normal", REASON_PAUSED, message))
        elif type_ == PAUSED and reason == REASON_UNKNOWN_VALUE:
            events.append(("Warning", "ReconcileAnnotationIgnored", message))
    was_paused = (find_condition(before, PAUSED) or {}).get("status") == "True"
    if was_paused and find_condition(after, PAUSED) is None:
        events.append(("Normal", REASON_RESUMED,
                       f"{RECONCILE_ANNOTATION} removed: reconciling again"))
    return events


def occurrence_row(o: Occurrence) -> OccurrenceStatus:
    """`.status.occurrences[]`: one occurrence as the registry sees it."""
    return OccurrenceStatus.from_fields(
        id=o.occurrence_id,
        ordinal=o.ordinal if o.ordinal is not None else ordinal_of(o.occurrence_id) or 0,
        state=str(o.state),
        pending_tasks=o.pending_tasks + o.active_tasks,
        # the database's clock; a retired occurrence has no heartbeat to speak of
        heartbeat_age_seconds=None if o.state == "retired" else int(o.heartbeat_age()),
    )


def condition_reason(text: str) -> str:
    """`text` as a condition reason (letters, digits, `_`; starting with a letter)."""
    cleaned = re.sub(r"[^A-Za-z0-9_]", "", text or "")
    return cleaned if cleaned and cleaned[0].isalpha() else "Failed"


def short_error(error: BaseException | str) -> str:
    """An error as one line of a condition message (a validation error: its first five)."""
    if isinstance(error, ValidationError):
        parts = []
        for err in error.errors()[:5]:
            loc = ".".join(str(x) for x in err.get("loc", ()))
            parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
        return "; ".join(parts)
    return str(error)[:500]
