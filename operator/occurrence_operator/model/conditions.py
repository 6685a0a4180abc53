"""Status conditions (metav1.Condition semantics) and the summary phase.

Conditions are plain dicts, as they travel in `.status.conditions`; helpers return new lists
and never mutate their input.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from .status import ConditionStatus, Phase
from .timeutil import format_time

READY = "Ready"
"""All desired occurrences run the current template and are ready."""
MIGRATIONS_COMPLETE = "MigrationsComplete"
"""The migrations Job for the current spec succeeded (or migrations are disabled)."""
MIGRATIONS_FAILED = "MigrationsFailed"
"""The migrations Job failed; its reason is the Job's. Running pods are left untouched."""
DRAINING = "Draining"
"""A scale-down drain is under way."""
PROGRESSING = "Progressing"
"""A canary rollout of a new pod template is under way (`spec.rollout.strategy: Canary`)."""
DEGRADED = "Degraded"
"""Something needs attention (failed migration, drain released in-flight work on timeout...)."""

MigrationState = Literal["Disabled", "Pending", "Running", "Succeeded", "Failed"]


def find_condition(
    conditions: Sequence[Mapping[str, Any]] | None, type_: str
) -> dict[str, Any] | None:
    for condition in conditions or ():
        if condition.get("type") == type_:
            return dict(condition)
    return None


def set_condition(
    conditions: Sequence[Mapping[str, Any]] | None,
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    *,
    observed_generation: int | None,
    now: datetime,
) -> list[dict[str, Any]]:
    """Return the conditions with `type_` set; other conditions keep their order and values.

    `lastTransitionTime` moves only when `status` changes: a new reason or message on the same
    status is an update, not a transition.
    """
    previous = find_condition(conditions, type_)
    if (
        previous is not None
        and previous.get("status") == status
        and previous.get("lastTransitionTime")
    ):
        transition = previous["lastTransitionTime"]
    else:
        transition = format_time(now)
    updated: dict[str, Any] = {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": transition,
    }
    if observed_generation is not None:
        updated["observedGeneration"] = observed_generation
    result: list[dict[str, Any]] = []
    replaced = False
    for condition in conditions or ():
        if condition.get("type") == type_:
            result.append(updated)
            replaced = True
        else:
            result.append(dict(condition))
    if not replaced:
        result.append(updated)
    return result


@dataclass(frozen=True)
class PhaseInputs:
    """What the summary phase depends on."""

    migration: MigrationState
    draining: bool
    desired: int
    """spec.replicas"""
    current: int
    """StatefulSet status.replicas (pods that exist)."""
    ready: int
    updated: int
    """StatefulSet status.updatedReplicas (pods on the current template)."""
    degraded: bool = False
    fenced: int = 0
    """Occurrences fenced by hand: their pods run, not Ready on purpose."""


def compute_phase(inputs: PhaseInputs) -> Phase:
    """One word for `kubectl get agd`, most urgent first.

    Failed (migration failed) > Migrating > Draining > Degraded > ScaledToZero > Running >
    Progressing.
    """
    if inputs.migration == "Failed":
        return "Failed"
    if inputs.migration in ("Pending", "Running"):
        return "Migrating"
    if inputs.draining:
        return "Draining"
    if inputs.degraded:
        return "Degraded"
    if inputs.desired == 0 and inputs.current == 0:
        return "ScaledToZero"
    if (inputs.current == inputs.desired == inputs.updated
            and inputs.desired - inputs.fenced <= inputs.ready <= inputs.desired):
        return "Running"
    return "Progressing"
