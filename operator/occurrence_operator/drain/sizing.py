"""`Sizing`: the one owner of the StatefulSet's size in a reconcile pass.

Everything that decides how many occurrences run goes through here: creation, scale-up,
the scale-down drain protocol (`planner`, carried out by `driver.drive`), the rebalance after
a scale-up (`rebalance`), and the skip-drain bypass with its one-shot annotation (`bypass`).
reconcile/passes.py calls it in this order, and knows nothing else of the package:

1. `Sizing.read` — the live StatefulSet (never somebody else's) and `.status.scaleDown`;
   `draining` and `ids_needed` tell the steps before sizing (autoscaling, the occurrence id
   claim) what the drain in progress needs;
2. `converge` with the database reachable — drive the drain, then the rebalance; or
   `after_database_error` when the database failed — re-read what the driver persisted and,
   if the user asked for it and the database is unreachable, bypass the drain;
3. `finish` — expire the skip-drain annotation.

`record` and `statefulset` are the outcome the status is derived from.
"""

from __future__ import annotations

from typing import Any

from occurrence_store import AgentId, Store

from ..kube.agd_object import AgentDeploymentObject
from ..kube.client import object_path
from ..kube.metrics import OperatorMetrics
from ..model.naming import fenced_ordinals
from ..model.never_adopt import check_owned
from ..model.owner import Owner
from ..model.spec import AgentDeploymentSpec
from ..model.status import ScaleDownStatus
from ..render.statefulset import StatefulSetSize
from . import bypass, driver
from .cluster import KubeDrainPort, read_rebalance, read_scale_down
from .planner import DrainSettings, is_active


class Sizing:
    """The StatefulSet's size for one pass over one AgentDeployment."""

    def __init__(self, agd: AgentDeploymentObject, port: KubeDrainPort) -> None:
        self.agd = agd
        self.port = port
        self.record: ScaleDownStatus | None = read_scale_down(agd.status.get("scaleDown"))
        """`.status.scaleDown`: the drain as last persisted (by this pass or an earlier)."""
        self.bypassed = False
        """This pass bypassed the drain (the skip-drain annotation was used)."""
        self.requeue_after: float | None = None
        """When the drain or the rebalance wants to be looked at again (None: at resync)."""

    @classmethod
    async def read(
        cls, agd: AgentDeploymentObject, spec: AgentDeploymentSpec, owner: Owner,
        metrics: OperatorMetrics,
    ) -> Sizing:
        """Read the StatefulSet; refuse one the AgentDeployment does not own (never scale,
        drain or patch somebody else's)."""
        statefulset = await agd.kube.get(_statefulset_path(agd))
        check_owned(statefulset, owner.uid)
        return cls(agd, KubeDrainPort(agd, spec, owner, statefulset, metrics))

    @property
    def statefulset(self) -> dict[str, Any] | None:
        """The StatefulSet as last read or written (None: not created yet)."""
        return self.port.sts

    @property
    def draining(self) -> bool:
        """A scale-down drain is in progress."""
        return is_active(self.record)

    def ids_needed(self, desired: int) -> int:
        """How many occurrence ids `<name>-0..` this AgentDeployment may use now: the
        desired size, the StatefulSet's, and the one a drain in progress started from."""
        record = self.record
        return max(1, desired, StatefulSetSize.of(self.statefulset).replicas,
                   record.from_replicas if record is not None and is_active(record) else 0)

    async def converge(self, spec: AgentDeploymentSpec, store: Store, agent_id: AgentId) -> None:
        """Size the StatefulSet to `spec.replicas` (draining on the way down), then the
        rebalance a scale-up recorded."""
        sts = self.statefulset
        fenced = fenced_ordinals(spec.fenced_occurrences, self.agd.name)
        drained = await driver.drive(
            name=self.agd.name,
            store=store,
            settings=DrainSettings.from_spec(spec.drain, spec.recovery, fenced=fenced),
            desired=spec.replicas,
            current=None if sts is None else StatefulSetSize.of(sts).replicas,
            record=self.record,
            port=self.port,
            agent_id=agent_id,
        )
        self.record = drained.record
        self._look_again(drained.requeue_after)
        rebalanced = await driver.rebalance(
            name=self.agd.name, store=store, port=self.port,
            record=read_rebalance(self.agd.status.get("rebalance")),
            desired=spec.replicas, drain_active=self.draining,
            statefulset=StatefulSetSize.of(self.statefulset), fenced=fenced)
        self._look_again(rebalanced.requeue_after)

    def _look_again(self, seconds: float | None) -> None:
        if seconds is not None and (self.requeue_after is None or seconds < self.requeue_after):
            self.requeue_after = seconds

    async def after_database_error(self, *, unreachable: bool) -> None:
        """The database failed during the pass: what the driver persisted before the failure
        is the truth now. With the skip-drain annotation and the database unreachable, a
        drain in progress is bypassed (`bypass.should_bypass`)."""
        self.record = read_scale_down(self.agd.live_status().get("scaleDown"))
        self.port.sts = await self.agd.kube.get(_statefulset_path(self.agd))
        if self.record is not None and bypass.should_bypass(
                requested=bypass.bypass_requested(self.agd.annotations),
                database_unreachable=unreachable, statefulset_exists=self.port.sts is not None,
                record=self.record):
            self.record = await driver.bypass(self.port, self.record)
            self.bypassed = True

    async def finish(self) -> None:
        """The skip-drain annotation never outlives the drain it was set for."""
        expiry = bypass.expire_skip_drain(
            requested=bypass.bypass_requested(self.agd.annotations), record=self.record,
            used=self.bypassed)
        if expiry.remove:
            await self.agd.remove_annotation(bypass.SKIP_DRAIN_ANNOTATION)
        if expiry.warning is not None:
            self.agd.event("Warning", "SkipDrainIgnored", expiry.warning)


def _statefulset_path(agd: AgentDeploymentObject) -> str:
    return object_path("apps/v1", "StatefulSet", agd.namespace, agd.name)
