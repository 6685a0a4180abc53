"""The runtime's settings: identity, database, HTTP port and the timing knobs.

Values come from command-line options first, then ``AGENT_*`` environment variables
(``AGENT_OCCURRENCE_ID``, ``AGENT_OCCURRENCE_ORDINAL``, ``DATABASE_URL``...), then defaults.
Everything is validated up front: a bad value is one :class:`ConfigError` line, not a
traceback half-way through start-up.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from occurrence_store.errors import InvalidDatabaseURL, InvalidOccurrenceId
from occurrence_store.models import DEFAULT_AGENT_ID, AgentId, OccurrenceId, validate_occurrence_id
from occurrence_store.urls import parse_database_url


class ConfigError(ValueError):
    """A setting is missing or malformed; the message is one line fit for a CLI error."""


_AGENT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")

# field name -> environment variable
ENV_NAMES: dict[str, str] = {
    "occurrence_id": "AGENT_OCCURRENCE_ID",
    "ordinal": "AGENT_OCCURRENCE_ORDINAL",
    "agent_id": "AGENT_ID",
    "revision": "AGENT_REVISION",
    "database_url": "DATABASE_URL",
    "database_url_file": "DATABASE_URL_FILE",
    "host": "AGENT_HOST",
    "port": "AGENT_PORT",
    "port_file": "AGENT_PORT_FILE",
    "migrate": "AGENT_MIGRATE",
    "max_active_tasks": "AGENT_MAX_ACTIVE_TASKS",
    "thought_concurrency": "AGENT_THOUGHT_CONCURRENCY",
    "poll_interval": "AGENT_POLL_INTERVAL",
    "lease_seconds": "AGENT_LEASE_SECONDS",
    "heartbeat_interval": "AGENT_HEARTBEAT_INTERVAL",
    "wakeup_timeout": "AGENT_WAKEUP_TIMEOUT",
    "shared_lease_seconds": "AGENT_SHARED_LEASE_SECONDS",
    "drain_timeout": "AGENT_DRAIN_TIMEOUT",
    "in_flight_recovery": "AGENT_IN_FLIGHT_RECOVERY",
    "max_thought_attempts": "AGENT_MAX_THOUGHT_ATTEMPTS",
    "retry_backoff_seconds": "AGENT_RETRY_BACKOFF_SECONDS",
    "retry_backoff_max_seconds": "AGENT_RETRY_BACKOFF_MAX_SECONDS",
    "simulated_work_ms": "AGENT_SIMULATED_WORK_MS",
    "simulated_failure_ratio": "AGENT_SIMULATED_FAILURE_RATIO",
    "wakeup_steps": "AGENT_WAKEUP_STEPS",
    "journal_path": "AGENT_JOURNAL",
    "log_level": "AGENT_LOG_LEVEL",
    "access_log": "AGENT_ACCESS_LOG",
    "token_dir": "AGENT_TOKEN_DIR",
    "submit_rate": "AGENT_SUBMIT_RATE",
    "submit_burst": "AGENT_SUBMIT_BURST",
    "request_timeout": "AGENT_REQUEST_TIMEOUT",
}


class AgentConfig(BaseModel):
    """Validated settings of one occurrence's runtime."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    occurrence_id: OccurrenceId
    """Stable identity; the pod name in Kubernetes."""
    ordinal: int | None = Field(default=None, ge=0, le=1_000_000)
    """StatefulSet ordinal (pod index), if any."""
    agent_id: AgentId = Field(default=DEFAULT_AGENT_ID, max_length=320)
    """The agent this occurrence belongs to (the operator sets <namespace>/<AgentDeployment name>):
    shared decisions and idempotency keys are per agent, and an occurrence id owned by another
    agent is refused at start."""
    revision: str | None = Field(default=None, min_length=1, max_length=253)
    """The revision this process runs (in Kubernetes the pod's controller-revision-hash, set by the
    operator): every status it sets in the database is stamped with it, so a rollout judges and
    gives back work per revision."""
    database_url: str | None = None
    """postgresql://... or sqlite:///path; unset: the embedded SQLite file shared by the processes
    on this host."""
    database_url_file: Path | None = None
    """A file holding the database URL (a mounted Secret key), read once at start, instead of the
    database URL itself, which then stays out of the environment and the process listing."""
    host: str | None = None
    """Listen address. Default: 0.0.0.0 with a token_dir (in a pod), else 127.0.0.1 — an API
    without tokens never listens beyond this host."""
    port: int = Field(default=8080, ge=0, le=65535)
    """HTTP port; 0 picks a free one."""
    port_file: Path | None = None
    """Write the bound port here."""
    migrate: bool | None = None
    """Apply migrations at start; default: only for embedded SQLite."""
    max_active_tasks: int = Field(default=10, ge=1, le=10_000)
    """Active tasks at most."""
    thought_concurrency: int = Field(default=4, ge=1, le=1_000)
    """Thoughts worked at once."""
    poll_interval: float = Field(default=0.5, gt=0, le=60)
    """Seconds between idle polls."""
    lease_seconds: float = Field(default=30.0, gt=0, le=3600)
    """Registry lease."""
    heartbeat_interval: float | None = Field(default=None, gt=0)
    """Seconds between registry heartbeats; default: a third of the lease."""
    wakeup_timeout: float = Field(default=120.0, gt=0, le=86_400)
    """Longest wait for the shared wakeup, in seconds."""
    shared_lease_seconds: float = Field(default=30.0, gt=0, le=3600)
    """Lease on a shared decision being made."""
    drain_timeout: float = Field(default=20.0, ge=0, le=3600)
    """Seconds to finish in-flight work when draining or stopping."""
    in_flight_recovery: Literal["retry", "fail"] = "retry"
    """Stranded in-flight thoughts (the handler may have run): retry runs them again, fail marks
    them FAILED."""
    max_thought_attempts: int = Field(default=5, ge=1, le=1000)
    """Attempts per thought before it is FAILED."""
    retry_backoff_seconds: float = Field(default=1.0, ge=0, le=3600)
    """Wait before retrying a failed attempt, doubling each time."""
    retry_backoff_max_seconds: float = Field(default=60.0, ge=0, le=86_400)
    """Longest wait between attempts."""
    simulated_work_ms: int = Field(default=50, ge=0, le=600_000)
    """Default handler: work per thought."""
    simulated_failure_ratio: float = Field(default=0.0, ge=0, le=1)
    """Default handler: share of tasks it fails, to try a bad version."""
    wakeup_steps: int = Field(default=3, ge=0, le=100)
    """Default handler: wakeup steps."""
    journal_path: Path | None = None
    """Append thought events (JSON lines) to this file."""
    log_level: str = "INFO"
    """DEBUG, INFO, WARNING or ERROR."""
    access_log: bool = False
    """Log every HTTP request."""
    token_dir: Path | None = None
    """Directory of the API's bearer tokens: files 'work' (read and submit tasks) and 'admin' (also
    POST /shutdown). Without it the runtime only listens on a loopback address."""
    submit_rate: float = Field(default=200.0, ge=0, le=1_000_000)
    """Tasks one credential may submit per second (0: no limit)."""
    submit_burst: int = Field(default=400, ge=1, le=1_000_000)
    """Submissions one credential may make at once."""
    request_timeout: float = Field(default=30.0, gt=0, le=3600)
    """Longest an HTTP request may take, reading its body included (503 after)."""

    @field_validator("occurrence_id")
    @classmethod
    def _occurrence_id(cls, value: str) -> OccurrenceId:
        try:
            return validate_occurrence_id(value)
        except InvalidOccurrenceId as exc:
            raise ValueError(str(exc)) from None

    @field_validator("agent_id")
    @classmethod
    def _agent_id(cls, value: str) -> AgentId:
        value = value.strip()
        if value and not _AGENT_ID_RE.match(value):
            raise ValueError(f"invalid agent id {value[:80]!r}: use <namespace>/<name> "
                             "(letters, digits, '.', '_', '-')")
        return AgentId(value)

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        try:
            parse_database_url(value)
        except InvalidDatabaseURL as exc:
            raise ValueError(str(exc)) from None
        return value.strip()

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError(f"unknown log level {value!r}")
        return level

    @model_validator(mode="after")
    def _heartbeat_within_lease(self) -> AgentConfig:
        if self.heartbeat_interval is not None and self.heartbeat_interval > self.lease_seconds / 3:
            raise ValueError(
                f"heartbeat interval {self.heartbeat_interval:g}s must be at most a third of "
                f"the lease ({self.lease_seconds:g}s)"
            )
        return self

    @property
    def listen_host(self) -> str:
        if self.host:
            return self.host
        return "0.0.0.0" if self.token_dir is not None else "127.0.0.1"

    @property
    def effective_heartbeat_interval(self) -> float:
        return self.heartbeat_interval or self.lease_seconds / 3

    @property
    def should_migrate(self) -> bool:
        return self.migrate if self.migrate is not None else self.database_url is None

    @property
    def redacted_database_url(self) -> str:
        return parse_database_url(self.database_url).redacted


def _one_line(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        field = ".".join(str(p) for p in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        name = ENV_NAMES.get(field)
        where = f"{field} ({name})" if name else field or "config"
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


MAX_URL_FILE_BYTES = 64 * 1024


def _read_url_file(path: Path) -> str:
    """The URL in a mounted Secret file (one line; a trailing newline is not part of it)."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_URL_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"database_url_file (DATABASE_URL_FILE): cannot read {path}: "
                          f"{exc.strerror or exc}") from None
    if len(raw) > MAX_URL_FILE_BYTES:
        raise ConfigError(f"database_url_file (DATABASE_URL_FILE): {path} is larger than "
                          f"{MAX_URL_FILE_BYTES} bytes: not a database URL")
    try:
        url = raw.decode().strip()
    except UnicodeDecodeError:
        raise ConfigError(f"database_url_file (DATABASE_URL_FILE): {path} is not UTF-8 "
                          "text") from None
    if not url:
        raise ConfigError(f"database_url_file (DATABASE_URL_FILE): {path} is empty")
    return url


def load_config(overrides: Mapping[str, Any] | None = None,
                env: Mapping[str, str] | None = None) -> AgentConfig:
    """Merge ``overrides`` (CLI options; ``None`` values ignored) over the environment."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for field, name in ENV_NAMES.items():
        raw = env.get(name)
        if raw is not None and raw.strip() != "":
            values[field] = raw.strip()
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = value
    if values.get("database_url_file") is not None:
        if values.get("database_url") is not None:
            raise ConfigError("database_url (DATABASE_URL) and database_url_file "
                              "(DATABASE_URL_FILE) are both set: give one")
        values["database_url"] = _read_url_file(Path(values["database_url_file"]))
    if "occurrence_id" not in values:
        raise ConfigError(
            "occurrence id missing: set AGENT_OCCURRENCE_ID or pass --occurrence-id"
        )
    try:
        return AgentConfig.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc)) from None
