"""Shared persistence core: occurrence-scoped tasks and thoughts on PostgreSQL or SQLite.

Open a :class:`Store`, then work through ``store.scope(occurrence_id)`` — every query of
that handle filters by the occurrence and every write stamps or guards by it.
"""

from occurrence_store.errors import (
    DatabaseUnavailable,
    InvalidDatabaseURL,
    InvalidOccurrenceId,
    InvalidTaskId,
    MigrationError,
    NotEligibleToDecide,
    NotOwnedError,
    OccurrenceError,
    OccurrenceIdConflict,
    StoreError,
    StoreQueryError,
    StoreUnavailable,
    UnknownOccurrence,
    VersionConflict,
)
from occurrence_store.models import (
    FINISHED_TASK_STATUSES,
    SHARED_OCCURRENCE_ID,
    TRANSFERABLE_TASK_STATUSES,
    AgentId,
    DrainResult,
    InFlightPolicy,
    InFlightRecovery,
    Occurrence,
    OccurrenceId,
    OccurrenceState,
    Task,
    TaskStatus,
    Thought,
    ThoughtStatus,
    TransferRecord,
)
from occurrence_store.store import ScopedStore, Store

__all__ = [
    "FINISHED_TASK_STATUSES",
    "SHARED_OCCURRENCE_ID",
    "TRANSFERABLE_TASK_STATUSES",
    "AgentId",
    "DatabaseUnavailable",
    "DrainResult",
    "InFlightPolicy",
    "InFlightRecovery",
    "InvalidDatabaseURL",
    "InvalidOccurrenceId",
    "InvalidTaskId",
    "MigrationError",
    "NotEligibleToDecide",
    "NotOwnedError",
    "Occurrence",
    "OccurrenceError",
    "OccurrenceId",
    "OccurrenceIdConflict",
    "OccurrenceState",
    "ScopedStore",
    "Store",
    "StoreError",
    "StoreQueryError",
    "StoreUnavailable",
    "Task",
    "TaskStatus",
    "Thought",
    "ThoughtStatus",
    "TransferRecord",
    "UnknownOccurrence",
    "VersionConflict",
]
