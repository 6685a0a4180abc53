"""Prometheus gates, pure parts: the spec, the query's variables, which URLs are allowed,
reading an answer, and the gate's verdict from a reading (rollout/prometheus.py, gates.py).
The real server is in tests/agent/test_prometheus_gate.py."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from occurrence_operator.model.spec import GateSpec, RolloutSpec
from occurrence_operator.model.status import RolloutStatus
from occurrence_operator.model.timeutil import format_time
from occurrence_operator.rollout import prometheus
from occurrence_operator.rollout.gates import evaluate
from occurrence_operator.rollout.planner import Observed, plan
from occurrence_operator.rollout.prometheus import PrometheusReading

T0 = datetime(2026, 12, 7, 12, tzinfo=UTC)


def _gate(**extra: object) -> GateSpec:
    return GateSpec.model_validate(
        {"prometheus": {"url": "http://prom:9090", "query": "vector(0)"}, **extra})


def test_unknown_query_variables_are_refused() -> None:
    with pytest.raises(ValidationError, match=r"unknown query variables \['job'\]"):
        GateSpec.model_validate({"prometheus": {
            "url": "http://p:9090", "query": 'up{job="{{job}}"}'}, "max": 1})
    ok = GateSpec.model_validate({"prometheus": {
        "url": "http://p:9090", "query": 'x{revision="{{ canaryRevision }}"}'}, "max": 1})
    assert ok.prometheus is not None


@pytest.mark.parametrize("body", [
    {"metric": "taskFailureRatio", "max": 1,
     "prometheus": {"url": "http://p:9090", "query": "q"}},
    {"maxIncreaseOverStable": 1, "prometheus": {"url": "http://p:9090", "query": "q"}},
    {"max": 1},
    {"max": 1, "prometheus": {"url": "ftp://p", "query": "q"}},
    {"max": 1, "prometheus": {"url": "http://user:pw@p:9090", "query": "q"}},
    {"max": 1, "prometheus": {"url": "http://p:9090", "query": "q", "timeoutSeconds": 31}},
])
def test_bad_gates_are_refused(body: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        GateSpec.model_validate(body)


def test_the_query_is_templated() -> None:
    query = 'sum(x{revision="{{canaryRevision}}", occurrence_id=~"{{ canaryOccurrences }}"})'
    out = prometheus.render_query(query, {"canaryRevision": "web-7d9",
                                          "canaryOccurrences": prometheus.alternation(
                                              ["web-3", "web-4"])})
    assert out == 'sum(x{revision="web-7d9", occurrence_id=~"web-3|web-4"})'
    assert prometheus.alternation([]) == "$^"


@pytest.mark.parametrize(("url", "allowed", "ok"), [
    ("http://prom:9090", ["http://prom:9090"], True),
    ("http://prom:9090/", ["http://prom:9090/"], True),
    ("http://prom:9090/sub", ["http://prom:9090"], True),
    ("http://prom:90901", ["http://prom:9090"], False),
    ("http://prom:9090.evil", ["http://prom:9090"], False),
    ("http://other:9090", ["http://prom:9090"], False),
    ("http://prom:9090", [], False),
    ("http://prom:9090", [""], False),
])
def test_only_allowed_urls(url: str, allowed: list[str], ok: bool) -> None:
    assert prometheus.is_allowed(url, allowed) is ok


def _answer(data: object, status: str = "success", **extra: object) -> bytes:
    return json.dumps({"status": status, "data": data, **extra}).encode()


@pytest.mark.parametrize(("status", "body", "value", "error"), [
    (200, _answer({"resultType": "vector", "result": [{"metric": {}, "value": [1, "0.25"]}]}),
     0.25, None),
    (200, _answer({"resultType": "scalar", "result": [1, "3"]}), 3.0, None),
    (200, _answer({"resultType": "vector", "result": []}), None, "no data"),
    (200, _answer({"resultType": "vector", "result": [
        {"value": [1, "1"]}, {"value": [1, "2"]}]}), None, "2 samples"),
    (200, _answer({"resultType": "matrix", "result": []}), None, "a matrix result"),
    (200, _answer({"resultType": "scalar", "result": [1, "NaN"]}), None, "not a finite"),
    (200, _answer({"resultType": "scalar", "result": [1, "+Inf"]}), None, "not a finite"),
    (400, _answer(None, "error", errorType="bad_data", error="parse error"), None,
     "HTTP 400: bad_data: parse error"),
    (502, b"<html>gateway</html>", None, "HTTP 502: not a Prometheus answer"),
    (200, b"[1, 2]", None, "not a Prometheus answer"),
])
def test_answers(status: int, body: bytes, value: float | None, error: str | None) -> None:
    reading = prometheus.parse(status, body)
    assert reading.value == value
    assert (reading.error is None) if error is None else (error in (reading.error or ""))


@pytest.mark.parametrize(("reading", "limits", "verdict"), [
    (PrometheusReading(0.05), {"max": 0.1}, "Pass"),
    (PrometheusReading(0.5), {"max": 0.1}, "Fail"),
    (PrometheusReading(1.0), {"min": 2}, "Fail"),
    (PrometheusReading(None, "no data"), {"max": 0.1}, "Inconclusive"),
    (None, {"max": 0.1}, "Inconclusive"),
])
def test_a_reading_decides_the_gate(reading: PrometheusReading | None,
                                    limits: dict[str, float], verdict: str) -> None:
    status = evaluate(_gate(**limits), None, None, None, T0, index=2, reading=reading)
    assert status.verdict == verdict and status.metric == "prometheus[2]"
    if reading is not None and reading.error:
        assert status.message == reading.error


def test_a_failing_prometheus_gate_rolls_back_and_no_answer_never_promotes() -> None:
    rollout = RolloutSpec.model_validate({
        "strategy": "Canary", "failureLimit": 2, "analysisIntervalSeconds": 10,
        "waves": [{"name": "explorer", "occurrences": 1, "bakeSeconds": 30,
                   "maxBakeSeconds": 60,
                   "gates": [{"max": 0.1, "prometheus": {
                       "url": "http://p:9090", "query": "vector(0)"}}]},
                  {"name": "general", "percent": 100}]})
    record = RolloutStatus.from_fields(
        phase="Progressing", wave="explorer", partition=3, canary_occurrences=1,
        canary_template="new", stable_template="old", stable_revision="rev-old",
        canary_revision="rev-new", started_at=format_time(T0),
        bake_started_at=format_time(T0))
    seen = Observed(template="new", template_changed=False, replicas=4, ready=4, updated=1,
                    update_revision="rev-new", current_revision="rev-old")
    bad = replace(seen, prometheus=(PrometheusReading(0.9),))
    first = plan(rollout, record, bad, T0 + timedelta(seconds=10)).record
    assert first is not None and first.gates is not None
    assert (first.gates[0].verdict, first.gates[0].failures) == ("Fail", 1)
    second = plan(rollout, first, bad, T0 + timedelta(seconds=20))
    assert second.record is not None and second.record.phase == "RolledBack"
    assert "prometheus[0] 0.9" in second.events[-1][2]
    # no answer at all: past the bake and its limit the rollout is held, not promoted
    silent = replace(seen, prometheus=(PrometheusReading(None, "Prometheus did not answer"),))
    current = record
    for t in range(10, 90, 10):
        decision = plan(rollout, current, silent, T0 + timedelta(seconds=t))
        assert decision.record is not None
        current = decision.record
        assert current.wave == "explorer"
    assert current.phase == "Inconclusive"
