"""Pydantic models of the rows the core stores and returns."""

from __future__ import annotations

import json
import re
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal, NewType

from pydantic import BaseModel, ConfigDict, Field, field_validator

from occurrence_store.errors import InvalidOccurrenceId

OccurrenceId = NewType("OccurrenceId", str)
"""An occurrence id (``agent-0``): the owner of tasks and thoughts. A plain ``str`` at runtime;
made at the edges (:func:`validate_occurrence_id`, the operator's naming, the CLIs, the agent's
configuration) and carried unchanged from there."""

AgentId = NewType("AgentId", str)
"""An agent id (AgentDeployment ``<namespace>/<name>``; '' the default agent). A plain
``str`` at runtime."""

SHARED_OCCURRENCE_ID = OccurrenceId("__shared__")
"""Namespace of tasks decided once for all occurrences (wakeup, shutdown)."""

DEFAULT_OCCURRENCE_ID = OccurrenceId("default")
"""Owner of rows written before occurrences existed (the migration backfills it)."""

DEFAULT_AGENT_ID = AgentId("")
"""The agent of rows written before agents were told apart (one agent per database)."""

Track = Literal["canary", "stable"]
"""Which side of a canary rollout an occurrence is on."""

_SHARED_TASK_ID_RE = re.compile(r"^[A-Z0-9_]+_SHARED_[0-9]{8}(@.+)?$")


def is_shared_task_id(task_id: str) -> bool:
    """Whether ``task_id`` has the form of a shared decision's id (``WAKEUP_SHARED_20261201``,
    ``..@<agent>``): only ``__shared__`` may hold such a task."""
    return bool(_SHARED_TASK_ID_RE.match(task_id))

_OCCURRENCE_ID_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,251}[A-Za-z0-9])?$")


def validate_occurrence_id(occurrence_id: str, *, allow_shared: bool = False) -> OccurrenceId:
    """Return ``occurrence_id`` if usable as an owner, else raise :class:`InvalidOccurrenceId`.

    Ids are what Kubernetes pod names allow plus ``_`` and upper case (so ids used outside
    Kubernetes, like ``occurrence_1``, work too); ``__shared__`` is reserved.
    """
    if not isinstance(occurrence_id, str) or not occurrence_id:
        raise InvalidOccurrenceId("occurrence id must be a non-empty string")
    if occurrence_id == SHARED_OCCURRENCE_ID:
        if allow_shared:
            return OccurrenceId(occurrence_id)
        raise InvalidOccurrenceId(f"occurrence id {SHARED_OCCURRENCE_ID!r} is reserved")
    if not _OCCURRENCE_ID_RE.match(occurrence_id):
        raise InvalidOccurrenceId(
            f"invalid occurrence id {occurrence_id!r}: use 1-253 letters, digits, '.', '_' or '-', "
            "starting and ending with a letter or digit"
        )
    return OccurrenceId(occurrence_id)


class TaskStatus(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    COMPLETED = "completed"
    FAILED = "failed"
    DEFERRED = "deferred"
    REJECTED = "rejected"


TRANSFERABLE_TASK_STATUSES: tuple[TaskStatus, ...] = (
    TaskStatus.PENDING, TaskStatus.ACTIVE, TaskStatus.DEFERRED)
"""What a drain moves: work not yet finished — deferred work too (it waits for a decision
and must not be stranded on an occurrence that retires). Finished work stays with whoever
did it."""

FINISHED_TASK_STATUSES: tuple[TaskStatus, ...] = (
    TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.REJECTED)
"""Statuses a task never leaves: its work is over, successfully or not. Housekeeping deletes
such tasks after the retention window; a shared decision in one of them is decided (nobody
takes it over, renews or completes it again, and its waiters stop waiting)."""


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


class InFlightRecovery(StrEnum):
    """What happens to a *stranded* thought: one left PROCESSING by a runtime that crashed,
    lost track of it, was fenced, or could not record its outcome — its handler may have run,
    with side effects nobody knows about."""

    RETRY = "retry"
    """Put it back to pending: its handler runs again (at-least-once); the default."""
    FAIL = "fail"
    """Mark it FAILED with the reason, and its task with it: a handler never runs twice
    (at-most-once for what may have had side effects), the choice of the reference system."""


class InFlightPolicy(StrEnum):
    """What a drain does with thoughts the departing occurrence is processing right now."""

    RELEASE = "release"
    """Reset them to pending and move them with their task (the departing runtime must
    have stopped working, or it may finish a thought someone else now owns)."""
    WAIT = "wait"
    """Leave every task that has a processing thought with the departing occurrence so it
    can finish; a later drain moves what is left (the AgentDeployment's ``inFlight: wait``)."""
    LEAVE = "wait"
    """Deprecated synonym of :attr:`WAIT` (the store's former name for it)."""

    @classmethod
    def _missing_(cls, value: object) -> InFlightPolicy | None:
        """``"leave"``, the former value, still reads as :attr:`WAIT`."""
        return cls.WAIT if value == "leave" else None


def _load_json(value: Any) -> dict[str, Any]:
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        loaded: dict[str, Any] = json.loads(value)
        return loaded
    return dict(value)


class _Row(BaseModel):
    model_config = ConfigDict(use_enum_values=False, frozen=True)


class Task(_Row):
    task_id: str
    agent_occurrence_id: OccurrenceId = DEFAULT_OCCURRENCE_ID
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
    claimed_by: OccurrenceId | None = None
    lease_expires_at: datetime | None = None
    agent_id: AgentId = DEFAULT_AGENT_ID
    """The agent (AgentDeployment ``<namespace>/<name>``) the task was submitted to."""
    idempotency_key: str | None = None
    """The submitter's key: one task per key and agent (``Idempotency-Key``)."""

    @field_validator("context", "outcome", mode="before")
    @classmethod
    def _json(cls, value: Any) -> dict[str, Any]:
        return _load_json(value)


class Thought(_Row):
    thought_id: str
    source_task_id: str
    agent_occurrence_id: OccurrenceId = DEFAULT_OCCURRENCE_ID
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
    attempts: int = 0
    """How many times the thought was claimed for processing (1 on its first run)."""
    retry_at: datetime | None = None
    """Not claimed again before this time (backoff after an error)."""
    last_error: str | None = None
    """Why the last attempt did not finish."""

    @field_validator("context", "final_action", mode="before")
    @classmethod
    def _json(cls, value: Any) -> dict[str, Any]:
        return _load_json(value)

    @property
    def attempt_key(self) -> str:
        """A key that is the same for every attempt at this thought — retries, releases by
        a drain, moves to another occurrence, restarts. Handlers pass it along with their
        side effects (an ``Idempotency-Key`` to a payment API, a unique column) so that a
        thought run twice does its side effect once."""
        return f"thought:{self.thought_id}"


class Occurrence(_Row):
    """A registry row: one runtime instance, its lifecycle state and its heartbeat lease."""

    occurrence_id: OccurrenceId
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
    agent_id: AgentId = DEFAULT_AGENT_ID
    """The agent owning this id (AgentDeployment ``<namespace>/<name>``; '' unowned)."""
    owner_uid: str | None = None
    """UID of the AgentDeployment that claimed the id."""
    drain_grace_seconds: float | None = None
    """Set with a fence: how long in-flight work may go on before it is released."""
    revision: str | None = None
    """The revision its process runs (the pod's controller-revision-hash), as reported when it
    registered; None outside Kubernetes."""
    pinned_revision: str | None = None
    """While a canary rollout of its agent is under way: the stable revision the operator
    pinned the agent's shared decisions to (None: no rollout under way)."""
    observed_at: datetime
    """The database's time when this row was read: ages and expiry are measured from it,
    never from the reader's clock."""

    @property
    def track(self) -> Track:
        """``canary`` while a canary rollout is under way and this occurrence does not run its
        stable revision, else ``stable`` — what the pod's ``occurrence.dev/track`` label says,
        as the database knows it (a label cannot reach the process: an environment variable is
        fixed when the container starts, before the operator labels the pod)."""
        if self.pinned_revision is not None and self.revision != self.pinned_revision:
            return "canary"
        return "stable"

    def heartbeat_age(self, now: datetime | None = None) -> float:
        return max(0.0, ((now or self.observed_at) - self.heartbeat_at).total_seconds())

    def lease_expired(self, now: datetime | None = None) -> bool:
        return self.lease_expires_at < (now or self.observed_at)


class TransferRecord(_Row):
    """One task's move between occurrences: who, from, to, when and why."""

    transfer_id: int
    task_id: str
    from_occurrence_id: OccurrenceId
    to_occurrence_id: OccurrenceId
    reason: str
    thoughts_moved: int
    transferred_at: datetime


class DrainResult(BaseModel):
    """What one drain moved. Running the same drain again reports zeros."""

    from_occurrence_id: OccurrenceId
    tasks_moved: int = 0
    thoughts_moved: int = 0
    thoughts_released: int = 0
    tasks_left_in_flight: int = 0
    per_target: dict[OccurrenceId, int] = Field(default_factory=dict)
    batches: int = 0

    @property
    def complete(self) -> bool:
        """True when nothing transferable is left with the departing occurrence."""
        return self.tasks_left_in_flight == 0
