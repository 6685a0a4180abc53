"""The scaling decision (pure): recommendation, stabilization, step limits, cooldown, zero."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from occurrence_operator.autoscaling import History, decide, recommend
from occurrence_operator.autoscaling.decision import (
    AT_MAXIMUM,
    COOLING_DOWN,
    DOWN_STABILIZING,
    SCALED_DOWN,
    SCALED_UP,
    UP_STABILIZING,
    WITHIN_TARGET,
)
from occurrence_operator.model.spec import AgentDeploymentSpec, AutoscalingSpec


def spec(**fields: Any) -> AutoscalingSpec:
    return AutoscalingSpec.model_validate(
        {"minReplicas": 1, "maxReplicas": 6, "targetBacklogPerOccurrence": 100, **fields})


class Run:
    """Successive measurements of one AgentDeployment, as the controller makes them."""

    def __init__(self, autoscaling: AutoscalingSpec, current: int, start: float = 1000.0,
                 watched_for: float = 10_000.0) -> None:
        self.spec, self.current, self.now = autoscaling, current, start
        self.history = History(started_at=start - watched_for)
        self.last_scale_at: float | None = None

    def measure(self, backlog: int, after: float = 15.0) -> Any:
        self.now += after
        decision = decide(now=self.now, current=self.current, backlog=backlog, spec=self.spec,
                          history=self.history, last_scale_at=self.last_scale_at)
        if decision.desired != self.current:
            self.current, self.last_scale_at = decision.desired, self.now
        return decision


@pytest.mark.parametrize(("backlog", "expected"), [
    (0, 1), (1, 1), (100, 1), (101, 2), (550, 6), (10_000, 6)])
def test_recommendation_is_the_backlog_over_the_target_within_the_bounds(
        backlog: int, expected: int) -> None:
    assert recommend(backlog, spec()) == expected


def test_zero_only_when_allowed_and_the_backlog_is_empty() -> None:
    assert recommend(0, spec(minReplicas=0)) == 0
    assert recommend(1, spec(minReplicas=0)) == 1


def test_scale_up_is_immediate_but_bounded_by_the_step() -> None:
    run = Run(spec(), current=1)
    first = run.measure(10_000)
    assert (first.desired, first.reason, first.recommended) == (5, SCALED_UP, 6)
    assert "at most 4 per step" in first.message
    second = run.measure(10_000)
    assert (second.desired, second.reason) == (6, SCALED_UP)
    third = run.measure(10_000)
    assert (third.desired, third.reason) == (6, AT_MAXIMUM)


def test_scale_up_window_takes_the_lowest_recommendation() -> None:
    run = Run(spec(scaleUp={"stabilizationWindowSeconds": 60}), current=1)
    assert run.measure(100).reason == WITHIN_TARGET
    held = run.measure(500)  # the lowest of the last 60 s is still 1
    assert (held.desired, held.reason) == (1, UP_STABILIZING)
    run.measure(500, after=30)
    up = run.measure(500, after=31)  # the 100 is out of the window now
    assert (up.desired, up.reason) == (5, SCALED_UP)


def test_scale_down_waits_for_the_window_and_then_takes_the_highest() -> None:
    run = Run(spec(scaleDown={"stabilizationWindowSeconds": 60, "cooldownSeconds": 0}),
              current=6)
    run.measure(600)
    for _ in range(3):  # 45 s of an empty backlog: the 600 is still in the window
        decision = run.measure(0)
        assert (decision.desired, decision.reason) == (6, DOWN_STABILIZING)
    run.measure(300)
    down = run.measure(0, after=16)  # 600 left the window; 300 is the highest in it
    assert (down.desired, down.reason) == (3, SCALED_DOWN)
    assert "drain" in down.message


def test_a_dip_inside_the_window_never_scales_down() -> None:
    run = Run(spec(), current=4)  # default: a 300 s window
    for backlog in (400, 0, 400, 0, 400, 0):
        assert run.measure(backlog, after=40).desired == 4


def test_after_a_restart_the_scale_down_window_starts_again() -> None:
    run = Run(spec(scaleDown={"cooldownSeconds": 0}), current=3, watched_for=0)
    for _ in range(19):  # 285 s of an empty backlog, watched since the restart
        assert run.measure(0).reason == DOWN_STABILIZING
    down = run.measure(0)
    assert (down.desired, down.reason) == (1, SCALED_DOWN)


def test_cooldown_spaces_two_scales() -> None:
    run = Run(spec(scaleDown={"stabilizationWindowSeconds": 0, "cooldownSeconds": 60},
                   scaleUp={"maxStep": 10}), current=1)
    assert run.measure(600).desired == 6
    held = run.measure(0, after=30)
    assert (held.desired, held.reason) == (6, COOLING_DOWN)
    assert run.measure(0, after=31).desired == 1


def test_step_limits_a_scale_down() -> None:
    run = Run(spec(scaleDown={"stabilizationWindowSeconds": 0, "cooldownSeconds": 0,
                              "maxStep": 2}), current=6)
    assert [run.measure(0).desired for _ in range(4)] == [4, 2, 1, 1]


def test_scale_to_zero_and_back_to_one() -> None:
    run = Run(spec(minReplicas=0, scaleDown={"stabilizationWindowSeconds": 30,
                                             "cooldownSeconds": 0}), current=1)
    assert run.measure(50).desired == 1
    assert run.measure(0).desired == 1
    assert run.measure(0).desired == 1  # the 50 is 30 s old: still in the window
    assert run.measure(0, after=1).desired == 0
    assert run.measure(0).reason == WITHIN_TARGET
    back = run.measure(1)
    assert (back.desired, back.reason) == (1, SCALED_UP)


def test_a_size_outside_the_bounds_is_corrected_at_once() -> None:
    run = Run(spec(minReplicas=2, maxReplicas=4), current=9)
    decision = run.measure(10_000)
    assert (decision.desired, decision.reason) == (4, SCALED_DOWN)
    run = Run(spec(minReplicas=2, maxReplicas=4), current=0)
    assert run.measure(0).desired == 2


@pytest.mark.parametrize(("fields", "message"), [
    ({"minReplicas": 7}, "minReplicas must not exceed"),
    ({"targetBacklogPerOccurrence": 0}, "greater than or equal to 1"),
    ({"maxReplicas": 0}, "greater than or equal to 1"),
    ({"maxReplicas": 1001}, "less than or equal to 1000"),
    ({"scaleUp": {"maxStep": 0}}, "greater than or equal to 1"),
    ({"scaleDown": {"stabilizationWindowSeconds": 3601}}, "less than or equal to 3600"),
    ({"intervalSeconds": 0}, "greater than or equal to 1"),
    ({"scaleUp": {"period": 5}}, "Extra inputs are not permitted"),
])
def test_bad_autoscaling_is_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        spec(**fields)


def test_autoscaling_is_optional_and_off_by_default() -> None:
    body = {"image": "agent:1", "database": {"secretRef": {"name": "db"}}}
    assert AgentDeploymentSpec.model_validate(body).autoscaling is None
    scaled = AgentDeploymentSpec.model_validate(
        {**body, "autoscaling": {"maxReplicas": 3, "targetBacklogPerOccurrence": 5}})
    assert scaled.autoscaling is not None and scaled.autoscaling.min_replicas == 1
