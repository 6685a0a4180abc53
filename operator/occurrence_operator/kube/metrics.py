"""The operator's Prometheus metrics, on ``prometheus_client``, served by aiohttp.

Counters: reconciles, drains, tasks transferred, API writes; a summary of drain durations;
a gauge of pending tasks per occurrence. The registry is the operator's own (tests run
several operators' metrics in one process), and label values are escaped by the library.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Summary,
    disable_created_metrics,
    generate_latest,
)

PREFIX = "occurrence_operator"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# no ``*_created`` series: they double the samples and nobody reads them
disable_created_metrics()  # type: ignore[no-untyped-call]

_AGD = ("namespace", "agentdeployment")


class OperatorMetrics:
    """Everything the operator counts, recorded by name of the event, not of the metric."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._reconciles = Counter(f"{PREFIX}_reconciles_total", "Reconcile passes by result.",
                                   ("result",), registry=r)
        self._drains = Counter(f"{PREFIX}_drains_total", "Scale-down drain milestones.",
                               (*_AGD, "event"), registry=r)
        self._transferred = Counter(
            f"{PREFIX}_tasks_transferred_total",
            "Tasks moved from departing occurrences to survivors.", _AGD, registry=r)
        self._api_writes = Counter(f"{PREFIX}_api_writes_total",
                                   "Kubernetes API writes by verb.", ("verb", "resource"),
                                   registry=r)
        self._rollout_requeued = Counter(
            f"{PREFIX}_rollout_requeued_tasks_total",
            "Tasks a rolled-back revision had failed that went back to pending "
            "(spec.rollout.retryFailedOnRollback).", _AGD, registry=r)
        self._rollout_events = Counter(
            f"{PREFIX}_rollout_events_total",
            "Canary rollout events (RolloutStarted, WavePassed, RolloutRolledBack, "
            "RolloutInconclusive, RolloutComplete...), gate measurements that failed "
            "(MeasurementFailed) and givings back of failed work that failed "
            "(GiveBackFailed).", (*_AGD, "event"), registry=r)
        self._rollout_phase = Gauge(
            f"{PREFIX}_rollout_phase",
            "1 for the phase of the AgentDeployment's canary rollout (status.rollout.phase: "
            "Progressing, Paused, Inconclusive, RolledBack, Complete, Reverted).",
            (*_AGD, "phase"), registry=r)
        self._rollout_phase_shown: dict[tuple[str, str], str] = {}
        self._drain_duration = Summary(f"{PREFIX}_drain_duration_seconds",
                                       "Scale-down drain durations.", registry=r)
        self._pending = Gauge(f"{PREFIX}_pending_tasks",
                              "Pending and active tasks per occurrence.",
                              (*_AGD, "occurrence"), registry=r)
        self._pending_occurrences: dict[tuple[str, str], set[str]] = {}
        self._backlog = Gauge(
            f"{PREFIX}_backlog_tasks",
            "Pending and active tasks of the whole AgentDeployment: what an HPA or KEDA "
            "scales on (per occurrence: pending_tasks).", _AGD, registry=r)
        self._replicas = Gauge(f"{PREFIX}_replicas",
                               "Occurrences by kind: desired (spec.replicas), ready.",
                               (*_AGD, "kind"), registry=r)
        self._condition = Gauge(
            f"{PREFIX}_condition",
            "1 for each current condition of an AgentDeployment (type, status, reason).",
            (*_AGD, "type", "status", "reason"), registry=r)
        self._heartbeat_age = Gauge(
            f"{PREFIX}_heartbeat_age_seconds",
            "Seconds since an occurrence's last heartbeat, by the database's clock, when the "
            "operator last looked (retired occurrences have none).", (*_AGD, "occurrence"),
            registry=r)
        self._drain_started = Gauge(
            f"{PREFIX}_drain_started_timestamp_seconds",
            "Unix time the scale-down drain in progress started (absent: none in progress).",
            _AGD, registry=r)
        self._drain_timeout = Gauge(
            f"{PREFIX}_drain_timeout_seconds", "spec.drain.timeoutSeconds.", _AGD, registry=r)
        self._autoscaled = Counter(
            f"{PREFIX}_autoscaler_scales_total",
            "Changes of spec.replicas the autoscaler made, by direction.",
            (*_AGD, "direction"), registry=r)
        self._recommended = Gauge(
            f"{PREFIX}_autoscaler_recommended_replicas",
            "The autoscaler's raw recommendation: ceil(backlog / target) within the bounds.",
            _AGD, registry=r)
        self._api_reads = Counter(
            f"{PREFIX}_api_reads_total",
            "Object reads by resource and where they were answered: `cache` (the informers' "
            "copy) or `api` (a GET sent to the API server).", ("resource", "source"), registry=r)
        self._informer_errors = Counter(
            f"{PREFIX}_informer_errors_total",
            "Problems of the list+watch streams, by resource and reason: `expired` (the "
            "server's 410: listed again), `error` (a failed stream, logged: listed again "
            "after a backoff), `handler` (handling an event failed, logged).",
            ("resource", "reason"), registry=r)
        self._housekeeping_errors = Counter(
            f"{PREFIX}_housekeeping_errors_total",
            "Housekeeping that failed and was logged, the pass going on (it is retried when "
            "next due), by task: `migration_job_cleanup` (deleting superseded migrations "
            "Jobs).", ("task",), registry=r)
        self._conditions_shown: dict[tuple[str, str], set[tuple[str, str, str]]] = {}

    # -- recording -----------------------------------------------------------------------

    def reconciled(self, result: str) -> None:
        self._reconciles.labels(result).inc()

    def housekeeping_failed(self, task: str) -> None:
        self._housekeeping_errors.labels(task).inc()

    def drain_event(self, namespace: str, name: str, event: str) -> None:
        self._drains.labels(namespace, name, event).inc()

    def rollout_event(self, namespace: str, name: str, event: str) -> None:
        self._rollout_events.labels(namespace, name, event).inc()

    def rollout_requeued(self, namespace: str, name: str, tasks: int) -> None:
        if tasks:
            self._rollout_requeued.labels(namespace, name).inc(tasks)

    def transferred(self, namespace: str, name: str, tasks: int) -> None:
        if tasks:
            self._transferred.labels(namespace, name).inc(tasks)

    def drain_finished(self, seconds: float) -> None:
        self._drain_duration.observe(max(0.0, seconds))

    def api_write(self, verb: str, resource: str) -> None:
        self._api_writes.labels(verb, resource).inc()

    def api_read(self, resource: str, source: str) -> None:
        self._api_reads.labels(resource, source).inc()

    def informer_error(self, resource: str, reason: str) -> None:
        self._informer_errors.labels(resource, reason).inc()

    def set_pending(self, namespace: str, name: str, counts: dict[str, int],
                    heartbeat_ages: dict[str, float] | None = None) -> None:
        """Replace the AgentDeployment's per-occurrence gauges: departed ones disappear."""
        previous = self._pending_occurrences.pop((namespace, name), set())
        for occurrence in previous - counts.keys():
            self._pending.remove(namespace, name, occurrence)
        ages = heartbeat_ages or {}
        for occurrence in previous | counts.keys():
            if occurrence in ages:
                self._heartbeat_age.labels(namespace, name, occurrence).set(ages[occurrence])
            else:
                _remove(self._heartbeat_age, namespace, name, occurrence)
        for occurrence, count in counts.items():
            self._pending.labels(namespace, name, occurrence).set(count)
        if counts:
            self._pending_occurrences[(namespace, name)] = set(counts)
            self._backlog.labels(namespace, name).set(sum(counts.values()))
        elif previous:
            self._backlog.remove(namespace, name)

    def autoscaled(self, namespace: str, name: str, direction: str) -> None:
        self._autoscaled.labels(namespace, name, direction).inc()

    def set_recommended(self, namespace: str, name: str, replicas: int) -> None:
        self._recommended.labels(namespace, name).set(replicas)

    def set_status(self, namespace: str, name: str, *, desired: int, ready: int,
                   conditions: list[dict[str, str]], drain_started_at: float | None = None,
                   drain_timeout_seconds: float | None = None) -> None:
        """The AgentDeployment's size, conditions and drain as gauges (what alerts read)."""
        if drain_started_at is None:
            _remove(self._drain_started, namespace, name)
        else:
            self._drain_started.labels(namespace, name).set(drain_started_at)
        if drain_timeout_seconds is not None:
            self._drain_timeout.labels(namespace, name).set(drain_timeout_seconds)
        self._replicas.labels(namespace, name, "desired").set(desired)
        self._replicas.labels(namespace, name, "ready").set(ready)
        self.set_conditions(namespace, name, conditions)

    def set_conditions(self, namespace: str, name: str,
                       conditions: list[dict[str, str]]) -> None:
        """`occurrence_operator_condition`: one series per condition the status shows."""
        shown = {(c.get("type", ""), c.get("status", ""), c.get("reason", ""))
                 for c in conditions}
        for gone in self._conditions_shown.pop((namespace, name), set()) - shown:
            self._condition.remove(namespace, name, *gone)
        for labels in shown:
            self._condition.labels(namespace, name, *labels).set(1)
        self._conditions_shown[(namespace, name)] = shown

    def set_rollout_phase(self, namespace: str, name: str, phase: str | None) -> None:
        """`status.rollout.phase` as a gauge (None: no canary rollout record)."""
        shown = self._rollout_phase_shown.pop((namespace, name), None)
        if shown is not None and shown != phase:
            _remove(self._rollout_phase, namespace, name, shown)
        if phase is not None:
            self._rollout_phase.labels(namespace, name, phase).set(1)
            self._rollout_phase_shown[(namespace, name)] = phase

    def forget(self, namespace: str, name: str) -> None:
        self.set_pending(namespace, name, {})
        self.set_rollout_phase(namespace, name, None)
        for kind in ("desired", "ready"):
            _remove(self._replicas, namespace, name, kind)
        for gone in self._conditions_shown.pop((namespace, name), set()):
            self._condition.remove(namespace, name, *gone)
        for gauge in (self._recommended, self._drain_started, self._drain_timeout):
            _remove(gauge, namespace, name)

    # -- exposition ----------------------------------------------------------------------

    def render(self) -> str:
        return generate_latest(self.registry).decode()


def _remove(gauge: Gauge, *labels: str) -> None:
    """Remove one labelled series; one never reported is not an error."""
    try:
        gauge.remove(*labels)
    except KeyError:
        pass


async def serve(metrics: OperatorMetrics, host: str, port: int) -> Any:
    """Start the /metrics HTTP server; returns the aiohttp runner (call `.cleanup()`)."""
    from aiohttp import web

    async def handle(_request: web.Request) -> web.Response:
        return web.Response(body=metrics.render().encode(),
                            headers={"Content-Type": CONTENT_TYPE})

    app = web.Application()
    app.router.add_get("/metrics", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner
