"""The autoscaler's side effects in one reconcile pass: measure, decide, write the size.

The backlog is measured at most once per `intervalSeconds` (one count per AgentDeployment,
`Registry.backlog`). A second autoscaler targeting the AgentDeployment is looked for once a
minute, and again before every scale the autoscaler writes (at most once per interval);
once one is found, every interval, so that its removal is noticed quickly. The size goes
through the scale subresource, so the rest of the pass (and every pass after) sizes the
StatefulSet from it as from any `kubectl scale`: a scale-down is a drain. No decision is
taken while a drain runs (its size is in flux) or while another autoscaler targets the
object.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from occurrence_store import AgentId, Store

from ..kube.agd_object import AgentDeploymentObject
from ..kube.metrics import OperatorMetrics
from ..model.spec import AgentDeploymentSpec, AutoscalingSpec
from ..model.status import AutoscalingStatus
from ..model.timeutil import format_time, parse_time
from ..reconcile.derived_status import AUTOSCALER_CONFLICT
from .conflicts import find_other_autoscaler
from .decision import History, ScaleDecision, decide

log = logging.getLogger(__name__)

CONFLICT_CHECK_SECONDS = 60.0
"""How often a second autoscaler is looked for (two LISTs of the namespace each time), also
while one stands: its removal is seen within a minute; never every 1 s interval."""
DRAIN_IN_PROGRESS = "DrainInProgress"
BACKLOG_UNKNOWN = "BacklogUnknown"


@dataclass
class Memory:
    """What the autoscaler of one AgentDeployment remembers between passes (in memory)."""

    history: History | None = None
    measured_at: float | None = None
    decision: ScaleDecision | None = None
    conflict: str | None = None
    conflict_checked_at: float | None = None


@dataclass(frozen=True)
class Report:
    """What the pass does with the autoscaler's work: the size, the status, a conflict."""

    replicas: int
    """spec.replicas for the rest of the pass (as written, if the autoscaler wrote it)."""
    status: AutoscalingStatus
    conflict: str | None = None
    """Message of the AutoscalerConflict condition."""
    requeue_after: float | None = None


@dataclass
class Autoscaler:
    agd: AgentDeploymentObject
    spec: AutoscalingSpec
    memory: Memory
    metrics: OperatorMetrics
    agent_id: AgentId
    previous: AutoscalingStatus | None = field(init=False)

    def __post_init__(self) -> None:
        raw = self.agd.status.get("autoscaling")
        self.previous = AutoscalingStatus.model_validate(raw) if raw else None

    async def run(self, store: Store, *, current: int, draining: bool, now: float) -> Report:
        """Measure when due and scale if the decision says so (not while draining)."""
        memory = self.memory
        await self._look_for_conflict(now, within=CONFLICT_CHECK_SECONDS)
        requeue = float(self.spec.interval_seconds)
        if memory.conflict is not None:
            return self._conflicted(current, requeue)
        if memory.measured_at is None or now - memory.measured_at >= requeue:
            backlog = await store.registry.backlog(self.agent_id)
            if memory.history is None:
                memory.history = History(started_at=now)
            memory.decision = decide(now=now, current=current, backlog=backlog, spec=self.spec,
                                     history=memory.history, last_scale_at=self._last_scale())
            memory.measured_at = now
            self.metrics.set_recommended(self.agd.namespace, self.agd.name,
                                         memory.decision.recommended)
        else:
            requeue = max(0.1, requeue - (now - memory.measured_at))
        decision = memory.decision
        assert decision is not None
        if draining:
            return Report(current, self._status(current, DRAIN_IN_PROGRESS,
                                                "no decision while a scale-down drains"),
                          requeue_after=requeue)
        if decision.direction is None or decision.current != current:
            # nothing to do, or the size changed since (by us or by hand): next measurement
            return Report(current, self._status(current, decision.reason, decision.message),
                          requeue_after=requeue)
        await self._look_for_conflict(now, within=self.spec.interval_seconds)  # fresh, to write
        if memory.conflict is not None:
            return self._conflicted(current, requeue)
        await self._scale(decision)
        return Report(decision.desired, self._status(decision.desired, decision.reason,
                                                     decision.message, scaled_at=now),
                      requeue_after=requeue)

    def _conflicted(self, current: int, requeue: float) -> Report:
        message = (f"{self.memory.conflict} also scales this AgentDeployment while "
                   "spec.autoscaling is set: remove one of them")
        return Report(current, self._status(current, AUTOSCALER_CONFLICT, message),
                      conflict=message, requeue_after=requeue)

    async def _look_for_conflict(self, now: float, within: float) -> None:
        """Look for a second autoscaler unless the last look is younger than `within`."""
        memory = self.memory
        if memory.conflict_checked_at is None or now - memory.conflict_checked_at >= within:
            memory.conflict = await find_other_autoscaler(
                self.agd.kube, self.agd.namespace, self.agd.name)
            memory.conflict_checked_at = now

    async def _scale(self, decision: ScaleDecision) -> None:
        agd = self.agd
        await agd.kube.merge_patch(agd.path + "/scale",
                                   {"spec": {"replicas": decision.desired}})
        agd.body.setdefault("spec", {})["replicas"] = decision.desired
        direction = decision.direction or "none"
        self.metrics.autoscaled(agd.namespace, agd.name, direction)
        agd.event("Normal", decision.reason, f"{decision.current} -> {decision.desired}: "
                                             f"{decision.message}")
        log.info("%s/%s: autoscaled %s -> %s: %s", agd.namespace, agd.name, decision.current,
                 decision.desired, decision.message)

    def _last_scale(self) -> float | None:
        when = self.previous.last_scale_time if self.previous else None
        return parse_time(when).timestamp() if when else None

    def _status(self, desired: int, reason: str, message: str,
                scaled_at: float | None = None) -> AutoscalingStatus:
        decision = self.memory.decision
        last = self.previous.last_scale_time if self.previous else None
        if scaled_at is not None:
            last = format_time(datetime.fromtimestamp(scaled_at, UTC))
        return AutoscalingStatus.from_fields(
            observed_backlog=decision.backlog if decision else None,
            recommended_replicas=decision.recommended if decision else None,
            desired_replicas=desired, last_scale_time=last, reason=reason, message=message)


async def autoscale(
    agd: AgentDeploymentObject, spec: AgentDeploymentSpec, store: Store,
    memories: dict[str, Memory], metrics: OperatorMetrics, *, agent_id: AgentId,
    draining: bool,
) -> tuple[AgentDeploymentSpec, Report | None]:
    """The spec with the size the autoscaler decided (as written), and its report; the spec
    unchanged and None when `spec.autoscaling` is not set."""
    if spec.autoscaling is None:
        return spec, None
    memory = memories.setdefault(str(agd.body["metadata"].get("uid")), Memory())
    report = await Autoscaler(agd, spec.autoscaling, memory, metrics, agent_id).run(
        store, current=spec.replicas, draining=draining, now=time.time())
    return spec.model_copy(update={"replicas": report.replicas}), report


def status_of(spec: AutoscalingSpec | None, report: Report | None,
              status: Mapping[str, Any]) -> AutoscalingStatus | None:
    """`status.autoscaling` for this pass: the report's; with autoscaling set but nothing
    measured (the database failed first), the last one, marked BacklogUnknown; None when
    autoscaling is off (the field is then removed)."""
    if spec is None:
        return None
    if report is not None:
        return report.status
    raw = status.get("autoscaling")
    if not raw:
        return None
    return AutoscalingStatus.model_validate(raw).model_copy(
        update={"reason": BACKLOG_UNKNOWN, "message": "the database could not be read"})
