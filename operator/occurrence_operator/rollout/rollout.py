"""`Rollout`: the one entry point of the package for a reconcile pass."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from occurrence_store import Store

from ..kube.agd_object import AgentDeploymentObject
from ..kube.metrics import OperatorMetrics
from ..model.spec import RolloutSpec
from ..model.status import RolloutStatus
from ..model.timeutil import utcnow
from ..model.wellknown import agent_id
from . import driver
from .cluster import KubeRolloutPort, read_rollout
from .planner import COMMANDS, ROLLOUT_ANNOTATION, Observed, RolloutDecision

GIVE_BACK_SECONDS = 5.0
"""While a rolled-back revision's failed work is being given back: the next pass within."""


class Rollout:
    """The pod template's rollout for one pass over one AgentDeployment."""

    def __init__(self, agd: AgentDeploymentObject, spec: RolloutSpec,
                 metrics: OperatorMetrics, *, prometheus_urls: Sequence[str] = ()) -> None:
        self.agd = agd
        self.spec = spec
        self.prometheus_urls = tuple(prometheus_urls)
        self.port = KubeRolloutPort(agd, metrics)
        self.record: RolloutStatus | None = read_rollout(agd.status.get("rollout"))
        """`.status.rollout` as persisted (after `partition_for`: as this pass left it)."""
        self._before = self.record
        self.requeue_after: float | None = None
        self._decision: RolloutDecision | None = None
        self._seen: Observed | None = None
        self._store: Store | None = None

    async def partition_for(self, rendered: Mapping[str, Any], live: Mapping[str, Any],
                            store: Store | None) -> int:
        """Decide this pass's step (measuring the gates in `store` while a wave bakes),
        persist it, and return the partition to apply."""
        now = utcnow()
        raw = self.agd.annotations.get(ROLLOUT_ANNOTATION)
        command = next((c for c in COMMANDS if c == raw), None)
        if raw is not None and command is None:
            self.port.queue_event("Warning", "RolloutCommandIgnored",
                                  f"{ROLLOUT_ANNOTATION}={raw[:64]!r} is not one of "
                                  f"{', '.join(COMMANDS)}")
        seen = replace(await driver.measure(store, self.agd.name, self.spec, self.record,
                                            driver.observe(rendered, live), self.port, now,
                                            namespace=self.agd.namespace,
                                            prometheus_urls=self.prometheus_urls),
                       command=command)
        decision = await driver.step(self.spec, self.record, seen, self.port, now)
        if raw is not None:  # one-shot: acted on (or refused, with a Warning saying why)
            await self.agd.remove_annotation(ROLLOUT_ANNOTATION)
        self.record = decision.record
        self.requeue_after = decision.requeue_after
        self._decision = decision
        self._seen, self._store = seen, store
        return decision.partition

    async def partition_applied(self) -> None:
        """The StatefulSet carries the partition now: pods below it that must return to the
        stable revision go."""
        if self._decision is not None:
            await driver.return_to_stable(self._decision, self.port, self.agd.name)
        agent = agent_id(self.agd.namespace, self.agd.name)
        if self.record is None and self._before is not None and self._before.decisions_pinned:
            # the rollout's record went (strategy RollingUpdate): its pin must go too
            await driver.set_pin(self._store, self.agd.name, agent, None, self.port)
        if self._seen is not None and self.spec.strategy == "Canary":
            self.record = await driver.give_back_failed(
                self._store, self.agd.name, agent, self.record, self._seen, self.port,
                utcnow())
            self.record = await driver.pin_decisions(
                self._store, self.agd.name, agent, self.record, self._seen, self.port)
            canary = driver.canary_revision_running(self.record, self._seen)
            if canary is not None or driver.canary_revision_running(
                    self._before, self._seen) is not None:
                # pods are listed only around a rollout: the first pass after it relabels
                # the last canaries stable
                await self.port.label_tracks(canary)
            if self.record is not None and self.record.failed_work is not None and (
                    not self.record.failed_work.complete):
                self.requeue_after = min(self.requeue_after or GIVE_BACK_SECONDS,
                                         GIVE_BACK_SECONDS)
