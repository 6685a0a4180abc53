"""The AgentDeployment status: every field the operator writes, declared for the CRD schema.

A structural CRD prunes undeclared fields silently, so anything the handlers write under
`.status` must be modelled here first (and the CRD regenerated).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from .crdmodel import CrdModel
from .timeutil import parse_time


def _valid_time(text: str) -> str:
    parse_time(text)
    return text


Timestamp = Annotated[
    str, AfterValidator(_valid_time), Field(json_schema_extra={"format": "date-time"})
]

Phase = Literal[
    "Migrating", "Progressing", "Running", "Draining", "ScaledToZero", "Degraded", "Failed",
    "Paused",
]
ScaleDownPhase = Literal[
    "Fencing", "WaitingInFlight", "Transferring", "Shrinking", "Sweeping", "Done", "Cancelled"
]
ACTIVE_SCALE_DOWN_PHASES: tuple[ScaleDownPhase, ...] = (
    "Fencing",
    "WaitingInFlight",
    "Transferring",
    "Shrinking",
    "Sweeping",
)
ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(CrdModel):
    """A standard Kubernetes condition (metav1.Condition)."""

    type: str = Field(min_length=1, max_length=316)
    status: ConditionStatus
    observed_generation: int | None = Field(None, ge=0)
    last_transition_time: Timestamp | None = None
    reason: str | None = Field(
        None, max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
    )
    message: str | None = Field(None, max_length=32768)


class OccurrenceStatus(CrdModel):
    """One occurrence as the registry in the shared database sees it."""

    id: str = Field(min_length=1)
    """Occurrence id, `<name>-<ordinal>`."""
    ordinal: int = Field(ge=0)
    state: str
    """Registry state (e.g. active, draining, retired)."""
    pending_tasks: int | None = Field(None, ge=0)
    heartbeat_age_seconds: int | None = Field(None, ge=0)
    """Seconds since the occurrence's last heartbeat."""


class LastMigration(CrdModel):
    """The last migrations Job that succeeded."""

    hash: str
    """Hash of the migration inputs (image, command, database Secret reference)."""
    job_name: str
    completed_at: Timestamp | None = None


class ScaleDownStatus(CrdModel):
    """Progress of the current (or last) scale-down drain; the operator resumes from it."""

    phase: ScaleDownPhase
    from_replicas: int = Field(ge=0)
    to_replicas: int = Field(ge=0)
    ordinals: list[Annotated[int, Field(ge=0)]]
    """Departing ordinals whose work is transferred to the survivors."""
    started_at: Timestamp
    transferred: int = Field(0, ge=0)
    """Tasks moved to survivors so far."""
    message: str | None = None


RebalancePhase = Literal["Pending", "Done", "Cancelled"]


class RebalanceStatus(CrdModel):
    """The last scale-up's rebalance of pending backlog (`spec.drain.rebalanceOnScaleUp`).

    Recorded when the StatefulSet is scaled up, carried out once the new occurrences are
    ready, and not repeated by the reconciles that follow."""

    phase: RebalancePhase
    from_replicas: int = Field(ge=0)
    to_replicas: int = Field(ge=0)
    requested_at: Timestamp
    completed_at: Timestamp | None = None
    moved: int = Field(0, ge=0)
    """Pending tasks moved to even out the backlog."""
    message: str | None = None


class AutoscalingStatus(CrdModel):
    """The autoscaler's last decision (`spec.autoscaling`)."""

    observed_backlog: int | None = Field(None, ge=0)
    """Pending and active tasks of the AgentDeployment at the last measurement."""
    recommended_replicas: int | None = Field(None, ge=0)
    """ceil(backlog / targetBacklogPerOccurrence) within [minReplicas, maxReplicas]."""
    desired_replicas: int = Field(ge=0)
    """The size decided (after stabilization, step limits and cooldown)."""
    last_scale_time: Timestamp | None = None
    """When the autoscaler last changed spec.replicas."""
    reason: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9]*$")
    """ScaledUp, ScaledDown, WithinTarget, ScaleUpStabilizing, ScaleDownStabilizing,
    CoolingDown, AtMaxReplicas, DrainInProgress, AutoscalerConflict or BacklogUnknown."""
    message: str | None = None


RolloutPhase = Literal[
    "Progressing", "Paused", "Inconclusive", "RolledBack", "Complete", "Reverted"]
ACTIVE_ROLLOUT_PHASES: tuple[RolloutPhase, ...] = ("Progressing", "Paused", "Inconclusive")
GateVerdict = Literal["Pass", "Fail", "Inconclusive", "Skipped"]


class GateStatus(CrdModel):
    """The last evaluation of one gate of the current wave."""

    metric: str
    verdict: GateVerdict
    """Pass, Fail, Inconclusive (fewer samples than minSamples) or Skipped (compares with
    stable occurrences and the wave has none)."""
    canary: float | None = None
    """The canary occurrences' value since the wave started baking."""
    stable: float | None = None
    """The stable occurrences' value over the same time (None: no stable occurrence)."""
    threshold: str
    """What the canary's value was held to, e.g. `max 0.05` or `stable + 0.02`."""
    samples: int = Field(0, ge=0)
    """Finished tasks (thoughts, for thoughtErrorRatio) of the canary occurrences."""
    failures: int = Field(0, ge=0)
    """Consecutive failing evaluations (failureLimit of them roll back)."""
    evaluated_at: Timestamp
    message: str | None = None
    """A Prometheus gate without a value: why (no data, an error, no answer...)."""


class FailedWorkStatus(CrdModel):
    """The tasks a rolled-back revision failed, given back to pending
    (`spec.rollout.retryFailedOnRollback`)."""

    revision: str
    """The rolled-back revision (controller-revision-hash) whose failed tasks go back."""
    since: Timestamp
    """When its rollout started: only tasks it failed from then on go back."""
    requeued: int = Field(0, ge=0)
    """Tasks given back so far (each once: `occurrence-store requeues` lists them)."""
    complete: bool = False
    """The revision runs on no occurrence any more and nothing it failed is left to give
    back."""


class RolloutStatus(CrdModel):
    """The current (or last) canary rollout of a pod template (`spec.rollout`); the operator
    resumes from it after a restart."""

    phase: RolloutPhase
    """Progressing (a wave rolls out or bakes), Paused (spec.rollout.paused), Inconclusive
    (the gates had too few samples by maxBakeSeconds: held for a person to decide),
    RolledBack (a gate failed: every occurrence back on the stable revision), Complete (every
    occurrence on the new revision, now the stable one) or Reverted (the template went back
    to the stable one before the last wave finished)."""
    wave: str | None = None
    """Name of the current wave."""
    wave_index: int = Field(0, ge=0)
    """Position of the current wave in the waves, from 0."""
    canary_occurrences: int = Field(0, ge=0)
    """Occurrences the current wave puts on the new revision (the highest ordinals)."""
    partition: int = Field(0, ge=0)
    """The StatefulSet's rollingUpdate.partition: ordinals at or above it run the new
    revision."""
    canary_template: str | None = None
    """Hash of the pod template being rolled out."""
    stable_template: str | None = None
    """Hash of the pod template the stable occurrences run (None: the one found on the
    StatefulSet before the first rollout)."""
    canary_revision: str | None = None
    """The StatefulSet's updateRevision of the template being rolled out."""
    stable_revision: str | None = None
    """The StatefulSet's revision the stable occurrences run."""
    started_at: Timestamp | None = None
    """When this rollout started."""
    bake_started_at: Timestamp | None = None
    """When every occurrence of the current wave was on the new revision and ready."""
    completed_at: Timestamp | None = None
    gates: list[GateStatus] | None = None
    """The current wave's gates as last evaluated (kept after a rollback: why it happened)."""
    failed_work: FailedWorkStatus | None = None
    """After a rollback: the tasks the rolled-back revision failed, given back to pending."""
    decisions_pinned: bool = False
    """The agent's shared decisions (wakeup, shutdown) are pinned to the stable revision in
    the database: while the rollout is under way (or a rolled-back revision still runs) only
    occurrences on the stable revision claim them; canaries follow."""
    message: str | None = None


class AgentDeploymentStatus(CrdModel):
    """Observed state, written by the operator only."""

    observed_generation: int | None = Field(None, ge=0)
    replicas: int | None = Field(None, ge=0)
    """Current number of agent pods (scale subresource statusReplicasPath)."""
    ready_replicas: int | None = Field(None, ge=0)
    draining_replicas: int | None = Field(None, ge=0)
    """Occurrences currently being drained by a scale-down."""
    backlog: int | None = Field(None, ge=0)
    """Pending and active tasks of the AgentDeployment's occurrences at the last pass that
    read the database (printer column `Backlog`)."""
    fenced_replicas: int | None = Field(None, ge=0)
    """Running occurrences `spec.fencedOccurrences` takes out of work (absent: none)."""
    selector: str | None = None
    """Label selector of the agent pods, serialized (scale subresource labelSelectorPath)."""
    phase: Phase | None = None
    occurrences: list[OccurrenceStatus] | None = Field(
        None,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["id"]},
    )
    last_migration: LastMigration | None = None
    scale_down: ScaleDownStatus | None = None
    rebalance: RebalanceStatus | None = None
    autoscaling: AutoscalingStatus | None = None
    rollout: RolloutStatus | None = None
    conditions: list[Condition] | None = Field(
        None,
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    )
