"""Structured logs: one JSON object per line, every one carrying the occurrence id.

The filter sits on the handler, so records of every logger (``occurrence_store``,
``aiohttp``, asyncio, warnings) get the id, not only the runtime's own.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, TextIO

# Attributes every LogRecord has; anything else was passed through ``extra=``.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class OccurrenceFilter(logging.Filter):
    """Stamp ``occurrence_id`` on every record passing the handler.

    A record that already names another occurrence (the core logs a transfer under the
    occurrence it moves work from) keeps that one as ``subject_occurrence_id``.
    """

    def __init__(self, occurrence_id: str) -> None:
        super().__init__()
        self.occurrence_id = occurrence_id

    def filter(self, record: logging.LogRecord) -> bool:
        existing = getattr(record, "occurrence_id", None)
        if existing is not None and existing != self.occurrence_id:
            record.subject_occurrence_id = existing
        record.occurrence_id = self.occurrence_id
        return True


def _jsonable(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "occurrence_id": getattr(record, "occurrence_id", None),
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in entry:
                entry[key] = _jsonable(value)
        if record.exc_info and record.exc_info[0] is not None:
            entry["exc_type"] = record.exc_info[0].__name__
            entry["exc"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        # ASCII only: a message holding U+2028, U+0085 or another line break of some reader
        # still makes exactly one line (no log line can be split or forged by its content)
        return json.dumps(entry, ensure_ascii=True, default=str)


def configure_logging(occurrence_id: str, level: str = "INFO",
                      stream: TextIO | None = None) -> logging.Handler:
    """Route all logging to one JSON handler on ``stream`` (stderr by default)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(OccurrenceFilter(occurrence_id))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)

    def _excepthook(kind: type[BaseException], value: BaseException,
                    tb: TracebackType | None) -> None:
        logging.getLogger("occurrence_agent").critical(
            "uncaught exception", exc_info=(kind, value, tb))

    sys.excepthook = _excepthook
    return handler
