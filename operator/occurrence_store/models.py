"""Pydantic models of the rows the core stores and returns."""

from __future__ import annotations

import json
import re
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from occurrence_store.errors import InvalidOccurrenceId

SHARED_OCCURRENCE_ID = "__shared__"
"""Namespace of tasks decided once for all occurrences (wakeup, shutdown)."""

DEFAULT_OCCURRENCE_ID = "default"
"""Owner of rows written before occurrences existed (the migration backfills it)."""

_OCCURRENCE_ID_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,251}[A-Za-z0-9])?$")


def validate_occurrence_id(occurrence_id: str, *, allow_shared: bool = False) -> str:
    """Return ``occurrence_id`` if usable as an owner, else raise :class:`InvalidOccurrenceId`.

    Ids are what Kubernetes pod names allow plus ``_`` and upper case (so ids used outside
    Kubernetes, like ``occurrence_1``, work too); ``__shared__`` is reserved.
    """
    if not isinstance(occurrence_id, str) or not occurrence_id:
        raise InvalidOccurrenceId("occurrence id must be a non-empty string")
    if occurrence_id == SHARED_OCCURRENCE_ID:
        if allow_shared:
            return occurrence_id
        raise InvalidOccurrenceId(f"occurrence id {SHARED_OCCURRENCE_ID!r} is reserved")
    if not _OCCURRENCE_ID_RE.match(occurrence_id):
        raise InvalidOccurrenceId(
            f"invalid occurrence id {occurrence_id!r}: use 1-253 letters, digits, '.', '_' or '-', "
            "starting and ending with a letter or digit"
        )
    return occurrence_id


class TaskStatus(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    COMPLETED = "completed"
    FAILED = "failed"
    DEFERRED = "deferred"
    REJECTED = "rejected"


TRANSFERABLE_TASK_STATUSES: tuple[TaskStatus, ...] = (TaskStatus.PENDING, TaskStatus.ACTIVE)
"""What a drain moves: work not yet finished. Finished work stays with whoever did it."""


class ThoughtStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    DEFERRED = "deferred"


class OccurrenceState(StrEnum):
    ACTIVE = "active"
    DRAINING = "draining"
    RETIRED = "retired"


class InFlightPolicy(StrEnum):
    """What a drain does with thoughts the departing occurrence is processing right now."""

    RELEASE = "release"
    """Reset them to pending and move them with their task (the departing runtime must
    have stopped working, or it may finish a thought someone else now owns)."""
    LEAVE = "leave"
    """Leave every task that has a processing thought with the departing occurrence so it
    can finish; a later drain moves what is left."""


def _load_json(value: Any) -> dict[str, Any]:
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        return json.loads(value)
    return dict(value)


class _Row(BaseModel):
    model_config = ConfigDict(use_enum_values=False, frozen=True)


class Task(_Row):
    task_id: str
    agent_occurrence_id: str = DEFAULT_OCCURRENCE_ID
    channel_id: str = ""
    description: str
    status: TaskStatus = TaskStatus.PENDING
    priority: int = 0
    created_at: datetime
    updated_at: datetime
    parent_task_id: str | None = None
    context: dict[str, Any] = Field(default_factory=dict)
    outcome: dict[str, Any] = Field(default_factory=dict)
    updated_info_available: bool = False
    updated_info_content: str | None = None
    claimed_by: str | None = None
    lease_expires_at: datetime | None = None

    @field_validator("context", "outcome", mode="before")
    @classmethod
    def _json(cls, value: Any) -> dict[str, Any]:
        return _load_json(value)


class Thought(_Row):
    thought_id: str
    source_task_id: str
    agent_occurrence_id: str = DEFAULT_OCCURRENCE_ID
    thought_type: str = "standard"
    status: ThoughtStatus = ThoughtStatus.PENDING
    content: str
    round_number: int = 0
    thought_depth: int = 0
    parent_thought_id: str | None = None
    created_at: datetime
    updated_at: datetime
    context: dict[str, Any] = Field(default_factory=dict)
    final_action: dict[str, Any] = Field(default_factory=dict)

    @field_validator("context", "final_action", mode="before")
    @classmethod
    def _json(cls, value: Any) -> dict[str, Any]:
        return _load_json(value)


class Occurrence(_Row):
    """A registry row: one runtime instance, its lifecycle state and its heartbeat lease."""

    occurrence_id: str
    state: OccurrenceState = OccurrenceState.ACTIVE
    version: int = 1
    ordinal: int | None = None
    registered_at: datetime
    heartbeat_at: datetime
    lease_expires_at: datetime
    state_changed_at: datetime
    quiesced: bool = False
    pending_tasks: int = 0
    active_tasks: int = 0

    def heartbeat_age(self, now: datetime) -> float:
        return max(0.0, (now - self.heartbeat_at).total_seconds())

    def lease_expired(self, now: datetime) -> bool:
        return self.lease_expires_at < now


class TransferRecord(_Row):
    """One task's move between occurrences: who, from, to, when and why."""

    transfer_id: int
    task_id: str
    from_occurrence_id: str
    to_occurrence_id: str
    reason: str
    thoughts_moved: int
    transferred_at: datetime


class DrainResult(BaseModel):
    """What one drain moved. Running the same drain again reports zeros."""

    from_occurrence_id: str
    tasks_moved: int = 0
    thoughts_moved: int = 0
    thoughts_released: int = 0
    tasks_left_in_flight: int = 0
    per_target: dict[str, int] = Field(default_factory=dict)
    batches: int = 0

    @property
    def complete(self) -> bool:
        """True when nothing transferable is left with the departing occurrence."""
        return self.tasks_left_in_flight == 0
