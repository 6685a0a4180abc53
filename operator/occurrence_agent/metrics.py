"""Prometheus metrics in the text exposition format (0.0.4), rendered by hand.

A handful of counters and gauges do not justify a dependency. Every sample carries the
``occurrence_id`` label, so metrics from several occurrences on one host stay apart.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Labels = tuple[tuple[str, str], ...]


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


@dataclass
class _Family:
    name: str
    kind: str  # counter | gauge
    help: str
    samples: dict[Labels, float] = field(default_factory=dict)


class Metrics:
    def __init__(self, occurrence_id: str) -> None:
        self.occurrence_id = occurrence_id
        self._families: dict[str, _Family] = {}
        self.declare("occurrence_thoughts_processed_total", "counter",
                     "Thoughts this occurrence finished or gave back, by result: completed, "
                     "failed, deferred (the handler's verdict); retried (back to pending after "
                     "an error), exhausted (FAILED: attempts used up), stranded_failed (FAILED "
                     "by recovery=fail), released (given back when fenced or stopped), "
                     "reclaimed (stranded, taken back to pending).")
        self.declare("occurrence_worker_errors_total", "counter",
                     "Errors of the work loop by stage (load, handler, finish, after, recover, "
                     "step, sweep, heartbeat, listener, shared_lease): each one is also a log "
                     "line.")
        self.declare("occurrence_worker_healthy", "gauge",
                     "0 after consecutive database failures of the work loop (also unready).")
        self.declare("occurrence_tasks_finished_total", "counter",
                     "Tasks this occurrence finished, by final status.")
        self.declare("occurrence_claim_conflicts_total", "counter",
                     "Claims lost to another writer: shared tasks claimed by another "
                     "occurrence, thoughts that moved away before completion.")
        self.declare("occurrence_tasks_submitted_total", "counter",
                     "Tasks accepted through the HTTP API.")
        self.declare("occurrence_tasks_deduplicated_total", "counter",
                     "Submissions answered with the task an earlier one with the same "
                     "idempotency key created (200 instead of 201).")
        self.declare("occurrence_wakeup_wait_seconds", "gauge",
                     "Seconds this occurrence waited for the shared wakeup decision.")
        self.declare("occurrence_wakeup_performed", "gauge",
                     "1 if this occurrence performed the wakeup on behalf of all.")
        self.declare("occurrence_ready", "gauge", "1 when ready to take work.")
        self.declare("occurrence_draining", "gauge", "1 while draining or shutting down.")
        self.declare("occurrence_tasks", "gauge",
                     "This occurrence's tasks by status (read at scrape time).")
        self.declare("occurrence_thoughts", "gauge",
                     "This occurrence's thoughts by status (read at scrape time).")

    def declare(self, name: str, kind: str, help_text: str) -> None:
        self._families.setdefault(name, _Family(name, kind, help_text))

    def _key(self, labels: Mapping[str, str] | None) -> Labels:
        merged = {"occurrence_id": self.occurrence_id, **(labels or {})}
        return tuple(sorted(merged.items()))

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        family = self._families[name]
        key = self._key(labels)
        family.samples[key] = family.samples.get(key, 0.0) + amount

    def set(self, name: str, value: float, **labels: str) -> None:
        self._families[name].samples[self._key(labels)] = float(value)

    def value(self, name: str, **labels: str) -> float:
        return self._families[name].samples.get(self._key(labels), 0.0)

    def render(self, extra: Iterable[tuple[str, Mapping[str, str], float]] = ()) -> str:
        """The exposition text; ``extra`` are gauge samples computed at scrape time."""
        for name, labels, value in extra:
            self.set(name, value, **labels)
        lines: list[str] = []
        for family in self._families.values():
            lines.append(f"# HELP {family.name} {family.help}")
            lines.append(f"# TYPE {family.name} {family.kind}")
            for labels, value in sorted(family.samples.items()):
                text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
                lines.append(f"{family.name}{{{text}}} {_format_value(value)}")
        return "\n".join(lines) + "\n"
