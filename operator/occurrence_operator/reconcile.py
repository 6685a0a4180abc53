"""One idempotent reconcile of an AgentDeployment, from the current state of the world.

Create, resume, update, the periodic resync and events of owned objects all end up in
`Reconciler.run_once(namespace, name)`, called only by the object's worker
(`Reconciler.serve`, a Kopf daemon: paused with the replica under peering), which re-reads
the AgentDeployment and everything it owns, and converges:

1. validate the spec (failures: condition + Warning event, no crash loop);
2. read the database URL from the Secret (missing: condition + Warning event, retry);
3. apply the Service and PodDisruptionBudget if they differ from the rendering;
4. migrations: create the Job for the current hash if absent (never patch it), record
   `status.lastMigration` when it succeeds, `MigrationsFailed` when it fails;
5. ownership: claim the occurrence ids `<name>-0..` for this AgentDeployment in the registry;
   ids another AgentDeployment owns on the same database stop everything below
   (`Degraded`/`OccurrenceIdConflict`): none of the other's occurrences is ever touched;
6. size: run the drain driver (scale-up, the scale-down drain protocol, creation), then
   the opt-in rebalance of pending backlog after a scale-up (`status.rebalance`);
7. template: apply the StatefulSet template only once migrations succeeded;
8. status: computed in full, written only where it differs.

Nothing is written when nothing differs (`kube.needs_apply`, status diff), so a no-op
reconcile makes zero API writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from occurrence_store import Occurrence, Store
from occurrence_store.unreachable import is_unreachable

from . import api, conditions, drainplan, gate, naming
from .adoption import NAME_CONFLICT, NameConflict, check_owned, owned_by
from .conditions import PhaseInputs, compute_phase, find_condition, set_condition
from .drain_driver import drive
from .events import EventType, post
from .kube import ApiError, Kube, collection_path, needs_apply, object_path
from .metrics import OperatorMetrics
from .owner import Owner
from .render import Rendered, render
from .secrets import SecretProblem, database_url, ensure_token_secret
from .spec import AgentDeploymentSpec
from .statefulset import build_statefulset
from .status import ScaleDownStatus
from .stores import Stores
from .timeutil import format_time, utcnow

log = logging.getLogger(__name__)

READY = conditions.READY
MIGRATIONS_COMPLETE = conditions.MIGRATIONS_COMPLETE
MIGRATIONS_FAILED = conditions.MIGRATIONS_FAILED
DRAINING = conditions.DRAINING
DEGRADED = conditions.DEGRADED

RESYNC_SECONDS = float(os.environ.get("OCCURRENCE_OPERATOR_RESYNC_SECONDS", "10"))
"""Periodic re-check of every AgentDeployment, also when nothing woke it up."""
RETRY_SECONDS = 10.0
"""Requeue after a problem the operator cannot fix itself (missing Secret, database down)."""
MIGRATION_POLL_SECONDS = 5.0
HEARTBEAT_TOLERANCE_SECONDS = 30
"""`status.occurrences[].heartbeatAgeSeconds` is rewritten only when it is off by more than
this (or the status is written anyway): a healthy steady state writes nothing."""

SKIP_DRAIN_ANNOTATION = f"{api.GROUP}/skip-drain"
OCCURRENCE_ID_CONFLICT = "OccurrenceIdConflict"
DATABASE_UNAVAILABLE = "DatabaseUnavailable"


@dataclass(frozen=True)
class Problem:
    """Why the database side of this pass could not be done (reason: a condition reason)."""

    reason: str
    message: str


def ad_path(namespace: str, name: str) -> str:
    return object_path(api.API_VERSION, api.KIND, namespace, name)


@dataclass
class _Key:
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    """Set by `trigger`: reconcile as soon as the object's worker is free."""
    due: float | None = None
    """Loop time of a requeue the last pass asked for."""


@dataclass
class _Migration:
    state: conditions.MigrationState
    reason: str = ""
    message: str = ""
    last: dict[str, Any] | None = None


class Reconciler:
    def __init__(self, kube: Kube, stores: Stores, metrics: OperatorMetrics) -> None:
        self.kube = kube
        self.stores = stores
        self.metrics = metrics
        self._keys: dict[tuple[str, str], _Key] = {}

    # -- scheduling ------------------------------------------------------------------------
    #
    # Each AgentDeployment has one worker: `serve`, run as its Kopf daemon (handlers.py).
    # All reconciles of the object happen in that worker, one at a time; everything else
    # (create/update/resume handlers, events of owned objects) only wakes it up. Kopf stops
    # (and cancels) daemons when peering pauses this replica, so a paused replica has no
    # timer, retry or queued trigger left that could reconcile or drain: there is no
    # scheduling outside the daemon. `gate` turns a stop that races with a pass into
    # `Interrupted` before the next write.

    async def serve(
        self, namespace: str, name: str, stopped: Any, resync_seconds: float | None = None
    ) -> None:
        """The object's worker: reconcile when woken, when a requeue is due, and every
        `resync_seconds`; until `stopped` (Kopf's daemon flag) is set or it is cancelled."""
        loop = asyncio.get_running_loop()
        resync = RESYNC_SECONDS if resync_seconds is None else resync_seconds
        key = self._key(namespace, name)
        key.wake.set()  # (re)started: reconcile now (after a pause: resume the drain)
        token = gate.bind(lambda: not stopped)
        try:
            while not stopped:
                timeout = resync
                if key.due is not None:
                    timeout = min(timeout, max(0.0, key.due - loop.time()))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(key.wake.wait(), timeout)
                if stopped:
                    break
                key.wake.clear()
                key.due = None
                requeue = await self.run_once(namespace, name)
                if requeue is not None:
                    key.due = loop.time() + max(0.1, requeue)
        except gate.Interrupted:
            log.info("%s/%s: stopped mid-reconcile (%s)", namespace, name, _reason_of(stopped))
        finally:
            gate.unbind(token)

    async def run_once(self, namespace: str, name: str) -> float | None:
        """One reconcile; returns the requeue delay it asks for (None: just resync)."""
        try:
            requeue = await self._reconcile(namespace, name)
            self.metrics.reconciled("success")
            return requeue
        except (asyncio.CancelledError, gate.Interrupted):
            raise
        except Exception:
            log.exception("reconcile of %s/%s failed; retrying", namespace, name)
            self.metrics.reconciled("error")
            return RETRY_SECONDS

    def trigger(self, namespace: str, name: str) -> None:
        """Wake the object's worker (a no-op for the API while this replica is paused)."""
        self._key(namespace, name).wake.set()

    def forget(self, namespace: str, name: str) -> None:
        self._keys.pop((namespace, name), None)
        self.metrics.forget(namespace, name)

    async def close(self) -> None:
        """Nothing of ours runs outside the Kopf daemons (which Kopf stops at exit)."""
        self._keys.clear()

    def _key(self, namespace: str, name: str) -> _Key:
        return self._keys.setdefault((namespace, name), _Key())

    # -- the reconcile -----------------------------------------------------------------------

    async def _reconcile(self, namespace: str, name: str) -> float | None:
        ad = await self.kube.get(ad_path(namespace, name))
        if ad is None or ad["metadata"].get("deletionTimestamp"):
            return None
        return await _Pass(self, ad).run()


def rejected_as_invalid(error: ApiError) -> bool:
    """Did the API server refuse an object because of what the spec put in it?

    400/422 are validation failures; a server-side apply of a malformed quantity fails to
    decode and comes back as a 500 whose message says why.
    """
    if error.status in (400, 422):
        return True
    return error.status == 500 and any(
        hint in error.message for hint in ("must match the regular expression", "unable to parse",
                                           "failed to create typed patch object"))


class _Pass:
    """One reconcile of one AgentDeployment; holds what it read and what it will write."""

    def __init__(self, reconciler: Reconciler, ad: dict[str, Any]) -> None:
        self.r = reconciler
        self.kube = reconciler.kube
        self.ad = ad
        meta = ad["metadata"]
        self.name: str = meta["name"]
        self.namespace: str = meta["namespace"]
        self.uid: str = meta.get("uid", "")
        self.generation: int | None = meta.get("generation")
        self.status: dict[str, Any] = dict(ad.get("status") or {})
        self.conditions: list[dict[str, Any]] = list(self.status.get("conditions") or [])
        self.now = utcnow()
        self.events: list[tuple[EventType, str, str]] = []
        self.requeue: float | None = None

    # helpers ------------------------------------------------------------------------------

    def condition(self, type_: str, status: str, reason: str, message: str) -> None:
        self.conditions = set_condition(
            self.conditions,
            type_,
            status,  # type: ignore[arg-type]
            reason,
            message,
            observed_generation=self.generation,
            now=self.now,
        )

    def event(self, type_: EventType, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))

    def want_requeue(self, seconds: float | None) -> None:
        if seconds is not None and (self.requeue is None or seconds < self.requeue):
            self.requeue = seconds

    async def write_status(self, desired: Mapping[str, Any]) -> None:
        """Merge-patch only the status fields that differ from the live status."""
        live = self.ad.get("status") or {}
        patch = {k: v for k, v in desired.items() if not _same(k, v, live.get(k))}
        if not patch:
            return
        result = await self.kube.merge_patch(
            ad_path(self.namespace, self.name) + "/status", {"status": patch}
        )
        self.ad["status"] = (result or {}).get("status") or {
            **live,
            **{k: v for k, v in patch.items() if v is not None},
        }

    async def flush_events(self) -> None:
        events, self.events = self.events, []
        for type_, reason, message in events:
            await post(self.kube, self.ad, type_, reason, message)

    # the pass -------------------------------------------------------------------------------

    async def run(self) -> float | None:
        try:
            return await self._run()
        except (asyncio.CancelledError, gate.Interrupted):
            self.events = []  # stopped (paused, exiting): post nothing more
            raise
        finally:
            if self.events:
                await self.flush_events()

    async def _run(self) -> float | None:
        before = [dict(c) for c in self.conditions]
        try:
            spec = AgentDeploymentSpec.model_validate(self.ad.get("spec") or {})
            naming.validate_name(self.name)
        except (ValidationError, ValueError) as e:
            self.condition(DEGRADED, "True", "InvalidSpec", _short(e))
            self.condition(READY, "False", "InvalidSpec", "the spec is invalid")
            await self._finish_problem(before)
            return None

        try:
            url = await database_url(self.kube, self.namespace, spec.database.secret_ref)
        except SecretProblem as e:
            self.condition(DEGRADED, "True", e.reason, str(e))
            await self._finish_problem(before)
            return RETRY_SECONDS

        try:
            owner = Owner.from_body(self.ad)
            rendered = render(spec, owner, 0)
            if await ensure_token_secret(self.kube, owner):
                self.event("Normal", "TokensCreated", f"Secret "
                           f"{naming.token_secret_name(self.name)} holds the agent API's tokens")
            for manifest in (rendered.service, rendered.pdb, rendered.network_policy):
                if manifest is not None:
                    await self._apply_if_changed(manifest)
            if rendered.network_policy is None:
                await self._delete_if_owned(object_path(
                    "networking.k8s.io/v1", "NetworkPolicy", self.namespace,
                    naming.network_policy_name(self.name)))

            migration = await self._migrations(rendered)
            sts_path = object_path("apps/v1", "StatefulSet", self.namespace, self.name)
            sts = await self.kube.get(sts_path)
            check_owned(sts, owner.uid)
            migrated = migration.state in ("Succeeded", "Disabled")

            record = _record(self.status.get("scaleDown"))
            problem: Problem | None = None
            bypassed = False
            if sts is not None or migrated:
                try:
                    store = await self.r.stores.get(url)
                    problem = await self._claim_ids(spec, store, sts, record)
                    if problem is None:
                        sts, record = await self._size(spec, owner, store, sts, record)
                        await self._rebalance(spec, store, sts, record)
                except ApiError:
                    raise
                except Exception as e:  # asyncpg/aiosqlite errors, schema not migrated yet...
                    unreachable = is_unreachable(e)
                    problem = Problem(
                        DATABASE_UNAVAILABLE if unreachable else "DatabaseError",
                        f"database {'unavailable' if unreachable else 'error'}: "
                        f"{type(e).__name__}: {_short(e)}")
                    log.warning("%s/%s: %s", self.namespace, self.name, problem.message)
                    await self.r.stores.discard(url)
                    self.want_requeue(RETRY_SECONDS)
                    # what the driver persisted before failing is the truth now
                    record = _record((self.ad.get("status") or {}).get("scaleDown"))
                    sts = await self.kube.get(sts_path)
                    if (unreachable and sts is not None and drainplan.is_active(record)
                            and self._bypass_requested()):
                        assert record is not None
                        sts, record = await self._bypass_drain(sts_path, record)
                        bypassed = True
            conflict = problem is not None and problem.reason == OCCURRENCE_ID_CONFLICT
            if migrated and sts is not None and not conflict:
                current = int((sts.get("spec") or {}).get("replicas") or 0)
                desired_sts = build_statefulset(spec, owner, current)
                if needs_apply(desired_sts, sts):
                    sts = await self.kube.apply(desired_sts)
                    self.event("Normal", "StatefulSetUpdated", "StatefulSet template applied")
            await self._expire_skip_drain(record, bypassed)

        except NameConflict as e:
            self.condition(DEGRADED, "True", NAME_CONFLICT, str(e))
            self.condition(READY, "False", NAME_CONFLICT, "an object with a needed name is "
                           "somebody else's")
            log.warning("%s/%s: %s", self.namespace, self.name, e)
            await self._finish_problem(before)
            return RETRY_SECONDS
        except ApiError as e:
            if not rejected_as_invalid(e):
                raise
            # A pass-through core/v1 field (a quantity, a probe) the CRD schema cannot check
            # was refused when the rendered object was written: tell the user, keep running.
            message = f"the API server rejected a rendered object: {_short(e.message)}"
            self.condition(DEGRADED, "True", "InvalidSpec", message)
            self.condition(READY, "False", "InvalidSpec", "the spec is invalid")
            log.warning("%s/%s: %s", self.namespace, self.name, message)
            await self._finish_problem(before)
            return RETRY_SECONDS
        occurrences = await self._occurrences(url) if problem is None else None
        await self._write_full_status(
            spec, rendered, migration, sts, record, occurrences, problem, before
        )
        return self.requeue

    @property
    def agent_id(self) -> str:
        return api.agent_id(self.namespace, self.name)

    async def _claim_ids(
        self,
        spec: AgentDeploymentSpec,
        store: Store,
        sts: dict[str, Any] | None,
        record: ScaleDownStatus | None,
    ) -> Problem | None:
        """Claim `<name>-0..` for this AgentDeployment; a Problem if another one owns any.

        Every id this pass could touch is claimed first: the StatefulSet's, the desired
        ones', the active drain's departing ones (and ordinal 0, where scale-to-zero parks
        work). Nothing is created, fenced, drained or retired unless all are ours.
        """
        current = int(((sts or {}).get("spec") or {}).get("replicas") or 0)
        upper = max(1, spec.replicas, current,
                    record.from_replicas if drainplan.is_active(record) and record else 0)
        ids = [naming.occurrence_id(self.name, k) for k in range(upper)]
        refused = await store.registry.claim(ids, agent_id=self.agent_id,
                                             owner_uid=self.ad["metadata"].get("uid"))
        if not refused:
            return None
        first = refused[0]
        uid = f" (uid {first.owner_uid})" if first.owner_uid else ""
        names = ", ".join(c.occurrence_id for c in refused[:5]) + (
            f" and {len(refused) - 5} more" if len(refused) > 5 else "")
        message = (
            f"occurrence ids {names} belong to agent {first.owner}{uid} on the same database: "
            "this AgentDeployment would run the same occurrences, so it creates, fences, "
            "drains and retires none of them. Rename it or use another database (if that "
            "agent is gone for good: `occurrence-store occurrences disown ID...`)")
        log.warning("%s/%s: %s", self.namespace, self.name, message)
        self.want_requeue(RETRY_SECONDS)
        return Problem(OCCURRENCE_ID_CONFLICT, message)

    async def _expire_skip_drain(self, record: ScaleDownStatus | None, used: bool) -> None:
        """The skip-drain annotation is one-shot: it never outlives the drain it was set
        for. Once that drain is over (bypassed or not), or if there was none, it goes."""
        if not self._bypass_requested() or drainplan.is_active(record):
            return
        await self.kube.merge_patch(
            ad_path(self.namespace, self.name),
            {"metadata": {"annotations": {SKIP_DRAIN_ANNOTATION: None}}},
        )
        annotations = self.ad["metadata"].get("annotations") or {}
        annotations.pop(SKIP_DRAIN_ANNOTATION, None)
        if not used:
            self.event("Warning", "SkipDrainIgnored",
                       f"annotation {SKIP_DRAIN_ANNOTATION} removed unused: it applies only to "
                       "a drain in progress that cannot reach the database")

    def _bypass_requested(self) -> bool:
        annotations = self.ad["metadata"].get("annotations") or {}
        return str(annotations.get(SKIP_DRAIN_ANNOTATION, "")).lower() == "true"

    async def _bypass_drain(
        self, sts_path: str, record: ScaleDownStatus
    ) -> tuple[dict[str, Any], ScaleDownStatus]:
        """The documented escape hatch for a drain that cannot finish (database down):
        shrink now; the departing occurrences' work stays in the database under their ids
        and returns with them on a later scale-up (which first un-fences them: drainplan).
        Used once: the annotation is removed afterwards (`_expire_skip_drain`)."""
        sts = await self.kube.merge_patch(sts_path, {"spec": {"replicas": record.to_replicas}})
        message = (
            f"drain bypassed by annotation {SKIP_DRAIN_ANNOTATION}: scaled to "
            f"{record.to_replicas} without moving the work of ordinals {record.ordinals}"
        )
        done = record.model_copy(update={"phase": "Done", "message": message})
        await self.write_status({"scaleDown": done.to_wire(), "drainingReplicas": 0})
        self.event("Warning", "DrainBypassed", message)
        return sts, done

    async def _finish_problem(self, before: list[dict[str, Any]]) -> None:
        phase = "Degraded"
        self._transition_events(before)
        await self.write_status(
            {"conditions": self.conditions, "phase": phase, "observedGeneration": self.generation}
        )

    async def _apply_if_changed(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        meta = manifest["metadata"]
        path = object_path(
            manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"]
        )
        live = await self.kube.get(path)
        check_owned(live, self.uid)
        if needs_apply(manifest, live):
            live = await self.kube.apply(manifest)
            if live is not None:
                log.info("%s/%s: applied %s", self.namespace, self.name, manifest["kind"])
        return live or {}

    async def _delete_if_owned(self, path: str) -> None:
        """Remove an object this AgentDeployment no longer renders (never somebody else's)."""
        live = await self.kube.get(path)
        if live is not None and owned_by(live, self.uid):
            await self.kube.delete(path)

    # migrations ---------------------------------------------------------------------------

    async def _migrations(self, rendered: Rendered) -> _Migration:
        last = self.status.get("lastMigration")
        if rendered.migration_job is None:
            return _Migration("Disabled", last=last)
        digest = rendered.migration_hash
        if last and last.get("hash") == digest:
            return _Migration("Succeeded", last=last)
        job_manifest = rendered.migration_job
        job_name = job_manifest["metadata"]["name"]
        path = object_path("batch/v1", "Job", self.namespace, job_name)
        job = await self.kube.get(path)
        if job is None:
            try:
                job = await self.kube.create(
                    collection_path("batch/v1", "Job", self.namespace), job_manifest
                )
            except ApiError as e:
                if e.status != 409:
                    raise
                job = await self.kube.get(path) or {}
            self.event("Normal", "MigrationsStarted", f"created migrations Job {job_name}")
            return _Migration("Running", "JobRunning", f"Job {job_name} is running", last)
        job_status = job.get("status") or {}
        for cond in job_status.get("conditions") or []:
            if cond.get("status") != "True":
                continue
            if cond.get("type") == "Complete":
                completed = job_status.get("completionTime") or format_time(self.now)
                new_last = {"hash": digest, "jobName": job_name, "completedAt": completed}
                return _Migration("Succeeded", last=new_last)
            if cond.get("type") == "Failed":
                reason = cond.get("reason") or "Failed"
                message = f"Job {job_name} failed: {reason}: {cond.get('message') or ''}".strip()
                return _Migration("Failed", reason, message.rstrip(": "), last)
        self.want_requeue(MIGRATION_POLL_SECONDS * 6)  # Job events wake us up sooner
        return _Migration("Running", "JobRunning", f"Job {job_name} is running", last)

    # size: the drain driver -------------------------------------------------------------

    async def _size(
        self,
        spec: AgentDeploymentSpec,
        owner: Owner,
        store: Store,
        sts: dict[str, Any] | None,
        record: ScaleDownStatus | None,
    ) -> tuple[dict[str, Any] | None, ScaleDownStatus | None]:
        ops = _Ops(self, spec, owner, sts)
        current = None if sts is None else int((sts.get("spec") or {}).get("replicas") or 0)
        r = self.r
        result = await drive(
            name=self.name,
            store=store,
            settings=drainplan.DrainSettings.from_spec(spec.drain, spec.recovery),
            desired=spec.replicas,
            current=current,
            record=record,
            ops=ops,
            agent_id=self.agent_id,
            on_transferred=lambda n: r.metrics.transferred(self.namespace, self.name, n),
            on_drain_done=lambda rec, seconds: r.metrics.drain_finished(seconds),
        )
        self.want_requeue(result.requeue_after)
        return ops.sts, result.record

    async def _rebalance(
        self,
        spec: AgentDeploymentSpec,
        store: Store,
        sts: dict[str, Any] | None,
        record: ScaleDownStatus | None,
    ) -> None:
        """`spec.drain.rebalanceOnScaleUp`: once the scale-up recorded in
        `status.rebalance` (by `_Ops.scale`) has all its pods ready, even out the pending
        backlog over `<name>-0..M-1` once, and record it `Done`."""
        wire = self.status.get("rebalance")
        if not wire or wire.get("phase") != "Pending":
            return
        to = int(wire.get("toReplicas") or 0)
        if spec.replicas != to or drainplan.is_active(record):
            message = f"superseded: spec.replicas is {spec.replicas} now"
            await self._record_rebalance({**wire, "phase": "Cancelled", "message": message})
            return
        sts_spec = (sts or {}).get("spec") or {}
        sts_status = (sts or {}).get("status") or {}
        if (
            int(sts_spec.get("replicas") or 0) != to
            or int(sts_status.get("readyReplicas") or 0) < to
            or (sts_status.get("observedGeneration") or 0)
            < ((sts or {}).get("metadata") or {}).get("generation", 0)
        ):
            self.want_requeue(drainplan.POLL_SECONDS)  # StatefulSet events wake us sooner
            return
        ids = [naming.occurrence_id(self.name, k) for k in range(to)]
        gate.check()
        moved = await store.transfers.rebalance(ids, reason="scale-up rebalance")
        total = sum(n for recipients in moved.values() for n in recipients.values())
        flows = "; ".join(
            f"{donor} -> " + ", ".join(f"{r}: {n}" for r, n in sorted(recipients.items()))
            for donor, recipients in sorted(moved.items())
        )
        message = (
            f"moved {total} pending tasks across {to} occurrences ({flows})"
            if total
            else f"pending backlog already even across {to} occurrences"
        )
        done = {
            **wire,
            "phase": "Done",
            "moved": total,
            "completedAt": format_time(utcnow()),
            "message": message[:1000],
        }
        await self._record_rebalance(done)
        self.r.metrics.transferred(self.namespace, self.name, total)
        self.event("Normal", "Rebalanced", message[:1000])

    async def _record_rebalance(self, wire: dict[str, Any]) -> None:
        await self.write_status({"rebalance": wire})
        self.status["rebalance"] = wire

    async def _occurrences(self, url: str) -> list[Occurrence] | None:
        try:
            store = await self.r.stores.get(url)
            rows = await store.registry.list(agent_id=self.agent_id)
        except Exception as e:  # reported through Degraded by the sizing step already
            log.warning("%s/%s: cannot list occurrences: %s", self.namespace, self.name, _short(e))
            return None
        pattern = re.compile(rf"^{re.escape(self.name)}-(\d+)$")
        return [o for o in rows if pattern.match(o.occurrence_id)]

    # status -------------------------------------------------------------------------------

    async def _write_full_status(
        self,
        spec: AgentDeploymentSpec,
        rendered: Rendered,
        migration: _Migration,
        sts: dict[str, Any] | None,
        record: ScaleDownStatus | None,
        occurrences: list[Occurrence] | None,
        problem: Problem | None,
        before: list[dict[str, Any]],
    ) -> None:
        sts_status = (sts or {}).get("status") or {}
        sts_spec_replicas = int(((sts or {}).get("spec") or {}).get("replicas") or 0)
        replicas = int(sts_status.get("replicas") or 0)
        ready = int(sts_status.get("readyReplicas") or 0)
        updated = int(sts_status.get("updatedReplicas") or 0)
        sts_observed = sts is None or (sts_status.get("observedGeneration") or 0) >= (
            sts["metadata"].get("generation") or 0
        )
        draining = drainplan.is_active(record)

        # MigrationsComplete / MigrationsFailed
        if migration.state == "Succeeded":
            job = (migration.last or {}).get("jobName", "")
            self.condition(
                MIGRATIONS_COMPLETE, "True", "Succeeded", f"migrations Job {job} succeeded"
            )
            if find_condition(self.conditions, MIGRATIONS_FAILED):
                self.condition(MIGRATIONS_FAILED, "False", "Succeeded", "migrations succeeded")
        elif migration.state == "Disabled":
            self.condition(MIGRATIONS_COMPLETE, "True", "Disabled", "migrations are disabled")
        elif migration.state == "Failed":
            self.condition(MIGRATIONS_COMPLETE, "False", "MigrationsFailed", migration.message)
            self.condition(MIGRATIONS_FAILED, "True", _reason(migration.reason), migration.message)
        else:
            self.condition(
                MIGRATIONS_COMPLETE,
                "False",
                migration.reason or "Pending",
                migration.message or "migrations pending",
            )

        # Draining
        if draining and record is not None:
            self.condition(DRAINING, "True", record.phase, record.message or record.phase)
        elif record is not None and record.phase in ("Done", "Cancelled"):
            self.condition(
                DRAINING, "False", "Drain" + record.phase, record.message or record.phase
            )
        else:
            self.condition(DRAINING, "False", "NoDrain", "no scale-down in progress")

        # Degraded
        if migration.state == "Failed":
            self.condition(DEGRADED, "True", "MigrationsFailed", migration.message)
        elif problem is not None:
            self.condition(DEGRADED, "True", problem.reason, problem.message)
        else:
            self.condition(DEGRADED, "False", "AsExpected", "all good")
        degraded = migration.state == "Failed" or problem is not None

        # Ready
        desired = spec.replicas
        all_there = (
            sts is not None
            and sts_observed
            and sts_spec_replicas == desired
            and replicas == desired
            and ready == desired
            and updated == desired
        )
        if problem is not None and problem.reason == OCCURRENCE_ID_CONFLICT:
            self.condition(READY, "False", OCCURRENCE_ID_CONFLICT,
                           "its occurrence ids belong to another AgentDeployment")
        elif all_there and migration.state in ("Succeeded", "Disabled") and not draining:
            self.condition(
                READY, "True", "AllOccurrencesReady", f"{ready}/{desired} occurrences ready"
            )
        else:
            why = (
                "MigrationsPending"
                if migration.state in ("Pending", "Running")
                else "MigrationsFailed"
                if migration.state == "Failed"
                else "Draining"
                if draining
                else "OccurrencesNotReady"
            )
            self.condition(READY, "False", why, f"{ready}/{desired} occurrences ready")

        phase = compute_phase(
            PhaseInputs(
                migration=migration.state,
                draining=draining,
                desired=desired,
                current=replicas,
                ready=ready,
                updated=updated,
                degraded=degraded,
            )
        )
        self._transition_events(before)

        desired_status: dict[str, Any] = {
            "observedGeneration": self.generation,
            "replicas": replicas,
            "readyReplicas": ready,
            "drainingReplicas": drainplan.draining_count(record),
            "selector": rendered.selector,
            "phase": phase,
            "conditions": self.conditions,
        }
        if migration.last is not None:
            desired_status["lastMigration"] = migration.last
        if record is not None:
            desired_status["scaleDown"] = record.to_wire()
        if occurrences is not None:
            desired_status["occurrences"] = [_occurrence_row(o, self.now) for o in occurrences]
            self.r.metrics.set_pending(
                self.namespace,
                self.name,
                {o.occurrence_id: o.pending_tasks + o.active_tasks for o in occurrences},
            )
        await self.write_status(desired_status)

    def _transition_events(self, before: list[dict[str, Any]]) -> None:
        """Events for condition transitions (status or reason changed)."""
        for cond in self.conditions:
            old = find_condition(before, cond["type"])
            if old and (old.get("status"), old.get("reason")) == (cond["status"], cond["reason"]):
                continue
            type_, status, reason = cond["type"], cond["status"], cond.get("reason") or ""
            message = cond.get("message") or ""
            if type_ == DEGRADED and status == "True":
                self.event("Warning", reason, message)
            elif type_ == DEGRADED and old is not None and old.get("status") == "True":
                self.event("Normal", "Recovered", f"no longer degraded ({old.get('reason')})")
            elif type_ == MIGRATIONS_COMPLETE and status == "True" and reason == "Succeeded":
                self.event("Normal", "MigrationsSucceeded", message)
            elif type_ == MIGRATIONS_FAILED and status == "True":
                self.event("Warning", "MigrationsFailed", message)
            elif type_ == READY and status == "True":
                self.event("Normal", "Ready", message)


class _Ops:
    """The Kubernetes side of the drain driver for one pass."""

    def __init__(
        self, p: _Pass, spec: AgentDeploymentSpec, owner: Owner, sts: dict[str, Any] | None
    ) -> None:
        self.p = p
        self.spec = spec
        self.owner = owner
        self.sts = sts

    async def scale(self, replicas: int) -> None:
        p = self.p
        if self.sts is None:
            self.sts = await p.kube.apply(build_statefulset(self.spec, self.owner, replicas))
            p.event("Normal", "StatefulSetCreated", f"created StatefulSet with {replicas} replicas")
            return
        current = int((self.sts.get("spec") or {}).get("replicas") or 0)
        if replicas > current and self.spec.drain.rebalance_on_scale_up:
            # intent first (like status.scaleDown): a restarted operator still rebalances
            await p._record_rebalance(
                {
                    "phase": "Pending",
                    "fromReplicas": current,
                    "toReplicas": replicas,
                    "requestedAt": format_time(utcnow()),
                    "moved": 0,
                    "message": f"rebalance pending backlog once {replicas} occurrences are ready",
                }
            )
        path = object_path("apps/v1", "StatefulSet", p.namespace, p.name)
        self.sts = await p.kube.merge_patch(path, {"spec": {"replicas": replicas}})

    async def persist(self, record: ScaleDownStatus | None) -> None:
        await self.p.write_status(
            {
                "scaleDown": None if record is None else record.to_wire(),
                "drainingReplicas": drainplan.draining_count(record),
            }
        )
        self.p.status["scaleDown"] = None if record is None else record.to_wire()

    async def reload(self) -> ScaleDownStatus | None:
        """The record as persisted now (another operator's step may have moved it on)."""
        p = self.p
        ad = await p.kube.get(ad_path(p.namespace, p.name))
        if ad is None:
            return _record(p.status.get("scaleDown"))
        p.ad["status"] = ad.get("status") or {}
        p.status["scaleDown"] = p.ad["status"].get("scaleDown")
        return _record(p.status["scaleDown"])

    async def departing_pods(self, ordinals: tuple[int, ...]) -> int:
        p = self.p
        pods = await p.kube.list(
            f"/api/v1/namespaces/{p.namespace}/pods", naming.selector_string(p.name)
        )
        wanted = {naming.occurrence_id(p.name, k) for k in ordinals}
        return sum(1 for pod in pods if pod["metadata"]["name"] in wanted)

    async def event(self, type_: EventType, reason: str, message: str) -> None:
        p = self.p
        if reason == "DrainStarted":
            p.r.metrics.drain_event(p.namespace, p.name, "started")
        elif reason == "DrainComplete":
            p.r.metrics.drain_event(p.namespace, p.name, "completed")
        elif reason == "DrainCancelled":
            p.r.metrics.drain_event(p.namespace, p.name, "cancelled")
        p.event(type_, reason, message)
        await p.flush_events()


def _reason_of(stopped: Any) -> str:
    reason = getattr(stopped, "reason", None)
    return getattr(reason, "name", None) or str(reason or "stopped")


def _record(wire: Any) -> ScaleDownStatus | None:
    if not wire:
        return None
    try:
        return ScaleDownStatus.model_validate(wire)
    except ValidationError:
        log.warning("ignoring unreadable status.scaleDown: %s", wire)
        return None


def _occurrence_row(o: Occurrence, now: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": o.occurrence_id,
        "ordinal": o.ordinal if o.ordinal is not None else _ordinal_of(o.occurrence_id),
        "state": str(o.state),
        "pendingTasks": o.pending_tasks + o.active_tasks,
    }
    if o.state != "retired":
        row["heartbeatAgeSeconds"] = int(o.heartbeat_age())  # the database's clock
    return row


def _ordinal_of(occurrence_id: str) -> int:
    tail = occurrence_id.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def _same(key: str, new: Any, old: Any) -> bool:
    if key != "occurrences" or not isinstance(new, list) or not isinstance(old, list):
        return new == old
    if len(new) != len(old):
        return False
    for a, b in zip(new, old, strict=True):
        a2 = {k: v for k, v in a.items() if k != "heartbeatAgeSeconds"}
        b2 = {k: v for k, v in b.items() if k != "heartbeatAgeSeconds"}
        if a2 != b2:
            return False
        ha, hb = a.get("heartbeatAgeSeconds"), b.get("heartbeatAgeSeconds")
        if (ha is None) != (hb is None):
            return False
        if ha is not None and abs(ha - hb) > HEARTBEAT_TOLERANCE_SECONDS:
            return False
    return True


def _reason(text: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_]", "", text or "")
    return cleaned if cleaned and cleaned[0].isalpha() else "Failed"


def _short(error: BaseException) -> str:
    if isinstance(error, ValidationError):
        parts = []
        for err in error.errors()[:5]:
            loc = ".".join(str(x) for x in err.get("loc", ()))
            parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
        return "; ".join(parts)
    return str(error)[:500]
