"""Carries out `planner` decisions: persist the record, post the events, hand back the
partition for the template step to apply — in that order (the record before the partition).

`RolloutPort` is all the driver needs of the cluster; `cluster.KubeRolloutPort` is the
Kubernetes side (an in-memory fake in tests/unit/operator/test_rollout_driver.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any, Protocol

from occurrence_store import Store
from occurrence_store.unreachable import STORE_ERRORS

from ..events import EventType
from ..kube import is_subset
from ..naming import occurrence_id
from ..spec import RolloutSpec
from ..statefulset import StatefulSetSize
from ..status import RolloutStatus
from ..timeutil import parse_time
from .planner import Observed, RolloutDecision, is_active, plan

log = logging.getLogger(__name__)


class RolloutPort(Protocol):
    """The Kubernetes side of a rollout."""

    async def persist(self, record: RolloutStatus | None) -> None:
        """Write `.status.rollout` (None: remove it)."""

    def queue_event(self, type_: EventType, reason: str, message: str) -> None:
        """Queue an Event on the AgentDeployment, posted at the end of the pass (and count
        it in `occurrence_operator_rollout_events_total`)."""

    async def delete_pods_off(self, revision: str, below: int) -> int:
        """Delete the AgentDeployment's pods with an ordinal below `below` that are not on
        `revision` (and not already terminating); returns how many."""

    def measurement_failed(self) -> None:
        """Count a gate measurement the database did not answer."""


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


async def measure(store: Store | None, name: str, rollout: RolloutSpec,
                  record: RolloutStatus | None, seen: Observed, port: RolloutPort,
                  now: datetime) -> Observed:
    """`seen` with what the canary and the stable occurrences finished since the wave
    started baking, when it bakes and has gates (and the database answers)."""
    if store is None or record is None or not is_active(record) or not record.bake_started_at:
        return seen
    waves = rollout.wave_list()
    if not waves[min(record.wave_index, len(waves) - 1)].gates:
        return seen
    seconds = (now - parse_time(record.bake_started_at)).total_seconds()
    split = min(record.partition, seen.replicas)
    canary_ids = [occurrence_id(name, k) for k in range(split, seen.replicas)]
    stable_ids = [occurrence_id(name, k) for k in range(split)]
    try:
        canary = await store.outcomes.finished(canary_ids, seconds=seconds)
        stable = await store.outcomes.finished(stable_ids, seconds=seconds) \
            if stable_ids else None
    except STORE_ERRORS as e:
        log.warning("%s: rollout gates not measured (the wave keeps baking): %s: %s", name,
                    type(e).__name__, e)
        port.measurement_failed()
        return seen
    return replace(seen, canary=canary, stable=stable)


async def step(rollout: RolloutSpec, record: RolloutStatus | None, seen: Observed,
               port: RolloutPort, now: datetime) -> RolloutDecision:
    """Plan, persist the record if it changed, queue the events."""
    decision = plan(rollout, record, seen, now)
    if decision.record != record:
        await port.persist(decision.record)
    for event in decision.events:
        port.queue_event(*event)
    return decision


async def return_to_stable(decision: RolloutDecision, port: RolloutPort, name: str) -> None:
    """After the decision's partition was applied: the pods below it that are not on the
    stable revision go (the StatefulSet recreates them on it). Deleting before the apply
    would let the StatefulSet recreate them on the revision they are leaving."""
    stable = decision.record.stable_revision if decision.record is not None else None
    if not decision.delete_canaries:
        return
    if stable is None:
        log.warning("%s: no known stable revision: pods below the partition are left on "
                    "theirs (delete them by hand)", name)
    elif deleted := await port.delete_pods_off(stable, below=decision.partition):
        log.info("%s: deleted %d pods below the partition not on the stable revision %s",
                 name, deleted, stable)
