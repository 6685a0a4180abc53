"""Prometheus metrics in the text exposition format, served by aiohttp (no client library).

Counters: reconciles, drains, tasks transferred, API writes; a summary of drain durations;
a gauge of pending tasks per occurrence.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

PREFIX = "occurrence_operator"

LabelKey = tuple[tuple[str, str], ...]


def _labels(key: LabelKey) -> str:
    if not key:
        return ""
    body = ",".join(
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in key
    )
    return "{" + body + "}"


class Metrics:
    def __init__(self) -> None:
        self.reconciles: dict[LabelKey, float] = defaultdict(float)
        self.drains: dict[LabelKey, float] = defaultdict(float)
        self.tasks_transferred: dict[LabelKey, float] = defaultdict(float)
        self.api_writes: dict[LabelKey, float] = defaultdict(float)
        self.drain_duration_sum = 0.0
        self.drain_duration_count = 0
        self.pending: dict[LabelKey, float] = {}

    # -- recording -----------------------------------------------------------------------

    def reconciled(self, result: str) -> None:
        self.reconciles[(("result", result),)] += 1

    def drain_event(self, namespace: str, name: str, event: str) -> None:
        key = (("namespace", namespace), ("agentdeployment", name), ("event", event))
        self.drains[key] += 1

    def transferred(self, namespace: str, name: str, tasks: int) -> None:
        if tasks:
            self.tasks_transferred[(("namespace", namespace), ("agentdeployment", name))] += tasks

    def drain_finished(self, seconds: float) -> None:
        self.drain_duration_sum += max(0.0, seconds)
        self.drain_duration_count += 1

    def api_write(self, verb: str, resource: str) -> None:
        self.api_writes[(("verb", verb), ("resource", resource))] += 1

    def set_pending(self, namespace: str, name: str, counts: dict[str, int]) -> None:
        for key in [
            k
            for k in self.pending
            if k[:2] == (("namespace", namespace), ("agentdeployment", name))
        ]:
            del self.pending[key]
        for occurrence, count in counts.items():
            key = (("namespace", namespace), ("agentdeployment", name), ("occurrence", occurrence))
            self.pending[key] = count

    def forget(self, namespace: str, name: str) -> None:
        self.set_pending(namespace, name, {})

    def total_api_writes(self) -> int:
        return int(sum(self.api_writes.values()))

    # -- exposition ----------------------------------------------------------------------

    def render(self) -> str:
        lines: list[str] = []

        def family(name: str, kind: str, help_: str, values: dict[LabelKey, float]) -> None:
            lines.append(f"# HELP {PREFIX}_{name} {help_}")
            lines.append(f"# TYPE {PREFIX}_{name} {kind}")
            for key, value in sorted(values.items()):
                lines.append(f"{PREFIX}_{name}{_labels(key)} {value:g}")

        family("reconciles_total", "counter", "Reconcile passes by result.", self.reconciles)
        family("drains_total", "counter", "Scale-down drain milestones.", self.drains)
        family(
            "tasks_transferred_total",
            "counter",
            "Tasks moved from departing occurrences to survivors.",
            self.tasks_transferred,
        )
        family("api_writes_total", "counter", "Kubernetes API writes by verb.", self.api_writes)
        lines.append(f"# HELP {PREFIX}_drain_duration_seconds Scale-down drain durations.")
        lines.append(f"# TYPE {PREFIX}_drain_duration_seconds summary")
        lines.append(f"{PREFIX}_drain_duration_seconds_sum {self.drain_duration_sum:g}")
        lines.append(f"{PREFIX}_drain_duration_seconds_count {self.drain_duration_count}")
        family("pending_tasks", "gauge", "Pending and active tasks per occurrence.", self.pending)
        return "\n".join(lines) + "\n"


async def serve(metrics: Metrics, host: str, port: int) -> Any:
    """Start the /metrics HTTP server; returns the aiohttp runner (call `.cleanup()`)."""
    from aiohttp import web

    async def handle(_request: web.Request) -> web.Response:
        return web.Response(text=metrics.render(), content_type="text/plain", charset="utf-8")

    app = web.Application()
    app.router.add_get("/metrics", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner
