"""The Kubernetes side of the drain: what `driver.DrainPort` asks of the cluster.

`KubeDrainPort` scales the StatefulSet (creates it the first time), persists the drain and
rebalance records in the AgentDeployment's status, re-reads them, counts the departing
pods still there and posts the drain's Events (counting its milestones in the metrics).
The driver talks to it only through `DrainPort`, so the unit tests swap in an in-memory
fake (tests/unit/operator/test_agd_drain_driver.py).
"""

from __future__ import annotations

import logging
from typing import Any, TypeVar

from pydantic import ValidationError

from ..kube.agd_object import AgentDeploymentObject
from ..kube.client import object_path
from ..kube.events import EventType
from ..kube.metrics import OperatorMetrics
from ..model import naming
from ..model.owner import Owner
from ..model.spec import AgentDeploymentSpec
from ..model.status import RebalanceStatus, ScaleDownStatus
from ..render.statefulset import build_statefulset
from .planner import draining_count

log = logging.getLogger(__name__)

_Record = TypeVar("_Record", ScaleDownStatus, RebalanceStatus)

_MILESTONES = {
    "DrainStarted": "started",
    "DrainComplete": "completed",
    "DrainCancelled": "cancelled",
}
"""Drain Events counted in `occurrence_operator_drains_total{event=...}`."""


def read_scale_down(wire: Any) -> ScaleDownStatus | None:
    """`.status.scaleDown` as persisted, or None (absent or unreadable: logged)."""
    return _read(ScaleDownStatus, wire, "scaleDown")


def read_rebalance(wire: Any) -> RebalanceStatus | None:
    """`.status.rebalance` as persisted, or None (absent or unreadable: logged)."""
    return _read(RebalanceStatus, wire, "rebalance")


def _read(model: type[_Record], wire: Any, field: str) -> _Record | None:
    if not wire:
        return None
    try:
        return model.model_validate(wire)
    except ValidationError:
        log.warning("ignoring unreadable status.%s: %s", field, wire)
        return None


class KubeDrainPort:
    """`DrainPort` on the API server, for one pass over one AgentDeployment."""

    def __init__(
        self,
        agd: AgentDeploymentObject,
        spec: AgentDeploymentSpec,
        owner: Owner,
        sts: dict[str, Any] | None,
        metrics: OperatorMetrics,
    ) -> None:
        self.agd = agd
        self.spec = spec
        self.owner = owner
        self.sts = sts
        """The StatefulSet as last read or written (None: not created yet)."""
        self.metrics = metrics

    @property
    def _sts_path(self) -> str:
        return object_path("apps/v1", "StatefulSet", self.agd.namespace, self.agd.name)

    async def scale(self, replicas: int) -> None:
        agd = self.agd
        if self.sts is None:
            self.sts = await agd.kube.apply(build_statefulset(self.spec, self.owner, replicas))
            agd.event("Normal", "StatefulSetCreated",
                      f"created StatefulSet with {replicas} replicas")
            return
        self.sts = await agd.kube.merge_patch(self._sts_path, {"spec": {"replicas": replicas}})

    async def persist(self, record: ScaleDownStatus | None) -> None:
        wire = None if record is None else record.to_wire()
        await self.agd.write_status(
            {"scaleDown": wire, "drainingReplicas": draining_count(record)}
        )
        self.agd.status["scaleDown"] = wire

    async def persist_rebalance(self, record: RebalanceStatus) -> None:
        wire = record.to_wire()
        await self.agd.write_status({"rebalance": wire})
        self.agd.status["rebalance"] = wire

    async def reload(self) -> ScaleDownStatus | None:
        """The record as persisted now (another operator's step may have moved it on)."""
        agd = self.agd
        if await agd.refresh():
            agd.status["scaleDown"] = agd.live_status().get("scaleDown")
        return read_scale_down(agd.status.get("scaleDown"))

    async def departing_pods(self, ordinals: tuple[int, ...]) -> int:
        agd = self.agd
        pods = await agd.kube.list(
            f"/api/v1/namespaces/{agd.namespace}/pods", naming.selector_string(agd.name)
        )
        wanted = {naming.occurrence_id(agd.name, k) for k in ordinals}
        return sum(1 for pod in pods if pod["metadata"]["name"] in wanted)

    async def event(self, type_: EventType, reason: str, message: str) -> None:
        agd = self.agd
        milestone = _MILESTONES.get(reason)
        if milestone is not None:
            self.metrics.drain_event(agd.namespace, agd.name, milestone)
        agd.event(type_, reason, message)
        await agd.flush_events()

    def queue_event(self, type_: EventType, reason: str, message: str) -> None:
        self.agd.event(type_, reason, message)

    def transferred(self, tasks: int) -> None:
        self.metrics.transferred(self.agd.namespace, self.agd.name, tasks)

    def drain_finished(self, seconds: float) -> None:
        self.metrics.drain_finished(seconds)
