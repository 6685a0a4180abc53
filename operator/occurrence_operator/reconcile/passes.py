"""One idempotent reconcile pass of an AgentDeployment, from the current state of the world.

The object's worker (scheduling.py) runs `ReconcilePass(context, body).run()` on the
AgentDeployment it just read; the pass reads everything it owns and converges:

1. validate the spec (failures: condition + Warning event, no crash loop);
2. read the database URL from the Secret (missing: condition + Warning event, retry);
3. the token Secret, Service, PDB and NetworkPolicy (owned_objects.py; never another's object);
4. migrations (migrations.py): create the Job for the current hash if absent (never patch
   it), record `status.lastMigration` when it succeeds, `MigrationsFailed` when it fails;
5. occurrence ids (occurrence_ids.py): claim `<name>-0..` in the registry; ids another
   AgentDeployment owns stop everything below (`Degraded`/`OccurrenceIdConflict`);
6. size (drain/): scale-up, the scale-down drain protocol, creation; the opt-in rebalance
   after a scale-up; the skip-drain bypass with the database unreachable; retention;
7. template: apply the StatefulSet template only once migrations succeeded;
8. status (derived_status.py): derived in full, written only where it differs.

A no-op pass makes zero API writes (`kube.needs_apply`, the status diff).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pydantic import ValidationError

from occurrence_store import OccurrenceState, Store
from occurrence_store.unreachable import STORE_ERRORS, is_unreachable

from .. import autoscaling, drain
from ..kube import may_act
from ..kube.agd_object import AgentDeploymentObject
from ..kube.client import ApiError, needs_apply, rejected_as_invalid
from ..kube.owned_objects import apply_owned_objects
from ..kube.secrets import SecretProblem, database_secret_path, database_url
from ..model import naming
from ..model.conditions import DEGRADED, READY
from ..model.never_adopt import NAME_CONFLICT, NameConflict
from ..model.owner import Owner
from ..model.pause import PAUSED, REASON_UNKNOWN_VALUE
from ..model.pause import read_request as read_pause_request
from ..model.spec import (
    DEFAULT_DRAIN_TIMEOUT_SECONDS,
    AgentDeploymentSpec,
    refuse_operator_account,
    refuse_unsafe_pod_shape,
)
from ..model.timeutil import parse_time, utcnow
from ..model.wellknown import agent_id
from ..render.objects import render
from ..render.statefulset import StatefulSetSize, build_statefulset
from ..rollout import Rollout
from .derived_status import (
    DATABASE_UNAVAILABLE,
    OCCURRENCE_ID_CONFLICT,
    ConditionSet,
    Problem,
    StatusDocument,
    StatusInputs,
    derive_status,
    paused_status,
    problem_status,
    short_error,
)
from .migrations import track_migrations
from .occurrence_ids import claim_occurrence_ids, own_occurrences
from .passcontext import PassContext
from .retention import retain_if_due

log = logging.getLogger(__name__)


RETRY_SECONDS = 10.0
"""Requeue after a problem the operator cannot fix itself (missing Secret, database down)."""


class ReconcilePass:
    """One reconcile of one AgentDeployment; holds what it read and what it will write."""

    def __init__(self, context: PassContext, body: dict[str, Any]) -> None:
        self.context = context
        self.kube = context.kube
        self.agd = AgentDeploymentObject(context.kube, body, context.instance)
        self.name, self.namespace = self.agd.name, self.agd.namespace
        self.agent_id = agent_id(self.namespace, self.name)
        self.conditions = ConditionSet(
            list(self.agd.status.get("conditions") or []), body["metadata"].get("generation"),
            utcnow())
        self.before = [dict(c) for c in self.conditions.conditions]
        self.requeue: float | None = None
        self.autoscaled: autoscaling.Report | None = None

    def want_requeue(self, seconds: float | None) -> None:
        if seconds is not None and (self.requeue is None or seconds < self.requeue):
            self.requeue = seconds

    async def run(self) -> float | None:
        """The pass; returns the requeue delay it asks for (None: just resync)."""
        try:
            return await self._run()
        except (asyncio.CancelledError, may_act.Interrupted):
            self.agd.events = []  # stopped (paused, exiting): post nothing more
            raise
        finally:
            if self.agd.events:
                await self.agd.flush_events()

    async def _run(self) -> float | None:
        paused, annotation_problem = read_pause_request(self.agd.annotations)
        if paused:
            await self._write(paused_status(self.conditions, before=self.before),
                              partial=True)
            return None
        if annotation_problem is not None:
            self.conditions.set(PAUSED, "False", REASON_UNKNOWN_VALUE, annotation_problem)
        else:
            self.conditions.remove(PAUSED)
        try:
            spec = AgentDeploymentSpec.model_validate(self.agd.body.get("spec") or {})
            naming.validate_name(self.name)
            naming.fenced_ordinals(spec.fenced_occurrences, self.name)
            refuse_operator_account(spec, self.namespace, self.context.own_service_account)
            refuse_unsafe_pod_shape(spec)
        except (ValidationError, ValueError) as e:
            await self._stop_invalid(short_error(e))
            return None
        try:
            url = await database_url(self.kube, self.namespace, spec.database.secret_ref,
                                     max_age=self.context.resync_seconds,
                                     allow_sqlite=self.context.allow_sqlite)
        except SecretProblem as e:
            self.conditions.set(DEGRADED, "True", e.reason, str(e))
            await self._write(problem_status(self.conditions, before=self.before))
            return RETRY_SECONDS
        try:
            inputs = await self._converge(spec, url)
        except NameConflict as e:
            log.warning("%s/%s: %s", self.namespace, self.name, e)
            self.conditions.set(DEGRADED, "True", NAME_CONFLICT, str(e))
            self.conditions.set(READY, "False", NAME_CONFLICT, "a name it needs is taken")
            await self._write(problem_status(self.conditions, before=self.before))
            return RETRY_SECONDS
        except ApiError as e:
            if not rejected_as_invalid(e):
                raise
            # A pass-through core/v1 field (a quantity, a probe) the CRD schema cannot check
            # was refused when the rendered object was written: tell the user, keep running.
            message = f"the API server rejected a rendered object: {short_error(e.message)}"
            log.warning("%s/%s: %s", self.namespace, self.name, message)
            await self._stop_invalid(message)
            return RETRY_SECONDS
        document = derive_status(inputs, self.conditions, before=self.before)
        if inputs.occurrences is not None:
            self.context.metrics.set_pending(self.namespace, self.name, {
                o.occurrence_id: o.pending_tasks + o.active_tasks for o in inputs.occurrences},
                {o.occurrence_id: o.heartbeat_age() for o in inputs.occurrences
                 if o.state != OccurrenceState.RETIRED})
        await self._write(document)
        return self.requeue

    async def _converge(self, spec: AgentDeploymentSpec, url: str) -> StatusInputs:
        """Steps 3 to 7; what the status is derived from."""
        owner = Owner.from_body(self.agd.body)
        rendered = render(spec, owner, 0, self.context.metrics_allowed_from)
        for event in await apply_owned_objects(self.kube, owner, rendered,
                                               self.context.resync_seconds):
            self.agd.event(*event)
        migration, requeue = await track_migrations(self.agd, rendered, self.conditions.now)
        self.want_requeue(requeue)
        migrated = migration.state in ("Succeeded", "Disabled")
        sizing = await drain.Sizing.read(self.agd, spec, owner, self.context.metrics)
        problem: Problem | None = None
        store: Store | None = None
        if sizing.statefulset is not None or migrated:
            try:
                store = await self.context.stores.get(url, user=(self.namespace, self.name))
                spec, self.autoscaled = await autoscaling.autoscale(
                    self.agd, spec, store, self.context.autoscalers, self.context.metrics,
                    agent_id=self.agent_id, draining=sizing.draining)
                self.want_requeue(self.autoscaled.requeue_after if self.autoscaled else None)
                problem = await self._claim_ids(store, sizing.ids_needed(spec.replicas))
                if problem is None:
                    await sizing.converge(spec, store, self.agent_id)
                    if note := await retain_if_due(store, self.agent_id, spec.retention,
                                                   self.context.retention_runs):
                        self.agd.event("Normal", "RetentionApplied", note)
            except STORE_ERRORS as e:  # unreachable (skip-drain may apply) or not (unmigrated,
                # bad data), by type; anything else is a bug of ours and propagates
                unreachable = is_unreachable(e)
                problem = Problem(
                    DATABASE_UNAVAILABLE if unreachable else "DatabaseError",
                    f"database {'unavailable' if unreachable else 'error'}: "
                    f"{type(e).__name__}: {short_error(e)}")
                log.warning("%s/%s: %s", self.namespace, self.name, problem.message)
                await self.context.stores.discard(url, store)
                self.kube.forget(database_secret_path(self.namespace, spec.database.secret_ref))
                self.want_requeue(RETRY_SECONDS)
                await sizing.after_database_error(unreachable=unreachable)
            self.want_requeue(sizing.requeue_after)
        sts = sizing.statefulset
        conflict = problem is not None and problem.reason == OCCURRENCE_ID_CONFLICT
        rollout = Rollout(self.agd, spec.rollout, self.context.metrics,
                          prometheus_urls=self.context.prometheus_urls)
        if migrated and sts is not None and not conflict:
            replicas = StatefulSetSize.of(sts).replicas
            partition = await rollout.partition_for(build_statefulset(spec, owner, replicas), sts,
                                                    store if problem is None else None)
            self.want_requeue(rollout.requeue_after)
            desired_sts = build_statefulset(spec, owner, replicas, partition)
            if needs_apply(desired_sts, sts):
                sts = await self.kube.apply(desired_sts)
                self.agd.event("Normal", "StatefulSetUpdated", "StatefulSet template applied")
            await rollout.partition_applied()
            self.want_requeue(rollout.requeue_after)  # giving back failed work: soon again
        await sizing.finish()
        occurrences = None if problem is not None else await own_occurrences(
            self.context.stores, url, self.name, self.agent_id)
        scaled = self.autoscaled
        return StatusInputs(desired=spec.replicas, selector=rendered.selector,
                            migration=migration, sts=sts, record=sizing.record,
                            rollout=rollout.record,
                            occurrences=occurrences, problem=problem,
                            autoscaling=autoscaling.status_of(spec.autoscaling, scaled,
                                                              self.agd.status),
                            autoscaler_conflict=scaled.conflict if scaled else None,
                            fenced=sum(1 for k in naming.fenced_ordinals(
                                spec.fenced_occurrences, self.name) if k < spec.replicas))

    async def _claim_ids(self, store: Store, count: int) -> Problem | None:
        """Claim the occurrence ids `<name>-0..count-1` for this AgentDeployment."""
        problem = await claim_occurrence_ids(
            store, self.name, count, agent_id=self.agent_id,
            owner_uid=self.agd.body["metadata"].get("uid"))
        if problem is not None:
            log.warning("%s/%s: %s", self.namespace, self.name, problem.message)
            self.want_requeue(RETRY_SECONDS)
        return problem

    async def _stop_invalid(self, message: str) -> None:
        self.conditions.set(DEGRADED, "True", "InvalidSpec", message)
        self.conditions.set(READY, "False", "InvalidSpec", "the spec is invalid")
        await self._write(problem_status(self.conditions, before=self.before))

    async def _write(self, document: StatusDocument, *, partial: bool = False) -> None:
        """Post the document's events, set the gauges and write the status where it differs.
        `partial`: the document holds the conditions and the phase only (a paused pass): the
        gauges of what it does not say keep what the last full pass set."""
        for type_, reason, message in document.events:
            self.agd.event(type_, reason, message)
        wire = document.to_wire()
        if partial:
            self.context.metrics.set_conditions(self.namespace, self.name,
                                                wire.get("conditions") or [])
            await self.agd.write_status(wire)
            return
        record = document.status.scale_down
        spec = self.agd.body.get("spec") or {}
        self.context.metrics.set_status(
            self.namespace, self.name, conditions=wire.get("conditions") or [],
            drain_started_at=parse_time(record.started_at).timestamp()
            if record is not None and drain.is_active(record) else None,
            drain_timeout_seconds=(spec.get("drain") or {}).get(
                "timeoutSeconds", DEFAULT_DRAIN_TIMEOUT_SECONDS),
            desired=int(spec.get("replicas") or 0),
            ready=int(wire.get("readyReplicas") or 0))
        if "rollout" in wire:  # (a pass stopped by a problem says nothing of it)
            self.context.metrics.set_rollout_phase(
                self.namespace, self.name, (wire["rollout"] or {}).get("phase"))
        await self.agd.write_status(wire)
