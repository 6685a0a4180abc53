"""Carries out `planner` decisions: persist the record, post the events, hand back the
partition for the template step to apply — in that order (the record before the partition).

`RolloutPort` is all the driver needs of the cluster; `cluster.KubeRolloutPort` is the
Kubernetes side (a fake in unit tests).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

from ..events import EventType
from ..kube import is_subset
from ..spec import RolloutSpec
from ..statefulset import StatefulSetSize
from ..status import RolloutStatus
from .planner import Observed, RolloutDecision, plan


class RolloutPort(Protocol):
    """The Kubernetes side of a rollout."""

    async def persist(self, record: RolloutStatus | None) -> None:
        """Write `.status.rollout` (None: remove it)."""

    def queue_event(self, type_: EventType, reason: str, message: str) -> None:
        """Queue an Event on the AgentDeployment, posted at the end of the pass."""


def template_hash(statefulset: Mapping[str, Any]) -> str:
    """A short, stable hash of a rendered StatefulSet's pod template."""
    template = (statefulset.get("spec") or {}).get("template") or {}
    canonical = json.dumps(template, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def observe(desired: Mapping[str, Any], live: Mapping[str, Any]) -> Observed:
    """What the planner needs of the rendered and the live StatefulSet."""
    size = StatefulSetSize.of(live)
    status = live.get("status") or {}
    want = (desired.get("spec") or {}).get("template") or {}
    have = (live.get("spec") or {}).get("template") or {}
    return Observed(
        template=template_hash(desired), template_changed=not is_subset(want, have),
        replicas=size.replicas, ready=size.ready, updated=size.updated, observed=size.observed,
        update_revision=status.get("updateRevision"),
        current_revision=status.get("currentRevision"))


async def step(rollout: RolloutSpec, record: RolloutStatus | None, seen: Observed,
               port: RolloutPort, now: datetime) -> RolloutDecision:
    """Plan, persist the record if it changed, queue the events."""
    decision = plan(rollout, record, seen, now)
    if decision.record != record:
        await port.persist(decision.record)
    for event in decision.events:
        port.queue_event(*event)
    return decision
