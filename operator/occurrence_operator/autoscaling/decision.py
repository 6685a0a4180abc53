"""The scaling decision, pure: from a backlog, the current size, the recent recommendations
and the time of the last scale, the size to run and why.

Modelled on the HPA's `behavior` algorithm: a raw recommendation `ceil(backlog / target)`;
the stabilization window picks the most conservative recommendation of its last seconds
(the lowest for a scale-up, the highest for a scale-down); the step limit bounds one
change; the cooldown spaces two changes; [minReplicas, maxReplicas] bounds the result
(immediately: a size outside the bounds is corrected without waiting). The history lives
in the operator's memory: after a restart the scale-down window starts again (a restart
delays a scale-down, it never hastens one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Protocol

from ..model.spec import AutoscalingSpec, ScalingRules

Direction = Literal["up", "down"]

SCALED_UP = "ScaledUp"
SCALED_DOWN = "ScaledDown"
WITHIN_TARGET = "WithinTarget"
UP_STABILIZING = "ScaleUpStabilizing"
DOWN_STABILIZING = "ScaleDownStabilizing"
COOLING_DOWN = "CoolingDown"
AT_MAXIMUM = "AtMaxReplicas"


@dataclass(frozen=True)
class Rules:
    """`ScalingRules` of one direction with its defaults filled in."""

    window_seconds: float
    max_step: int | None
    cooldown_seconds: float

    def filled(self, given: ScalingRules) -> Rules:
        return Rules(
            self.window_seconds if given.stabilization_window_seconds is None
            else given.stabilization_window_seconds,
            self.max_step if given.max_step is None else given.max_step,
            self.cooldown_seconds if given.cooldown_seconds is None else given.cooldown_seconds)


UP_DEFAULTS = Rules(window_seconds=0, max_step=4, cooldown_seconds=0)
DOWN_DEFAULTS = Rules(window_seconds=300, max_step=None, cooldown_seconds=60)


@dataclass
class History:
    """The raw recommendations of the longest window, oldest first."""

    started_at: float
    """When this history began (a scale-down waits for a full window of it)."""
    samples: list[tuple[float, int]] = field(default_factory=list)

    def record(self, now: float, recommendation: int, keep_seconds: float) -> None:
        self.samples.append((now, recommendation))
        self.samples = [(t, r) for t, r in self.samples if t >= now - keep_seconds]

    def within(self, now: float, seconds: float) -> list[int]:
        return [r for t, r in self.samples if t >= now - seconds]


@dataclass(frozen=True)
class ScaleDecision:
    """What one measurement leads to."""

    backlog: int
    current: int
    recommended: int
    """The raw recommendation, before stabilization, steps and cooldown."""
    desired: int
    reason: str
    message: str

    @property
    def direction(self) -> Direction | None:
        if self.desired > self.current:
            return "up"
        if self.desired < self.current:
            return "down"
        return None


def recommend(backlog: int, spec: AutoscalingSpec) -> int:
    """`ceil(backlog / target)` within [minReplicas, maxReplicas]."""
    raw = math.ceil(max(0, backlog) / spec.target_backlog_per_occurrence)
    return max(spec.min_replicas, min(spec.max_replicas, raw))


def decide(*, now: float, current: int, backlog: int, spec: AutoscalingSpec,
           history: History, last_scale_at: float | None) -> ScaleDecision:
    """The size to run now; records this measurement's recommendation in `history`."""
    up = UP_DEFAULTS.filled(spec.scale_up)
    down = DOWN_DEFAULTS.filled(spec.scale_down)
    recommended = recommend(backlog, spec)
    history.record(now, recommended, max(up.window_seconds, down.window_seconds))
    target = spec.target_backlog_per_occurrence
    basis = f"backlog {backlog} at {target} per occurrence: {recommended} recommended"

    def made(desired: int, reason: str, note: str = "") -> ScaleDecision:
        message = f"{basis}; {note}" if note else basis
        return ScaleDecision(backlog, current, recommended, desired, reason, message)

    bounded = max(spec.min_replicas, min(spec.max_replicas, current))
    if bounded != current:  # outside the bounds (just enabled, or the bounds changed)
        reason = SCALED_UP if bounded > current else SCALED_DOWN
        return made(bounded, reason, f"{current} is outside [{spec.min_replicas}, "
                                     f"{spec.max_replicas}]")
    if recommended > current:
        return _scale_up(now, current, history, up, last_scale_at, made)
    if recommended < current:
        return _scale_down(now, current, history, down, last_scale_at, made)
    if recommended == spec.max_replicas and backlog > target * spec.max_replicas:
        return made(current, AT_MAXIMUM, f"held at maxReplicas {spec.max_replicas}")
    return made(current, WITHIN_TARGET)


def _scale_up(now: float, current: int, history: History, rules: Rules,
              last_scale_at: float | None, made: _Made) -> ScaleDecision:
    stable = min(history.within(now, rules.window_seconds))
    if stable <= current:
        return made(current, UP_STABILIZING,
                    f"lowest of the last {rules.window_seconds:g}s is {stable}")
    if _cooling(now, last_scale_at, rules):
        return made(current, COOLING_DOWN, f"the last scale was under "
                                           f"{rules.cooldown_seconds:g}s ago")
    desired = stable if rules.max_step is None else min(stable, current + rules.max_step)
    note = f"scaling {current} -> {desired}"
    if desired < stable:
        note += f" (at most {rules.max_step} per step)"
    return made(desired, SCALED_UP, note)


def _scale_down(now: float, current: int, history: History, rules: Rules,
                last_scale_at: float | None, made: _Made) -> ScaleDecision:
    window = history.within(now, rules.window_seconds)
    stable = max(window)
    if now - history.started_at < rules.window_seconds:
        stable = max(stable, current)  # not watched for a whole window yet: hold
    if stable >= current:
        return made(current, DOWN_STABILIZING,
                    f"highest of the last {rules.window_seconds:g}s is {stable}")
    if _cooling(now, last_scale_at, rules):
        return made(current, COOLING_DOWN, f"the last scale was under "
                                           f"{rules.cooldown_seconds:g}s ago")
    desired = stable if rules.max_step is None else max(stable, current - rules.max_step)
    note = f"scaling {current} -> {desired} (departing occurrences drain first)"
    return made(desired, SCALED_DOWN, note)


def _cooling(now: float, last_scale_at: float | None, rules: Rules) -> bool:
    return last_scale_at is not None and now - last_scale_at < rules.cooldown_seconds


class _Made(Protocol):  # `decide`'s local `made`, as the helpers see it
    def __call__(self, desired: int, reason: str, note: str = "") -> ScaleDecision: ...
