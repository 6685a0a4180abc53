"""Column lists and row-to-model conversion shared by the query modules."""

from __future__ import annotations

import json
from typing import Any

from occurrence_store.database import Row
from occurrence_store.models import Task, Thought

TASK_COLUMNS = (
    "task_id, agent_occurrence_id, channel_id, description, status, priority, created_at, "
    "updated_at, parent_task_id, context_json, outcome_json, updated_info_available, "
    "updated_info_content, claimed_by, lease_expires_at"
)

THOUGHT_COLUMNS = (
    "thought_id, source_task_id, agent_occurrence_id, thought_type, status, content, "
    "round_number, thought_depth, parent_thought_id, created_at, updated_at, context_json, "
    "final_action_json"
)


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
