"""The skip-drain bypass, pure: the escape hatch for a drain that cannot reach the database.

With the `occurrence.dev/skip-drain: "true"` annotation on the AgentDeployment and the
database unreachable, a drain in progress shrinks the StatefulSet at once and leaves the
departing work in the database (`should_bypass`, `bypassed`). The annotation is one-shot: it
goes once the drain it was set for is over, with a Warning if it was never used
(`expire_skip_drain`). The driver carries it out (`driver.bypass`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..model import wellknown
from ..model.status import ScaleDownStatus
from .planner import is_active

SKIP_DRAIN_ANNOTATION = f"{wellknown.GROUP}/skip-drain"
"""Set to "true" on the AgentDeployment: a drain in progress that cannot reach the database
shrinks the StatefulSet at once, leaving the departing work in the database."""


def bypass_requested(annotations: Mapping[str, str] | None) -> bool:
    """Does the AgentDeployment carry the skip-drain annotation?"""
    return str((annotations or {}).get(SKIP_DRAIN_ANNOTATION, "")).lower() == "true"


def should_bypass(
    *,
    requested: bool,
    database_unreachable: bool,
    statefulset_exists: bool,
    record: ScaleDownStatus | None,
) -> bool:
    """Bypass the drain now? Only a drain in progress, only while the database is
    unreachable, and only when the user asked for it."""
    return requested and database_unreachable and statefulset_exists and is_active(record)


def bypassed(record: ScaleDownStatus) -> ScaleDownStatus:
    """The record of a drain bypassed by the annotation: Done, the work left where it is (it
    returns with its occurrences on a later scale-up, which first un-fences them)."""
    message = (
        f"drain bypassed by annotation {SKIP_DRAIN_ANNOTATION}: scaled to "
        f"{record.to_replicas} without moving the work of ordinals {record.ordinals}"
    )
    return record.model_copy(update={"phase": "Done", "message": message})


@dataclass(frozen=True)
class SkipDrainExpiry:
    """What becomes of the (one-shot) skip-drain annotation after this pass's sizing."""

    remove: bool = False
    """Remove the annotation from the AgentDeployment."""
    warning: str | None = None
    """Message of a `SkipDrainIgnored` Warning event (the annotation was never used)."""


def expire_skip_drain(
    *, requested: bool, record: ScaleDownStatus | None, used: bool
) -> SkipDrainExpiry:
    """The annotation never outlives the drain it was set for: once that drain is over
    (bypassed or not), or if there was none, it goes."""
    if not requested or is_active(record):
        return SkipDrainExpiry()
    if used:
        return SkipDrainExpiry(remove=True)
    return SkipDrainExpiry(
        remove=True,
        warning=f"annotation {SKIP_DRAIN_ANNOTATION} removed unused: it applies only to "
        "a drain in progress that cannot reach the database",
    )
