"""Retention: an AgentDeployment's finished work is deleted once `spec.retention` says so.

Run by the reconcile pass, at most once an hour per AgentDeployment (in memory: a restarted
operator runs it at its first pass), in batches (`Maintenance.apply_retention`), so the
database does not grow forever and no statement holds many rows' locks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from occurrence_store import AgentId, Store

from ..model.spec import RetentionSpec

log = logging.getLogger(__name__)

INTERVAL_SECONDS = 3600.0
DAY = 86_400.0


async def retain_if_due(store: Store, agent_id: AgentId, spec: RetentionSpec,
                        last_runs: dict[AgentId, float],
                        clock: Callable[[], float] = time.monotonic) -> str | None:
    """Apply retention if an hour passed since the last run for ``agent_id``; the message of
    a Normal event when something was deleted, else None."""
    now = clock()
    if spec.finished_days == 0 or now - last_runs.get(agent_id, -INTERVAL_SECONDS) < \
            INTERVAL_SECONDS:
        return None
    done = await store.maintenance.apply_retention(
        agent_id, finished_seconds=spec.finished_days * DAY, audit_seconds=spec.audit_days * DAY)
    last_runs[agent_id] = now
    if not (done.tasks or done.transfer_records):
        return None
    message = (f"deleted {done.tasks} finished task(s) older than {spec.finished_days} day(s) "
               f"({done.thoughts} thought(s)) and {done.transfer_records} transfer record(s) "
               f"older than {spec.audit_days} day(s)")
    log.info("%s: retention %s", agent_id, message)
    return message
