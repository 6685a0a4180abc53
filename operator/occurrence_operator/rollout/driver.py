"""Carries out `planner` decisions: persist the record, post the events, hand back the
partition for the template step to apply — in that order (the record before the partition).

`RolloutPort` is all the driver needs of the cluster; `cluster.KubeRolloutPort` is the
Kubernetes side (an in-memory fake in tests/unit/operator/test_rollout_driver.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, Protocol, TypedDict

from occurrence_store import AgentId, Store
from occurrence_store.requeue import MAX_BATCH
from occurrence_store.unreachable import STORE_ERRORS

from ..kube.client import is_subset
from ..kube.events import EventType
from ..model.naming import occurrence_id
from ..model.spec import RolloutSpec
from ..model.status import RolloutStatus
from ..model.timeutil import parse_time
from ..model.wellknown import agent_id
from ..render.statefulset import StatefulSetSize
from . import prometheus
from .planner import Observed, RolloutDecision, gates_due, is_active, plan

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

    async def label_tracks(self, canary_revision: str | None) -> int:
        """Label the AgentDeployment's pods `occurrence.dev/track`: canary those on
        `canary_revision`, stable the others (None: all stable); returns how many changed."""

    def requeued(self, tasks: int) -> None:
        """Count tasks a rolled-back revision failed that went back to pending."""

    def database_failed(self, what: str) -> None:
        """Count a rollout step the database did not answer (`GiveBackFailed`,
        `PinFailed`: tried again next pass)."""


async def _no_reading() -> prometheus.PrometheusReading | None:
    return None


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
                  now: datetime, *, namespace: str,
                  prometheus_urls: Sequence[str] = ()) -> Observed:
    """`seen` with what the canary and the stable occurrences finished since the wave
    started baking (when the database answers) and its Prometheus gates' readings, when it
    bakes and has gates."""
    if record is None or not is_active(record) or not record.bake_started_at:
        return seen
    waves = rollout.wave_list()
    gates = waves[min(record.wave_index, len(waves) - 1)].gates or []
    if not gates or not gates_due(record, float(rollout.analysis_interval_seconds), now):
        return seen  # nothing the planner would evaluate this pass: ask nobody
    seconds = (now - parse_time(record.bake_started_at)).total_seconds()
    split = min(record.partition, seen.replicas)
    canary_ids = [occurrence_id(name, k) for k in range(split, seen.replicas)]
    stable_ids = [occurrence_id(name, k) for k in range(split)]
    if any(g.prometheus is not None for g in gates):
        variables = {
            "canaryRevision": record.canary_revision or "",
            "stableRevision": record.stable_revision or "",
            "canaryOccurrences": prometheus.alternation(canary_ids),
            "stableOccurrences": prometheus.alternation(stable_ids),
            "namespace": namespace, "name": name, "bakeSeconds": str(max(1, int(seconds)))}
        readings = await asyncio.gather(*(
            prometheus.read(g.prometheus, variables, prometheus_urls) if g.prometheus
            else _no_reading() for g in gates))
        seen = replace(seen, prometheus=tuple(readings))
    if store is None or not any(g.metric is not None for g in gates):
        return seen
    agent = agent_id(namespace, name)
    try:
        canary = await store.outcomes.finished(
            canary_ids, seconds=seconds, **by_revision(agent, record.canary_revision))
        stable = await store.outcomes.finished(
            stable_ids, seconds=seconds, **by_revision(agent, record.stable_revision)) \
            if stable_ids else None
    except STORE_ERRORS as e:
        log.warning("%s: rollout gates not measured (the wave keeps baking): %s: %s", name,
                    type(e).__name__, e)
        port.measurement_failed()
        return seen
    return replace(seen, canary=canary, stable=stable)


class _RevisionScope(TypedDict, total=False):
    """Keyword arguments of `store.outcomes.finished`: the agent and revision counted."""

    agent_id: AgentId
    revision: str


def by_revision(agent: AgentId, revision: str | None) -> _RevisionScope:
    """The outcome count's scope: the track's revision when the record knows it (the work
    that revision did, on whichever pod), else the track's pods alone."""
    return {"agent_id": agent, "revision": revision} if revision else {}


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


SINCE_MARGIN_SECONDS = 30.0
"""Slack on "failed since the rollout started": the operator's clock stamped the start, the
database's clock stamps the failures. (The revision alone already selects the work.)"""


def runs_nowhere(revision: str, seen: Observed) -> bool:
    """No pod of the StatefulSet runs `revision` any more: every ordinal has a ready pod on
    another one (a pod that ends is replaced under the same name only once it is gone)."""
    if not seen.observed:
        return False
    if seen.replicas == 0:
        return True
    if seen.ready < seen.replicas:
        return False
    if seen.update_revision == revision:
        return seen.updated == 0
    return seen.updated >= seen.replicas


async def give_back_failed(store: Store | None, name: str, agent_id: AgentId,
                           record: RolloutStatus | None, seen: Observed, port: RolloutPort,
                           now: datetime) -> RolloutStatus | None:
    """After a rollback (`record.failed_work`): once the rolled-back revision runs on no pod
    and no live occurrence is registered on it, the tasks it failed go back to pending, a
    bounded batch per pass, until nothing it failed is left — then the record says so and
    the passes stop asking. Not before: a canary still shutting down would claim a task given
    back and fail it again (a bad version fails the same task the same way), and a task goes
    back once per revision. Every task goes back once (the store's audit rows), so an
    operator restarted half-way repeats nothing."""
    work = record.failed_work if record is not None else None
    if store is None or record is None or work is None or work.complete:
        return record
    if not runs_nowhere(work.revision, seen):  # its pods still run: wait for them to go
        return record
    ids = [occurrence_id(name, k) for k in range(seen.replicas)]
    since = max(0.0, (now - parse_time(work.since)).total_seconds()) + SINCE_MARGIN_SECONDS
    try:
        # no process on it either (the registry: a pod's replacement can be Ready while the
        # old process still ends); checked before the batch, so nothing comes after it
        if await store.registry.live_count(agent_id, revision=work.revision):
            return record
        back = await store.requeues.give_back(
            agent_id, work.revision, ids, since_seconds=since,
            reason=f"revision {work.revision} rolled back (rollout started {work.since})")
    except STORE_ERRORS as e:
        log.warning("%s: failed work of revision %s not given back (next pass tries again): "
                    "%s: %s", name, work.revision, type(e).__name__, e)
        port.database_failed("GiveBackFailed")
        return record
    complete = len(back) < MAX_BATCH
    if not back and not complete:
        return record
    updated = record.model_copy(update={"failed_work": work.model_copy(
        update={"requeued": work.requeued + len(back), "complete": complete})})
    if back:
        port.requeued(len(back))
        port.queue_event("Normal", "FailedWorkRequeued",
                         f"{len(back)} task(s) revision {work.revision} failed went back to "
                         f"pending ({updated.failed_work.requeued if updated.failed_work else 0}"
                         " so far); each is worked again on the stable revision")
        log.info("%s: %d task(s) revision %s failed went back to pending", name, len(back),
                 work.revision)
    await port.persist(updated)
    return updated


def pin_wanted(record: RolloutStatus, seen: Observed) -> bool:
    """Shared decisions stay with the stable revision while a rollout is under way, and
    after a rollback while the rolled-back revision still runs somewhere."""
    return bool(record.stable_revision) and (
        is_active(record) or canary_revision_running(record, seen) is not None)


async def pin_decisions(store: Store | None, name: str, agent_id: AgentId,
                        record: RolloutStatus | None, seen: Observed, port: RolloutPort
                        ) -> RolloutStatus | None:
    """Pin (or unpin) the agent's shared decisions to the stable revision in the database
    when that changes; the record remembers it, so a steady pass writes nothing."""
    if store is None or record is None:
        return record
    want = pin_wanted(record, seen)
    if want == record.decisions_pinned:
        return record
    if not await set_pin(store, name, agent_id, record.stable_revision if want else None, port):
        return record
    updated = record.model_copy(update={"decisions_pinned": want})
    await port.persist(updated)
    return updated


async def set_pin(store: Store | None, name: str, agent_id: AgentId, stable: str | None,
                  port: RolloutPort) -> bool:
    """Write the pin (None: remove it); False when the database did not answer (counted,
    logged: the next pass tries again)."""
    if store is None:
        return False
    try:
        await store.shared_for(agent_id).pin_to_stable(stable)
    except STORE_ERRORS as e:
        log.warning("%s: shared decisions not %s (next pass tries again): %s: %s", name,
                    "pinned to the stable revision" if stable else "unpinned",
                    type(e).__name__, e)
        port.database_failed("PinFailed")
        return False
    log.info("%s: shared decisions %s", name,
             f"pinned to the stable revision {stable}" if stable else "unpinned")
    return True


def canary_revision_running(record: RolloutStatus | None, seen: Observed) -> str | None:
    """The revision whose pods are labelled canary: the rollout's while it is under way, or
    while a rolled-back one still runs somewhere; None: every pod is stable."""
    if record is None or not record.canary_revision:
        return None
    if is_active(record):
        return record.canary_revision
    if record.phase == "RolledBack" and not runs_nowhere(record.canary_revision, seen):
        return record.canary_revision
    return None
