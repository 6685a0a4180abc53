"""The Kubernetes side of a rollout: `.status.rollout` on the AgentDeployment, its Events."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError

from ..kube.agd_object import AgentDeploymentObject
from ..kube.events import EventType
from ..kube.metrics import OperatorMetrics
from ..model import naming, wellknown
from ..model.status import RolloutStatus

log = logging.getLogger(__name__)

REVISION_LABEL = wellknown.REVISION_LABEL


def read_rollout(wire: Any) -> RolloutStatus | None:
    """`.status.rollout` as persisted, or None (absent or unreadable: logged)."""
    if not wire:
        return None
    try:
        return RolloutStatus.model_validate(wire)
    except ValidationError:
        log.warning("ignoring unreadable status.rollout: %s", wire)
        return None


class KubeRolloutPort:
    """`RolloutPort` on the API server, for one pass over one AgentDeployment."""

    def __init__(self, agd: AgentDeploymentObject, metrics: OperatorMetrics) -> None:
        self.agd = agd
        self.metrics = metrics

    async def persist(self, record: RolloutStatus | None) -> None:
        wire = None if record is None else record.to_wire()
        await self.agd.write_status({"rollout": wire})
        self.agd.status["rollout"] = wire

    def queue_event(self, type_: EventType, reason: str, message: str) -> None:
        self.agd.event(type_, reason, message)
        self.metrics.rollout_event(self.agd.namespace, self.agd.name, reason)

    async def delete_pods_off(self, revision: str, below: int) -> int:
        agd = self.agd
        pods = await agd.kube.list(f"/api/v1/namespaces/{agd.namespace}/pods",
                                   naming.selector_string(agd.name))
        off = [pod for pod in pods
               if (pod["metadata"].get("labels") or {}).get(REVISION_LABEL) != revision
               and not pod["metadata"].get("deletionTimestamp")
               and (naming.ordinal_of(pod["metadata"]["name"], agd.name) or 0) < below]
        for pod in off:
            await agd.kube.delete(
                f"/api/v1/namespaces/{agd.namespace}/pods/{pod['metadata']['name']}")
        return len(off)

    async def label_tracks(self, canary_revision: str | None) -> int:
        agd = self.agd
        pods = await agd.kube.list(f"/api/v1/namespaces/{agd.namespace}/pods",
                                   naming.selector_string(agd.name))
        changed = 0
        for pod in pods:
            meta = pod["metadata"]
            labels = meta.get("labels") or {}
            if meta.get("deletionTimestamp"):
                continue
            on_canary = canary_revision is not None and (
                labels.get(REVISION_LABEL) == canary_revision)
            want = wellknown.TRACK_CANARY if on_canary else wellknown.TRACK_STABLE
            if labels.get(wellknown.LABEL_TRACK) != want:
                await agd.kube.merge_patch(
                    f"/api/v1/namespaces/{agd.namespace}/pods/{meta['name']}",
                    {"metadata": {"labels": {wellknown.LABEL_TRACK: want}}})
                changed += 1
        return changed

    def measurement_failed(self) -> None:
        self.metrics.rollout_event(self.agd.namespace, self.agd.name, "MeasurementFailed")

    def requeued(self, tasks: int) -> None:
        self.metrics.rollout_requeued(self.agd.namespace, self.agd.name, tasks)

    def database_failed(self, what: str) -> None:
        self.metrics.rollout_event(self.agd.namespace, self.agd.name, what)
