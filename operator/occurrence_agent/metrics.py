"""An occurrence's Prometheus metrics, on ``prometheus_client``.

Each runtime has its own registry (several occurrences may run in one process: tests, the
embedded demo), and every sample carries the ``occurrence_id`` label, so metrics from several
occurrences on one host stay apart. The families are declared once, below, with their
labels: a metric name or label that is not declared fails at the call, not at scrape time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    disable_created_metrics,
    generate_latest,
)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The text format every Prometheus reads (what ``generate_latest`` writes for these names)."""

# no ``*_created`` series: they double the samples and nobody reads them
disable_created_metrics()  # type: ignore[no-untyped-call]


@dataclass(frozen=True)
class _Family:
    kind: type[Counter] | type[Gauge]
    help: str
    labels: tuple[str, ...] = ()


FAMILIES: dict[str, _Family] = {
    "occurrence_thoughts_processed_total": _Family(
        Counter, "Thoughts this occurrence finished or gave back, by result: completed, "
        "failed, deferred (the handler's verdict); retried (back to pending after an error), "
        "exhausted (FAILED: attempts used up), stranded_failed (FAILED by recovery=fail), "
        "released (given back when fenced or stopped), reclaimed (stranded, taken back to "
        "pending).", ("result",)),
    "occurrence_worker_errors_total": _Family(
        Counter, "Errors of the work loop by stage (load, handler, finish, after, recover, "
        "step, sweep, heartbeat, listener, shared_lease, metrics, tokens): each one is also a log "
        "line.", ("stage",)),
    "occurrence_worker_healthy": _Family(
        Gauge, "0 after consecutive database failures of the work loop (also unready)."),
    "occurrence_tasks_finished_total": _Family(
        Counter, "Tasks this occurrence finished, by final status.", ("status",)),
    "occurrence_claim_conflicts_total": _Family(
        Counter, "Claims lost to another writer: shared tasks claimed by another occurrence, "
        "thoughts that moved away before completion.", ("kind",)),
    "occurrence_api_refusals_total": _Family(
        Counter, "API requests refused by reason: unauthenticated (401), forbidden (403: the "
        "work token on an admin route), rate_limited (429).", ("reason",)),
    "occurrence_tasks_submitted_total": _Family(
        Counter, "Tasks accepted through the HTTP API."),
    "occurrence_tasks_deduplicated_total": _Family(
        Counter, "Submissions answered with the task an earlier one with the same idempotency "
        "key created (200 instead of 201)."),
    "occurrence_wakeup_wait_seconds": _Family(
        Gauge, "Seconds this occurrence waited for the shared wakeup decision."),
    "occurrence_wakeup_waiting_since_timestamp_seconds": _Family(
        Gauge, "Unix time this occurrence began waiting for another's wakeup; 0 when not "
        "waiting (a wait that never ends is a stuck decision)."),
    "occurrence_shared_decision_age_seconds": _Family(
        Gauge, "Seconds since the oldest unfinished shared decision (wakeup, shutdown) of this "
        "agent was claimed; 0 when all are finished (read at scrape time)."),
    "occurrence_wakeup_performed": _Family(
        Gauge, "1 if this occurrence performed the wakeup on behalf of all."),
    "occurrence_ready": _Family(Gauge, "1 when ready to take work."),
    "occurrence_revision_info": _Family(
        Gauge, "1, labelled with the revision this process runs (AGENT_REVISION, the pod's "
        "controller-revision-hash): join on occurrence_id to count any metric per revision.",
        ("revision",)),
    "occurrence_track": _Family(
        Gauge, "1 on the track this occurrence is on, 0 on the other: canary while a canary "
        "rollout is under way and it does not run the stable revision, else stable (from the "
        "database on every heartbeat; the pod's occurrence.dev/track label says the same).",
        ("track",)),
    "occurrence_draining": _Family(Gauge, "1 while draining or shutting down."),
    "occurrence_tasks": _Family(
        Gauge, "This occurrence's tasks by status (read at scrape time).", ("status",)),
    "occurrence_thoughts": _Family(
        Gauge, "This occurrence's thoughts by status (read at scrape time).", ("status",)),
}


class AgentMetrics:
    """The metrics of one occurrence, in a registry of their own."""

    def __init__(self, occurrence_id: str) -> None:
        self.occurrence_id = occurrence_id
        self.registry = CollectorRegistry()
        self._families: dict[str, Counter | Gauge] = {
            name: family.kind(name, family.help, ("occurrence_id", *family.labels),
                              registry=self.registry)
            for name, family in FAMILIES.items()
        }

    def _child(self, name: str, labels: Mapping[str, str]) -> Counter | Gauge:
        return self._families[name].labels(occurrence_id=self.occurrence_id, **labels)

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        self._child(name, labels).inc(amount)

    def set(self, name: str, value: float, **labels: str) -> None:
        child = self._child(name, labels)
        assert isinstance(child, Gauge), f"{name} is a counter: it only goes up"
        child.set(value)

    def value(self, name: str, **labels: str) -> float:
        sample = self.registry.get_sample_value(
            name, {"occurrence_id": self.occurrence_id, **labels})
        return sample or 0.0

    def render(self, extra: Iterable[tuple[str, Mapping[str, str], float]] = ()) -> str:
        """The exposition text; ``extra`` are gauge samples computed at scrape time."""
        for name, labels, value in extra:
            self.set(name, value, **labels)
        return generate_latest(self.registry).decode()
