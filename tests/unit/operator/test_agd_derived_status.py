"""The status a pass writes, derived purely from what it found (derived_status.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from occurrence_operator.kube.agd_object import status_patch
from occurrence_operator.model.conditions import find_condition
from occurrence_operator.model.pause import read_request as read_pause_request
from occurrence_operator.model.status import (
    AgentDeploymentStatus,
    AutoscalingStatus,
    RolloutStatus,
    ScaleDownStatus,
)
from occurrence_operator.reconcile.derived_status import (
    OCCURRENCE_ID_CONFLICT,
    ConditionSet,
    Migration,
    Problem,
    StatusInputs,
    condition_reason,
    derive_status,
    paused_status,
    problem_status,
    transition_events,
)

T0 = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
LAST = {"hash": "abc", "jobName": "w-migrate-abc", "completedAt": "2025-01-01T11:00:00Z"}


def _sts(replicas: int, ready: int | None = None) -> dict[str, Any]:
    ready = replicas if ready is None else ready
    return {"metadata": {"generation": 2}, "spec": {"replicas": replicas},
            "status": {"replicas": replicas, "readyReplicas": ready, "updatedReplicas": replicas,
                       "observedGeneration": 2}}


def _derive(inputs: StatusInputs, before: list[dict[str, Any]] | None = None
            ) -> tuple[dict[str, Any], list[tuple[str, str, str]]]:
    conditions = ConditionSet(list(before or []), 3, T0)
    document = derive_status(inputs, conditions, before=before or [])
    return document.to_wire(), list(document.events)


def _inputs(**changes: Any) -> StatusInputs:
    values: dict[str, Any] = {"desired": 3, "selector": "sel", "sts": _sts(3),
                              "migration": Migration("Succeeded", last=LAST), "record": None}
    values.update(changes)
    return StatusInputs(**values)


def _condition(wire: dict[str, Any], type_: str) -> tuple[str, str]:
    found = find_condition(wire["conditions"], type_)
    assert found is not None
    return found["status"], found["reason"]


def test_running_and_ready() -> None:
    wire, events = _derive(_inputs())
    assert {k: v for k, v in wire.items() if k != "conditions"} == {
        "observedGeneration": 3, "replicas": 3, "readyReplicas": 3, "drainingReplicas": 0,
        "selector": "sel", "phase": "Running", "lastMigration": LAST,
        "autoscaling": None, "rollout": None,  # off: a field left from when it was on goes
        "fencedReplicas": None}
    assert _condition(wire, "Ready") == ("True", "AllOccurrencesReady")
    assert _condition(wire, "Degraded") == ("False", "AsExpected")
    assert ("Normal", "Ready", "3/3 occurrences ready") in events
    AgentDeploymentStatus.model_validate(wire)  # what is written is what the CRD declares

    again, quiet = _derive(_inputs(), before=wire["conditions"])
    assert again == wire and quiet == []  # no transition, no event, same document


def test_a_drain_in_progress() -> None:
    record = ScaleDownStatus.model_validate({
        "phase": "Transferring", "fromReplicas": 5, "toReplicas": 3, "ordinals": [3, 4],
        "startedAt": "2025-01-01T11:59:00Z", "message": "moving"})
    wire, _ = _derive(_inputs(sts=_sts(5), record=record))
    assert wire["phase"] == "Draining" and wire["drainingReplicas"] == 2
    assert wire["scaleDown"] == record.to_wire()
    assert _condition(wire, "Draining") == ("True", "Transferring")
    assert _condition(wire, "Ready") == ("False", "Draining")


def test_a_canary_wave_baking_is_ready_and_progressing() -> None:
    """A canary rollout holds ordinals below its partition on the stable template on
    purpose: the AgentDeployment is Ready when every pod is, not only when all are updated."""
    record = RolloutStatus.from_fields(phase="Progressing", wave="explorer", partition=2,
                                       canary_occurrences=1, canary_template="new")
    sts = _sts(3)
    sts["status"]["updatedReplicas"] = 1
    wire, _ = _derive(_inputs(sts=sts, rollout=record))
    assert wire["rollout"] == record.to_wire()
    assert _condition(wire, "Ready") == ("True", "AllOccurrencesReady")
    assert _condition(wire, "Progressing") == ("True", "RolloutProgressing")
    assert wire["phase"] == "Progressing"
    sts["status"]["updatedReplicas"] = 0  # the explorer not rolled yet
    wire, _ = _derive(_inputs(sts=sts, rollout=record))
    assert _condition(wire, "Ready") == ("False", "OccurrencesNotReady")
    assert wire["phase"] == "Progressing"
    done = record.model_copy(update={"phase": "Complete", "partition": 0})
    wire, _ = _derive(_inputs(rollout=done))
    assert _condition(wire, "Progressing") == ("False", "RolloutComplete")
    wire, _ = _derive(_inputs())  # RollingUpdate: no such condition
    assert find_condition(wire["conditions"], "Progressing") is None


def test_failed_migrations_and_conflicts() -> None:
    failed = Migration("Failed", "BackoffLimitExceeded", "Job w-migrate failed")
    wire, events = _derive(_inputs(migration=failed))
    assert wire["phase"] == "Failed"
    assert _condition(wire, "MigrationsFailed") == ("True", "BackoffLimitExceeded")
    assert _condition(wire, "Degraded") == ("True", "MigrationsFailed")
    assert ("Warning", "MigrationsFailed", "Job w-migrate failed") in events

    conflict = Problem(OCCURRENCE_ID_CONFLICT, "ids belong to another agent")
    wire, events = _derive(_inputs(problem=conflict))
    assert wire["phase"] == "Degraded"
    assert _condition(wire, "Ready") == ("False", OCCURRENCE_ID_CONFLICT)
    assert ("Warning", OCCURRENCE_ID_CONFLICT, "ids belong to another agent") in events
    assert "occurrences" not in wire


def test_a_problem_before_anything_was_measured() -> None:
    conditions = ConditionSet([], 4, T0)
    conditions.set("Degraded", "True", "SecretNotFound", "no Secret db")
    document = problem_status(conditions, before=[])
    assert {k: v for k, v in document.to_wire().items() if k != "conditions"} == {
        "phase": "Degraded", "observedGeneration": 4}
    assert document.events == [("Warning", "SecretNotFound", "no Secret db")]


def test_condition_reasons_are_sanitized() -> None:
    assert condition_reason("Backoff-Limit Exceeded") == "BackoffLimitExceeded"
    assert condition_reason("42") == "Failed" and condition_reason("") == "Failed"


def test_the_autoscalers_decision_and_a_second_autoscaler() -> None:
    decided = AutoscalingStatus.from_fields(
        observed_backlog=420, recommended_replicas=5, desired_replicas=5, reason="ScaledUp",
        message="backlog 420", last_scale_time="2025-01-01T12:00:00Z")
    wire, _ = _derive(_inputs(autoscaling=decided))
    assert wire["autoscaling"] == {
        "observedBacklog": 420, "recommendedReplicas": 5, "desiredReplicas": 5,
        "reason": "ScaledUp", "message": "backlog 420", "lastScaleTime": "2025-01-01T12:00:00Z"}
    assert _condition(wire, "Degraded") == ("False", "AsExpected")
    AgentDeploymentStatus.model_validate(wire)

    held = decided.model_copy(update={"reason": "AutoscalerConflict"})
    wire, events = _derive(_inputs(autoscaling=held, autoscaler_conflict="HPA x also scales"))
    assert _condition(wire, "Degraded") == ("True", "AutoscalerConflict")
    assert wire["phase"] == "Degraded"
    assert ("Warning", "AutoscalerConflict", "HPA x also scales") in events


def test_a_record_written_again_loses_the_keys_it_no_longer_has() -> None:
    """A merge patch merges nested objects: a key left out of a record would keep its old
    value on the server (a wave's bake start survived into the next wave's record)."""
    live = {"rollout": {"phase": "Progressing", "wave": "explorer",
                        "bakeStartedAt": "2026-01-01T12:00:00Z"}, "phase": "Running"}
    desired = {"rollout": {"phase": "Progressing", "wave": "early"}, "phase": "Running"}
    assert status_patch(desired, live) == {
        "rollout": {"phase": "Progressing", "wave": "early", "bakeStartedAt": None}}
    assert status_patch(live, live) == {}
    assert status_patch({"rollout": None}, live) == {"rollout": None}


def test_a_paused_pass_writes_the_paused_condition_and_phase_only() -> None:
    before = [{"type": "Ready", "status": "True", "reason": "AllOccurrencesReady",
               "message": "2/2", "lastTransitionTime": "2025-01-01T11:00:00Z"}]
    conditions = ConditionSet(list(before), 3, T0)
    document = paused_status(conditions, before=before)
    wire = document.to_wire()
    assert set(wire) == {"conditions", "phase"} and wire["phase"] == "Paused"
    paused = find_condition(wire["conditions"], "Paused")
    assert paused is not None and paused["status"] == "True"
    assert find_condition(wire["conditions"], "Ready") == before[0]  # untouched
    assert [e[:2] for e in document.events] == [("Normal", "ReconcilePaused")]
    # a merge patch of it leaves everything else in the live status alone
    live = {"replicas": 2, "readyReplicas": 2, "phase": "Running", "conditions": before}
    assert set(status_patch(wire, live)) == {"conditions", "phase"}


def test_the_pause_annotation_is_read_exactly() -> None:
    assert read_pause_request({}) == (False, None)
    assert read_pause_request({"occurrence.dev/reconcile": "paused"}) == (True, None)
    for value in ("Paused", "true", "disabled", ""):
        paused, problem = read_pause_request({"occurrence.dev/reconcile": value})
        assert not paused and problem is not None and repr(value) in problem


def test_resumed_is_told_only_after_a_pause() -> None:
    paused = {"type": "Paused", "status": "True", "reason": "ReconcilePaused", "message": "",
              "lastTransitionTime": "2025-01-01T11:00:00Z"}
    ignored = {**paused, "status": "False", "reason": "UnknownValue", "message": "typo"}
    assert [e[1] for e in transition_events([paused], [])] == ["ReconcileResumed"]
    assert transition_events([ignored], []) == []
    assert [e[:2] for e in transition_events([paused], [ignored])] == [
        ("Warning", "ReconcileAnnotationIgnored")]
