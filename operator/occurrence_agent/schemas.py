"""Request bodies of the HTTP API and the checks that keep bad input a 4xx.

Anything the database would choke on is refused here: NUL characters and lone
surrogates (PostgreSQL text and UTF-8 reject them), non-finite numbers, absurd nesting.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from occurrence_store.models import Task, TaskStatus, Thought

MAX_BODY_BYTES = 64 * 1024
MAX_SHUTDOWN_WAIT_SECONDS = 300
MAX_PAGE = 1000
MAX_OFFSET = 10_000
"""Past the first pages an offset is a scan of everything before it on every request: the
`after` cursor (keyset) pages any further."""
"""Most tasks one GET /tasks returns: a page is read in SQL, never the whole history."""
MAX_CURSOR_LENGTH = 1024
MAX_DEPTH = 32
MAX_ID_LENGTH = 255


class BadRequest(ValueError):
    """The request is malformed: answered with ``status`` and a JSON error."""

    def __init__(self, message: str, status: int = 400, detail: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


class TaskCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    description: str = Field(min_length=1, max_length=10_000)
    priority: int = Field(default=0, ge=-1000, le=1000)
    channel_id: str = Field(default="", max_length=MAX_ID_LENGTH)
    context: dict[str, Any] = Field(
        default_factory=dict,
        description="Free-form. The default handler reads work_ms, thoughts and fail.")
    correlation_id: str | None = Field(
        default=None, min_length=1, max_length=MAX_ID_LENGTH,
        description="Idempotency key (same as the Idempotency-Key header): a second "
        "submission with the same key to any occurrence of this agent returns the first "
        "one's task (200) instead of creating another.")

    def same_request(self, task: Task) -> bool:
        """Whether ``task`` is what this body would have created (a replay, not a reuse)."""
        return (task.description, task.channel_id, task.priority, task.context) == (
            self.description, self.channel_id, self.priority, self.context)


class ShutdownRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    reason: str = Field(default="requested through the API", max_length=500)
    wait_seconds: float = Field(default=10.0, ge=0, le=MAX_SHUTDOWN_WAIT_SECONDS,
                                allow_inf_nan=False)


def _reject_constant(name: str) -> Any:
    raise BadRequest(f"invalid JSON: {name} is not allowed")


def check_text(value: str, what: str) -> str:
    if "\x00" in value:
        raise BadRequest(f"{what}: NUL characters are not allowed", 422)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(f"{what}: not valid UTF-8 (lone surrogate)", 422) from None
    return value


def check_json_value(value: Any) -> None:
    """Walk ``value`` without recursion: bounded depth, clean strings, finite numbers."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise BadRequest(f"JSON nested deeper than {MAX_DEPTH} levels", 422)
        if isinstance(item, str):
            check_text(item, "string value")
        elif isinstance(item, float) and not math.isfinite(item):
            raise BadRequest("non-finite numbers are not allowed", 422)
        elif isinstance(item, dict):
            for key, child in item.items():
                check_text(key, "object key")
                stack.append((child, depth + 1))
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """Decode a request body that must be a JSON object (empty body: ``{}``)."""
    if not raw.strip():
        return {}
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("request body is not UTF-8") from None
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except BadRequest:
        raise
    except RecursionError:
        raise BadRequest("invalid JSON: nested too deeply") from None
    except (json.JSONDecodeError, ValueError) as exc:
        raise BadRequest(f"invalid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise BadRequest("request body must be a JSON object", 422)
    check_json_value(value)
    return value


def check_id(value: str) -> bool:
    """Whether ``value`` could be a stored id at all (else: not found, no query)."""
    if not value or len(value) > MAX_ID_LENGTH or "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_status(value: str | None) -> TaskStatus | None:
    if value is None:
        return None
    try:
        return TaskStatus(value)
    except ValueError:
        allowed = ", ".join(s.value for s in TaskStatus)
        raise BadRequest(f"unknown status {value[:40]!r}: use one of {allowed}") from None


def parse_int(value: str | None, name: str, default: int, low: int, high: int) -> int:
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise BadRequest(f"{name} must be an integer") from None
    if not low <= number <= high:
        raise BadRequest(f"{name} must be between {low} and {high}")
    return number


def idempotency_key(header: str | None, body: TaskCreate) -> str | None:
    """The submission's key: the ``Idempotency-Key`` header or the body's ``correlation_id``
    (both may be given only if they agree)."""
    if header is not None:
        header = check_text(header.strip(), "Idempotency-Key header")
        if not header or len(header) > MAX_ID_LENGTH:
            raise BadRequest(f"Idempotency-Key must be 1-{MAX_ID_LENGTH} characters", 422)
    if header and body.correlation_id and header != body.correlation_id:
        raise BadRequest("Idempotency-Key header and correlation_id differ: send one key", 422)
    return header or body.correlation_id


def task_json(task: Task) -> dict[str, Any]:
    data = task.model_dump(mode="json", exclude={"claimed_by", "lease_expires_at",
                                                 "idempotency_key"})
    data["correlation_id"] = task.idempotency_key
    return data


def thought_json(thought: Thought) -> dict[str, Any]:
    return thought.model_dump(mode="json")


def cursor_of(task: Task) -> str:
    """The opaque ``next`` of a page: where the page after ``task`` starts."""
    raw = json.dumps([task.created_at.isoformat(), task.task_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def parse_cursor(value: str | None) -> tuple[datetime, str] | None:
    """The ``after`` query parameter back into ``(created_at, task_id)``; 400 if garbled."""
    if value is None or value == "":
        return None
    try:
        if len(value) > MAX_CURSOR_LENGTH:
            raise ValueError("too long")
        created, task_id = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
        moment = datetime.fromisoformat(created)
        if not isinstance(task_id, str) or moment.tzinfo is None:
            raise ValueError("not a cursor")
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise BadRequest("after: not a cursor this API returned (use the page's \"next\")",
                         400) from None
    return moment, task_id
