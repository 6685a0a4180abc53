"""Giving back the work a rolled-back revision failed: ``store.requeues``.

Every status an occurrence sets is stamped with the revision its process registered
(:mod:`occurrence_store.scoped`), so "the tasks revision R failed during the rollout" is one
indexed query. Each one goes back to pending on the occurrence that owns it — it is worked
afresh (a new seed thought; its failed thoughts stay as history) — and gets one
``task_requeues`` row naming the revision and why. The row's key is ``(task_id, revision)``:
a task goes back at most once per revision, so giving back again (an operator restarted
half-way, a second pass) requeues nothing twice, and a task that fails again on another
revision stays failed.

Across occurrences on purpose, like :mod:`occurrence_store.outcomes`; bounded per call.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

from pydantic import BaseModel

from occurrence_store.clock import after_sql
from occurrence_store.database import Database, fetch_now
from occurrence_store.errors import StoreError
from occurrence_store.models import AgentId, OccurrenceId, TaskStatus, validate_occurrence_id
from occurrence_store.registry import MAX_REVISION
from occurrence_store.sql import compile_named

MAX_BATCH = 1000
"""The most tasks one call gives back (one short transaction)."""
MAX_OCCURRENCES = 1000

_RECORD_COLUMNS = ("task_id, revision, agent_id, occurrence_id, reason, previous_outcome, "
                   "requeued_at")


class RequeueRecord(BaseModel):
    """One task a revision had failed, given back."""

    task_id: str
    revision: str
    agent_id: AgentId
    occurrence_id: OccurrenceId
    reason: str
    previous_outcome: dict[str, object] | None = None
    requeued_at: datetime


def _check(agent_id: AgentId, revision: str) -> None:
    if not isinstance(revision, str) or not revision or len(revision) > MAX_REVISION:
        raise StoreError(f"revision must be 1-{MAX_REVISION} characters")
    if not isinstance(agent_id, str) or len(agent_id) > 253:
        raise StoreError("agent id must be at most 253 characters")


class Requeues:
    """``store.requeues``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def _candidates_sql(self) -> str:
        return (
            "SELECT t.task_id, t.agent_occurrence_id, t.outcome_json FROM tasks t "
            "WHERE t.agent_id = :agent_id AND t.status = :failed AND t.revision = :revision "
            f"AND t.updated_at >= {after_sql(':since')} "
            f"AND {self.db.in_ids('t.agent_occurrence_id', ':ids')} "
            "AND NOT EXISTS (SELECT 1 FROM task_requeues r WHERE r.task_id = t.task_id "
            "AND r.revision = :revision) "
            "ORDER BY t.updated_at, t.task_id LIMIT :limit" + self.db.row_lock(skip_locked=True))

    async def give_back(self, agent_id: AgentId, revision: str,
                        occurrence_ids: Sequence[OccurrenceId], *, since_seconds: float,
                        reason: str, limit: int = MAX_BATCH) -> list[str]:
        """Tasks of ``agent_id`` on ``occurrence_ids`` that ``revision`` finished as failed in
        the last ``since_seconds`` and never gave back: back to pending (outcome cleared),
        each with its ``task_requeues`` row, in one transaction. Returns their ids (at most
        ``limit``: call again until it returns fewer)."""
        _check(agent_id, revision)
        ids = [validate_occurrence_id(o) for o in occurrence_ids]
        if len(ids) > MAX_OCCURRENCES:
            raise StoreError(f"at most {MAX_OCCURRENCES} occurrences per call, got {len(ids)}")
        limit = max(1, min(int(limit), MAX_BATCH))
        if not ids or since_seconds <= 0:
            return []
        failed, pending = TaskStatus.FAILED.value, TaskStatus.PENDING.value
        async with self.db.transaction() as conn:
            rows = await conn.fetch(
                self._candidates_sql(), agent_id=agent_id, failed=failed, revision=revision,
                since=-float(since_seconds), ids=self.db.ids_arg(ids), limit=limit)
            if not rows:
                return []
            now = await fetch_now(conn)
            record = compile_named(self.db.insert_ignoring_conflicts(
                f"INSERT INTO task_requeues ({_RECORD_COLUMNS}) VALUES (:task_id, :revision, "
                ":agent_id, :occurrence_id, :reason, :previous_outcome, :now)",
                "task_id, revision"))[0]
            await conn.executemany(record, [
                (r["task_id"], revision, agent_id, r["agent_occurrence_id"], reason[:1000],
                 _outcome_text(r["outcome_json"]), now) for r in rows])
            picked = [r["task_id"] for r in rows]
            back = await conn.fetch(
                f"UPDATE tasks SET status = :pending, updated_at = :now, outcome_json = NULL, "
                f"revision = NULL WHERE {self.db.in_ids('task_id', ':ids')} "
                "AND status = :failed AND revision = :revision RETURNING task_id",
                pending=pending, now=now, ids=self.db.ids_arg(picked), failed=failed,
                revision=revision)
        return sorted(r["task_id"] for r in back)

    async def records(self, agent_id: AgentId, *, revision: str | None = None,
                      limit: int = 100) -> list[RequeueRecord]:
        """The newest requeue records of ``agent_id`` (of one ``revision`` if given)."""
        limit = max(1, min(int(limit), MAX_BATCH))
        where = "agent_id = :agent_id" + (" AND revision = :revision" if revision else "")
        params: dict[str, object] = {"agent_id": agent_id, "limit": limit}
        if revision:
            params["revision"] = revision
        async with self.db.connection() as conn:
            rows = await conn.fetch(
                f"SELECT {_RECORD_COLUMNS} FROM task_requeues WHERE {where} "
                "ORDER BY requeued_at DESC, task_id LIMIT :limit", **params)
        return [RequeueRecord.model_validate(
            {**r, "previous_outcome": _outcome_value(r["previous_outcome"])}) for r in rows]


def _outcome_text(value: object) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value)


def _outcome_value(value: object) -> dict[str, object] | None:
    if value is None:
        return None
    if isinstance(value, dict):
        return value
    try:
        decoded = json.loads(str(value))
    except ValueError:
        return {"raw": str(value)[:1000]}
    return decoded if isinstance(decoded, dict) else {"value": decoded}
