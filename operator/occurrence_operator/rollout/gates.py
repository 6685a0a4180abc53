"""Rollout gates, pure: a wave's canary occurrences judged on the work they finished while it
baked, against the stable occurrences over the same time (`spec.rollout.waves[].gates`).

The counts come from the shared database (`store.outcomes`): what a canary *did*, not
whether its pod is ready. A gate is Inconclusive below `minSamples`, Skipped when it compares
with the stable occurrences and the wave has none, and counts its consecutive failures. A
Prometheus gate (`prometheus:`) takes its value from a query instead (`.prometheus`): no
value is Inconclusive.
"""

from __future__ import annotations

from datetime import datetime

from occurrence_store.outcomes import WorkOutcome

from ..model.spec import GateMetric, GateSpec
from ..model.status import GateStatus
from ..model.timeutil import format_time
from .prometheus import PrometheusReading


def value_of(metric: GateMetric, outcome: WorkOutcome) -> tuple[float | None, int]:
    """The metric's value for `outcome` (None: nothing to divide by) and its samples."""
    if metric == "taskFailureRatio":
        finished = outcome.tasks_finished
        return (outcome.tasks_failed / finished if finished else None), finished
    if metric == "thoughtErrorRatio":
        finished = outcome.thoughts_finished
        return (outcome.thoughts_failed / finished if finished else None), finished
    minutes = outcome.seconds / 60
    per_occurrence = (outcome.tasks_completed / outcome.occurrences / minutes
                      if outcome.occurrences and minutes > 0 else None)
    return per_occurrence, outcome.tasks_finished


def threshold_text(gate: GateSpec) -> str:
    parts = []
    if gate.max is not None:
        parts.append(f"max {gate.max:g}")
    if gate.min is not None:
        parts.append(f"min {gate.min:g}")
    if gate.max_increase_over_stable is not None:
        parts.append(f"stable + {gate.max_increase_over_stable:g}")
    return ", ".join(parts)


def gate_name(gate: GateSpec, index: int) -> str:
    """How the status names a gate: its metric, or `prometheus[i]` (its place in the wave)."""
    return gate.metric if gate.metric is not None else f"prometheus[{index}]"


def evaluate(gate: GateSpec, canary: WorkOutcome | None, stable: WorkOutcome | None,
             previous: GateStatus | None, now: datetime, *, index: int = 0,
             reading: PrometheusReading | None = None) -> GateStatus:
    """One evaluation of `gate` (the `index`-th of its wave); `previous` is its last one in
    this wave (failures carry). A metric gate reads `canary` and `stable`, a Prometheus gate
    its `reading`."""
    message = None
    if gate.metric is None:
        value = reading.value if reading is not None else None
        samples = 0 if value is None else 1
        message = reading.error if reading is not None else "not measured"
        stable_value = None
        min_samples = 1
    else:
        value, samples = value_of(gate.metric, canary) if canary is not None else (None, 0)
        stable_value = None if stable is None or not stable.occurrences else \
            value_of(gate.metric, stable)[0]
        min_samples = gate.min_samples
    verdict = "Pass"
    if samples < min_samples or value is None:
        verdict = "Inconclusive"
    elif (gate.max is not None and value > gate.max) or (
            gate.min is not None and value < gate.min):
        verdict = "Fail"
    elif gate.max_increase_over_stable is not None:
        if stable_value is None:
            verdict = "Skipped" if gate.max is None and gate.min is None else "Pass"
        elif value > stable_value + gate.max_increase_over_stable:
            verdict = "Fail"
    failures = (previous.failures if previous is not None else 0) + 1 \
        if verdict == "Fail" else 0
    return GateStatus.from_fields(
        metric=gate_name(gate, index), verdict=verdict, canary=_rounded(value),
        stable=_rounded(stable_value), threshold=threshold_text(gate), samples=samples,
        failures=failures, evaluated_at=format_time(now), message=message)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)
