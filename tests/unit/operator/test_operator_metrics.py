"""The operator's exposition: valid text whatever the label values, departed occurrences gone."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from occurrence_operator.kube.metrics import OperatorMetrics


def _samples(metrics: OperatorMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(metrics.render())
            for s in family.samples}


def test_label_values_with_newlines_quotes_and_backslashes_round_trip() -> None:
    metrics = OperatorMetrics()
    awkward = 'ns"with\\odd\nchars'
    metrics.drain_event(awkward, "agd", "started")
    samples = _samples(metrics)
    key = ("occurrence_operator_drains_total",
           (("agentdeployment", "agd"), ("event", "started"), ("namespace", awkward)))
    assert samples[key] == 1.0
    assert all("\n" not in line or line.startswith("#") for line in metrics.render().split("\n"))


def test_pending_gauges_follow_the_current_occurrences() -> None:
    metrics = OperatorMetrics()
    metrics.set_pending("ns", "agd", {"agd-0": 3, "agd-1": 4, "agd-2": 5})
    metrics.set_pending("ns", "other", {"other-0": 1})
    metrics.set_pending("ns", "agd", {"agd-0": 6})
    pending = {dict(labels)["occurrence"]: value for (name, labels), value
               in _samples(metrics).items() if name == "occurrence_operator_pending_tasks"}
    assert pending == {"agd-0": 6.0, "other-0": 1.0}
    metrics.forget("ns", "agd")
    assert "agd-0" not in metrics.render()


def test_counters_and_the_drain_summary() -> None:
    metrics = OperatorMetrics()
    metrics.api_write("PATCH", "statefulsets")
    metrics.api_write("PATCH", "statefulsets")
    metrics.api_write("POST", "events")
    metrics.transferred("ns", "agd", 0)  # nothing moved: no sample
    metrics.transferred("ns", "agd", 7)
    metrics.drain_finished(2.5)
    metrics.drain_finished(-1)  # a clock step backwards never makes a negative duration
    samples = _samples(metrics)
    assert sum(v for (name, _), v in samples.items()
               if name == "occurrence_operator_api_writes_total") == 3
    assert samples[("occurrence_operator_tasks_transferred_total",
                    (("agentdeployment", "agd"), ("namespace", "ns")))] == 7.0
    assert samples[("occurrence_operator_drain_duration_seconds_count", ())] == 2.0
    assert samples[("occurrence_operator_drain_duration_seconds_sum", ())] == 2.5


def test_the_backlog_size_and_conditions_of_an_agentdeployment() -> None:
    metrics = OperatorMetrics()
    metrics.set_pending("ns", "agd", {"agd-0": 3, "agd-1": 4})
    metrics.set_status("ns", "agd", desired=3, ready=2, conditions=[
        {"type": "Ready", "status": "False", "reason": "Scaling"},
        {"type": "Degraded", "status": "False", "reason": "AsExpected"}])
    samples = _samples(metrics)
    agd = (("agentdeployment", "agd"), ("namespace", "ns"))
    assert samples[("occurrence_operator_backlog_tasks", agd)] == 7.0
    replicas = {dict(labels)["kind"]: value for (name, labels), value in samples.items()
                if name == "occurrence_operator_replicas"}
    assert replicas == {"desired": 3.0, "ready": 2.0}
    metrics.set_status("ns", "agd", desired=3, ready=3, conditions=[
        {"type": "Ready", "status": "True", "reason": "AllReady"}])
    conditions = {(dict(labels)["type"], dict(labels)["status"], dict(labels)["reason"])
                  for (name, labels), _ in _samples(metrics).items()
                  if name == "occurrence_operator_condition"}
    assert conditions == {("Ready", "True", "AllReady")}  # the old ones are gone
    metrics.forget("ns", "agd")
    assert not [name for name, _ in _samples(metrics)
                if name.startswith(("occurrence_operator_backlog", "occurrence_operator_repl",
                                    "occurrence_operator_condition"))]
