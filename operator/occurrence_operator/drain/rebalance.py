"""The rebalance after a scale-up, pure (`spec.drain.rebalanceOnScaleUp`).

A scale-up records its intent in `.status.rebalance` *before* scaling (`rebalance_intent`),
so a restarted operator still rebalances; once the new pods are all ready the pending backlog
is evened out once (`plan_rebalance`, then `rebalance_done`):

    Pending ──(pods ready)──▶ Done, or Cancelled (spec.replicas moved on, a drain started)

The driver carries it out (`driver.rebalance`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from occurrence_store import OccurrenceId

from ..model.naming import occurrence_id
from ..model.status import RebalanceStatus
from ..model.timeutil import format_time
from ..render.statefulset import StatefulSetSize
from .planner import POLL_SECONDS, DrainSettings


def rebalance_intent(
    settings: DrainSettings, current: int | None, replicas: int, now: datetime
) -> RebalanceStatus | None:
    """On a SCALE of an existing StatefulSet from `current` up to `replicas`: the
    `.status.rebalance` to persist *before* scaling (so a restarted operator still
    rebalances), or None when `rebalanceOnScaleUp` is off or this is no scale-up."""
    if current is None or replicas <= current or not settings.rebalance_on_scale_up:
        return None
    return RebalanceStatus.from_fields(
        phase="Pending",
        from_replicas=current,
        to_replicas=replicas,
        requested_at=format_time(now),
        moved=0,
        message=f"rebalance pending backlog once {replicas} occurrences are ready",
    )


@dataclass(frozen=True)
class RebalanceDecision:
    """The next rebalance step, with what it needs."""

    action: RebalanceAction
    record: RebalanceStatus | None = None
    occurrences: tuple[OccurrenceId, ...] = ()
    requeue_after: float | None = None


class RebalanceAction(StrEnum):
    """The steps of the rebalance state machine (`plan_rebalance`)."""

    NOOP = "Noop"
    """No rebalance pending."""
    CANCEL = "Cancel"
    """Persist `record` (Cancelled): spec.replicas moved on, or a drain started."""
    WAIT = "Wait"
    """The scaled-up pods are not all ready yet: look again after `requeue_after`."""
    REBALANCE = "Rebalance"
    """Even out the pending backlog over `occurrences` once, then `rebalance_done`."""


def plan_rebalance(
    name: str,
    record: RebalanceStatus | None,
    *,
    desired: int,
    drain_active: bool,
    statefulset: StatefulSetSize,
    fenced: frozenset[int] = frozenset(),
) -> RebalanceDecision:
    """The next step of the rebalance recorded in `.status.rebalance` by a scale-up. Fenced
    occurrences take no part: their pods are not Ready on purpose, and they get no work."""
    if record is None or record.phase != "Pending":
        return RebalanceDecision(RebalanceAction.NOOP)
    to = record.to_replicas
    if desired != to or drain_active:
        message = f"superseded: spec.replicas is {desired} now"
        return RebalanceDecision(
            RebalanceAction.CANCEL, record.model_copy(
                update={"phase": "Cancelled", "message": message})
        )
    taking_part = tuple(k for k in range(to) if k not in fenced)
    if (statefulset.replicas != to or statefulset.ready < len(taking_part)
            or not statefulset.observed):
        # StatefulSet events wake the worker sooner
        return RebalanceDecision(RebalanceAction.WAIT, requeue_after=POLL_SECONDS)
    return RebalanceDecision(
        RebalanceAction.REBALANCE, occurrences=tuple(occurrence_id(name, k) for k in taking_part)
    )


def rebalance_done(
    record: RebalanceStatus, moved: Mapping[OccurrenceId, Mapping[OccurrenceId, int]],
    now: datetime
) -> tuple[RebalanceStatus, int]:
    """The Done record after the backlog moved (`moved`: donor -> recipient -> tasks), and
    the number of tasks moved. The record's message is also the `Rebalanced` event's."""
    total = sum(n for recipients in moved.values() for n in recipients.values())
    to = record.to_replicas
    flows = "; ".join(
        f"{donor} -> " + ", ".join(f"{r}: {n}" for r, n in sorted(recipients.items()))
        for donor, recipients in sorted(moved.items())
    )
    message = (
        f"moved {total} pending tasks across {to} occurrences ({flows})"
        if total
        else f"pending backlog already even across {to} occurrences"
    )
    done = record.model_copy(
        update={"phase": "Done", "moved": total, "completed_at": format_time(now),
                "message": message[:1000]}
    )
    return done, total
