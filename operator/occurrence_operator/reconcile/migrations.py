"""Tracking the migrations Job of an AgentDeployment (the Job itself: job.py).

One Job per migration hash (image, command, database Secret reference): created if absent,
never patched; `.status.lastMigration` records the hash once it succeeded, so the same
inputs never migrate twice and the StatefulSet template is applied only after it. When a Job
succeeds, the finished Jobs before it (superseded hashes, failed attempts) are deleted with
their pods: one Job per AgentDeployment is kept, the last that succeeded (its logs). A Job with
that (predictable) name that this AgentDeployment does not own is never trusted: its
"Complete" would roll pods out on an unmigrated schema (`NameConflict`, nothing rolled out).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from ..kube.agd_object import AgentDeploymentObject
from ..kube.client import ApiError, collection_path, object_path
from ..model import naming, wellknown
from ..model.never_adopt import check_owned, owned_by
from ..model.timeutil import format_time
from ..render.objects import Rendered
from .derived_status import Migration

MIGRATION_POLL_SECONDS = 5.0
RUNNING_REQUEUE_SECONDS = MIGRATION_POLL_SECONDS * 6
"""Re-check of a running Job; its events wake the worker sooner."""

log = logging.getLogger(__name__)


async def track_migrations(
    agd: AgentDeploymentObject, rendered: Rendered, now: datetime
) -> tuple[Migration, float | None]:
    """The migrations' state for the current spec (creating the Job if it is due), and the
    requeue delay it asks for (None: none)."""
    last = agd.status.get("lastMigration")
    if rendered.migration_job is None:
        return Migration("Disabled", last=last), None
    digest = rendered.migration_hash
    if last and last.get("hash") == digest:
        return Migration("Succeeded", last=last), None
    job_manifest = rendered.migration_job
    job_name = job_manifest["metadata"]["name"]
    kube = agd.kube
    path = object_path("batch/v1", "Job", agd.namespace, job_name)
    owner_uid = str(agd.body["metadata"].get("uid") or "")
    job = await kube.get(path)
    check_owned(job, owner_uid)
    if job is None:
        try:
            job = await kube.create(collection_path("batch/v1", "Job", agd.namespace), job_manifest)
        except ApiError as e:
            if e.status != 409:
                raise
            job = await kube.get(path)  # made meanwhile: whose?
            check_owned(job, owner_uid)
            job = job or {}
        agd.event("Normal", "MigrationsStarted", f"created migrations Job {job_name}")
        return Migration("Running", "JobRunning", f"Job {job_name} is running", last), None
    job_status = job.get("status") or {}
    for cond in job_status.get("conditions") or []:
        if cond.get("status") != "True":
            continue
        if cond.get("type") == "Complete":
            completed = job_status.get("completionTime") or format_time(now)
            new_last = {"hash": digest, "jobName": job_name, "completedAt": completed}
            await remove_superseded_jobs(agd, job_name, owner_uid)
            return Migration("Succeeded", last=new_last), None
        if cond.get("type") == "Failed":
            reason = cond.get("reason") or "Failed"
            message = f"Job {job_name} failed: {reason}: {cond.get('message') or ''}".strip()
            return Migration("Failed", reason, message.rstrip(": "), last), None
    return (
        Migration("Running", "JobRunning", f"Job {job_name} is running", last),
        RUNNING_REQUEUE_SECONDS,
    )


def _finished(job: dict[str, Any]) -> bool:
    return any(c.get("status") == "True" and c.get("type") in ("Complete", "Failed")
               for c in (job.get("status") or {}).get("conditions") or ())


async def remove_superseded_jobs(agd: AgentDeploymentObject, kept: str, owner_uid: str) -> int:
    """Delete this AgentDeployment's finished migrations Jobs other than `kept` (the one that
    just succeeded), pods included; a Job still running is left alone. Only Jobs it owns:
    a label anyone can set is no proof. A failure is logged and counted, never fatal: the
    migration succeeded, the next success cleans up again. How many were deleted."""
    selector = naming.selector_string(agd.name, wellknown.COMPONENT_MIGRATIONS)
    deleted = 0
    try:
        jobs = await agd.kube.list(collection_path("batch/v1", "Job", agd.namespace), selector)
        for job in jobs:
            meta = job.get("metadata") or {}
            if meta.get("name") == kept or not _finished(job) or not owned_by(job, owner_uid):
                continue
            await agd.kube.delete(object_path("batch/v1", "Job", agd.namespace, meta["name"]),
                                  propagation="Background")
            deleted += 1
    except ApiError as e:
        agd.kube.metrics.housekeeping_failed("migration_job_cleanup")
        log.warning("%s/%s: superseded migrations Jobs not deleted (%d were): %s",
                    agd.namespace, agd.name, deleted, e)
        return deleted
    if deleted:
        log.info("%s/%s: deleted %d superseded migrations Job(s); kept %s", agd.namespace,
                 agd.name, deleted, kept)
    return deleted
