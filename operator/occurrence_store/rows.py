"""Column lists, row-to-model conversion and the transfer record shared by the query modules."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from occurrence_store.models import OccurrenceId, Task, Thought
from occurrence_store.ports import Connection, Row
from occurrence_store.sql import compile_named

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

TRANSFERS_OF_TASK = (f"SELECT {TRANSFER_COLUMNS} FROM task_transfers WHERE task_id = $1 "
                     "ORDER BY transfer_id")
"""Every move of one task, oldest first: its audit trail."""

RECORDED_TRANSFER_COLUMNS = (
    "task_id, from_occurrence_id, to_occurrence_id, reason, thoughts_moved, transferred_at")
"""What a move writes into ``task_transfers`` (the id is the table's)."""

_RECORD_TRANSFER = compile_named(
    f"INSERT INTO task_transfers ({RECORDED_TRANSFER_COLUMNS}) "
    "VALUES (:task_id, :source, :target, :reason, :thoughts_moved, :now)")[0]
"""Positional, for ``executemany``: the arguments in the order of the names."""


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


async def record_transfers(conn: Connection, moved: Iterable[tuple[str, OccurrenceId, int]],
                           source: OccurrenceId, reason: str, now: datetime) -> None:
    """One ``task_transfers`` row per moved ``(task_id, target, thoughts moved)``."""
    await conn.executemany(
        _RECORD_TRANSFER,
        [(task_id, source, target, reason, thoughts, now) for task_id, target, thoughts in moved],
    )
