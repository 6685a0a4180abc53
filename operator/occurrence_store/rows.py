"""Column lists, row-to-model conversion and id-list filters shared by the query modules."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from occurrence_store.database import Row
from occurrence_store.models import Task, Thought
from occurrence_store.urls import Dialect

TASK_COLUMNS = (
    "task_id, agent_occurrence_id, channel_id, description, status, priority, created_at, "
    "updated_at, parent_task_id, context_json, outcome_json, updated_info_available, "
    "updated_info_content, claimed_by, lease_expires_at, agent_id, idempotency_key"
)

THOUGHT_COLUMNS = (
    "thought_id, source_task_id, agent_occurrence_id, thought_type, status, content, "
    "round_number, thought_depth, parent_thought_id, created_at, updated_at, context_json, "
    "final_action_json, attempts, retry_at, last_error"
)

TRANSFER_COLUMNS = (
    "transfer_id, task_id, from_occurrence_id, to_occurrence_id, reason, thoughts_moved, "
    "transferred_at"
)


def prefixed(columns: str, alias: str) -> str:
    """``a, b`` -> ``x.a, x.b``: a column list qualified by a table alias (joins, UPDATE FROM)."""
    return ", ".join(f"{alias}.{c.strip()}" for c in columns.split(","))


def task_from_row(row: Row) -> Task:
    data = dict(row)
    data["context"] = data.pop("context_json", None)
    data["outcome"] = data.pop("outcome_json", None)
    return Task.model_validate(data)


def thought_from_row(row: Row) -> Thought:
    data = dict(row)
    data["context"] = data.pop("context_json", None)
    data["final_action"] = data.pop("final_action_json", None)
    return Thought.model_validate(data)


def dump_json(value: dict[str, Any] | None) -> str | None:
    if not value:
        return None
    return json.dumps(value, sort_keys=True, default=str)


def in_ids(dialect: Dialect, column: str, param: str, *, negate: bool = False) -> str:
    """``column`` is (not) one of the ids passed as one parameter (see :func:`ids_arg`)."""
    if dialect == "postgresql":
        return f"{column} <> ALL({param}::text[])" if negate else f"{column} = ANY({param}::text[])"
    return f"{column} {'NOT IN' if negate else 'IN'} (SELECT value FROM json_each({param}))"


def ids_arg(dialect: Dialect, ids: Sequence[str]) -> object:
    """The parameter for :func:`in_ids`: an array on PostgreSQL, JSON text on SQLite."""
    return list(ids) if dialect == "postgresql" else json.dumps(list(ids))
