"""`occurrence.dev/reconcile: paused`: a person freezes the operator for one AgentDeployment.

What mature operators offer during an incident (Strimzi's `strimzi.io/pause-reconciliation`,
CloudNativePG's `cnpg.io/reconciliationLoop: disabled`, Argo Rollouts' `spec.paused`). While
the annotation is `paused` a pass writes nothing but the `Paused` condition (and `phase:
Paused`) once: no StatefulSet, Service, PDB, NetworkPolicy, Job or Secret is applied, no
occurrence is fenced, drained, shrunk or retired, no autoscaling recommendation or rollout
step is taken. A scale-down under way stops where it is (its departing occurrences stay
fenced, their pods keep running) and resumes from `status.scaleDown` when the annotation is
removed.

Only the exact value `paused` pauses: anything else is reported (`Paused=False`, reason
`UnknownValue`, one Warning event) and the operator goes on reconciling, because a typo
that silently froze the operator, or silently did not, would both be traps.
"""

from __future__ import annotations

from collections.abc import Mapping

from .wellknown import GROUP

RECONCILE_ANNOTATION = f"{GROUP}/reconcile"
PAUSED_VALUE = "paused"
PAUSED = "Paused"
"""The condition: True while the annotation pauses the object."""
REASON_PAUSED = "ReconcilePaused"
REASON_UNKNOWN_VALUE = "UnknownValue"
REASON_RESUMED = "ReconcileResumed"


def paused_message() -> str:
    return (f"{RECONCILE_ANNOTATION}={PAUSED_VALUE}: the operator changes nothing for this "
            f"AgentDeployment (drains and rollouts included) until the annotation is removed")


def read_request(annotations: Mapping[str, str]) -> tuple[bool, str | None]:
    """(paused?, a problem with the annotation's value to report)."""
    value = annotations.get(RECONCILE_ANNOTATION)
    if value is None or value == PAUSED_VALUE:
        return value is not None, None
    return False, (f"{RECONCILE_ANNOTATION}={value[:64]!r} is not {PAUSED_VALUE!r}: "
                   f"reconciling as usual")
