"""Condition bookkeeping and the summary phase."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from occurrence_operator.model.conditions import (
    MIGRATIONS_COMPLETE,
    READY,
    PhaseInputs,
    compute_phase,
    find_condition,
    set_condition,
)
from occurrence_operator.model.status import AgentDeploymentStatus
from occurrence_operator.model.timeutil import format_time, parse_time

T0 = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


def test_new_condition_gets_transition_time_and_generation() -> None:
    conditions = set_condition(
        None, MIGRATIONS_COMPLETE, "False", "JobRunning", "job x running",
        observed_generation=3, now=T0,
    )
    assert conditions == [
        {
            "type": MIGRATIONS_COMPLETE,
            "status": "False",
            "reason": "JobRunning",
            "message": "job x running",
            "lastTransitionTime": "2025-01-01T12:00:00Z",
            "observedGeneration": 3,
        }
    ]


def test_same_status_keeps_transition_time() -> None:
    first = set_condition(None, READY, "False", "Scaling", "1/3", observed_generation=1, now=T0)
    second = set_condition(
        first, READY, "False", "Scaling", "2/3", observed_generation=2, now=T1
    )
    (condition,) = second
    assert condition["lastTransitionTime"] == format_time(T0)
    assert condition["message"] == "2/3" and condition["observedGeneration"] == 2


def test_status_change_moves_transition_time() -> None:
    first = set_condition(None, READY, "False", "Scaling", "", observed_generation=1, now=T0)
    second = set_condition(first, READY, "True", "AllReady", "", observed_generation=1, now=T1)
    assert second[0]["lastTransitionTime"] == format_time(T1)
    assert [c["status"] for c in second] == ["True"] and [c["status"] for c in first] == ["False"]


def test_other_conditions_untouched_and_input_not_mutated() -> None:
    base = set_condition(
        None, MIGRATIONS_COMPLETE, "True", "JobSucceeded", "", observed_generation=1, now=T0
    )
    base = set_condition(base, READY, "False", "Scaling", "", observed_generation=1, now=T0)
    snapshot = [dict(c) for c in base]
    updated = set_condition(base, READY, "True", "AllReady", "", observed_generation=2, now=T1)
    assert base == snapshot
    assert [c["type"] for c in updated] == [MIGRATIONS_COMPLETE, READY]
    assert updated[0] == base[0]
    assert find_condition(updated, "Missing") is None


def test_conditions_fit_the_status_schema() -> None:
    conditions = set_condition(
        None, MIGRATIONS_COMPLETE, "True", "JobSucceeded", "ok", observed_generation=1, now=T0
    )
    status = AgentDeploymentStatus.model_validate({"conditions": conditions})
    assert status.to_wire()["conditions"] == conditions


def test_time_round_trip() -> None:
    assert parse_time(format_time(T0)) == T0
    assert parse_time("2025-01-01T13:00:00+01:00") == T0
    with pytest.raises(ValueError):
        format_time(datetime(2025, 1, 1))  # naive on purpose


def _inputs(**changes: object) -> PhaseInputs:
    base: dict[str, object] = {
        "migration": "Succeeded",
        "draining": False,
        "desired": 3,
        "current": 3,
        "ready": 3,
        "updated": 3,
    }
    base.update(changes)
    return PhaseInputs(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "phase"),
    [
        ({}, "Running"),
        ({"migration": "Disabled"}, "Running"),
        ({"migration": "Failed", "draining": True}, "Failed"),
        ({"migration": "Running"}, "Migrating"),
        ({"migration": "Pending"}, "Migrating"),
        ({"draining": True, "degraded": True}, "Draining"),
        ({"degraded": True}, "Degraded"),
        ({"desired": 0, "current": 0, "ready": 0, "updated": 0}, "ScaledToZero"),
        ({"ready": 2}, "Progressing"),
        ({"updated": 1}, "Progressing"),
        ({"desired": 5}, "Progressing"),
    ],
)
def test_phase(changes: dict[str, object], phase: str) -> None:
    assert compute_phase(_inputs(**changes)) == phase
