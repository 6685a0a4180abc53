"""The canary rollout planner (rollout/planner.py), pure: every replica count 0..12 and
several wave shapes, driven against a simulated StatefulSet controller."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from occurrence_operator.model.spec import GateSpec, RolloutSpec, WaveSpec
from occurrence_operator.model.status import RolloutStatus
from occurrence_operator.rollout.gates import evaluate
from occurrence_operator.rollout.planner import Observed, held_back, is_active, plan, wave_sizes
from occurrence_store.outcomes import WorkOutcome

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

WAVE_SHAPES = {
    "default": None,
    "two": [{"name": "canary", "occurrences": 2, "bakeSeconds": 60},
            {"name": "all", "percent": 100, "bakeSeconds": 0}],
    "percents": [{"name": "a", "percent": 10, "bakeSeconds": 30},
                 {"name": "b", "percent": 50, "bakeSeconds": 30},
                 {"name": "c", "percent": 100, "bakeSeconds": 30}],
    "mixed": [{"name": "one", "occurrences": 1, "bakeSeconds": 10},
              {"name": "three", "occurrences": 3, "bakeSeconds": 10},
              {"name": "half", "percent": 50, "bakeSeconds": 10},
              {"name": "all", "percent": 100, "bakeSeconds": 10}],
    "single": [{"name": "all", "percent": 100, "bakeSeconds": 5}],
}


def canary(waves: list[dict] | None = None, **extra: object) -> RolloutSpec:
    body: dict[str, object] = {"strategy": "Canary", **extra}
    if waves is not None:
        body["waves"] = waves
    return RolloutSpec.model_validate(body)


@dataclass
class FakeStatefulSet:
    """Pods at or above the partition run the update revision; all ready unless told."""

    replicas: int
    template: str = "old"
    applied_template: str = "old"
    partition: int = 0
    current_revision: str = "rev-old"
    update_revision: str = "rev-old"
    unready: int = 0

    def apply(self, template: str, partition: int) -> None:
        if template != self.applied_template:
            self.applied_template = template
            self.update_revision = f"rev-{template}"
        self.partition = min(partition, self.replicas)
        if self.partition == 0:
            self.current_revision = self.update_revision

    def seen(self, template: str) -> Observed:
        return Observed(template=template, template_changed=template != self.applied_template,
                        replicas=self.replicas, ready=self.replicas - self.unready,
                        updated=self.replicas - self.partition,
                        update_revision=self.update_revision,
                        current_revision=self.current_revision)


def run(rollout: RolloutSpec, sts: FakeStatefulSet, template: str,
        record: RolloutStatus | None, now: datetime, passes: int = 200
        ) -> tuple[RolloutStatus | None, list[tuple[int, str | None]], datetime, list[str]]:
    """Passes until the rollout is no longer active; (record, [(partition, wave)], now,
    event reasons)."""
    trail: list[tuple[int, str | None]] = []
    reasons: list[str] = []
    for _ in range(passes):
        decision = plan(rollout, record, sts.seen(template), now)
        # an operator restarted right after persisting the record (the partition not yet
        # applied) goes on from it: it never raises the partition or starts over
        again = plan(rollout, decision.record, sts.seen(template), now)
        assert again.partition <= decision.partition
        assert "RolloutStarted" not in {e[1] for e in again.events}
        record = decision.record
        reasons += [e[1] for e in decision.events]
        sts.apply(template, decision.partition)
        trail.append((decision.partition, record.wave if record else None))
        if not is_active(record):
            break
        now += timedelta(seconds=decision.requeue_after or 1)
    return record, trail, now, reasons


def started(rollout: RolloutSpec, sts: FakeStatefulSet, template: str) -> RolloutStatus:
    """The record of a rollout of `template` just started over the steady "old" one."""
    steady = plan(rollout, None, sts.seen("old"), T0).record
    record = plan(rollout, steady, sts.seen(template), T0).record
    assert record is not None and record.phase in ("Progressing", "Paused")
    return record


def dedupe(values: list[int]) -> list[int]:
    """Consecutive repeats collapsed."""
    return [v for i, v in enumerate(values) if i == 0 or values[i - 1] != v]


@pytest.mark.parametrize("shape", sorted(WAVE_SHAPES))
@pytest.mark.parametrize("replicas", range(13))
def test_a_template_change_rolls_out_wave_by_wave(shape: str, replicas: int) -> None:
    rollout = canary(WAVE_SHAPES[shape])
    waves = rollout.wave_list()
    sts = FakeStatefulSet(replicas)
    steady = plan(rollout, None, sts.seen("old"), T0)
    assert steady.partition == 0 and steady.record is not None
    assert steady.record.phase == "Complete" and steady.record.stable_template == "old"

    record, trail, _, reasons = run(rollout, sts, "new", steady.record, T0)
    assert record is not None and record.phase == "Complete"
    assert record.stable_template == "new" and sts.partition == 0
    assert sts.current_revision == "rev-new"
    partitions = [p for p, _ in trail]
    # the partition only ever goes down: pods already updated are never put back
    assert partitions == sorted(partitions, reverse=True)
    sizes = wave_sizes(waves, replicas)
    if replicas == 0:
        assert reasons == ["RolloutStarted", "RolloutComplete"]
        return
    assert record.stable_revision == "rev-new"
    # every wave was held at its size, in order, and nothing else was
    held = [replicas - p for p, _ in trail]
    assert dedupe(held) == dedupe(sizes)
    assert [r for r in reasons if r in ("WavePassed",)] == ["WavePassed"] * len(waves)
    assert reasons[0] == "RolloutStarted" and reasons[-1] == "RolloutComplete"


@given(replicas=st.integers(0, 1000), shape=st.sampled_from(sorted(WAVE_SHAPES)))
@settings(max_examples=300, deadline=None)
def test_wave_sizes_grow_to_everyone(replicas: int, shape: str) -> None:
    sizes = wave_sizes(canary(WAVE_SHAPES[shape]).wave_list(), replicas)
    assert sizes == sorted(sizes) and sizes[-1] == replicas
    assert all(0 <= s <= replicas for s in sizes)
    if replicas:
        assert sizes[0] >= 1


def test_default_waves_are_the_references() -> None:
    waves = canary().wave_list()
    assert [(w.name, w.occurrences, w.percent, w.bake_seconds) for w in waves] == [
        ("explorer", 1, None, 300), ("early", None, 25, 300), ("general", None, 100, 300)]
    assert wave_sizes(waves, 10) == [1, 3, 10]
    assert wave_sizes(waves, 1) == [1, 1, 1]


def test_rolling_update_holds_nothing_back_and_drops_the_record() -> None:
    record = RolloutStatus.from_fields(phase="Progressing", wave="explorer", partition=3,
                                       canary_template="new", stable_template="old")
    decision = plan(RolloutSpec(), record, FakeStatefulSet(4).seen("new"), T0)
    assert decision.partition == 0 and decision.record is None


def test_a_wave_bakes_before_the_next_starts() -> None:
    rollout = canary()
    sts = FakeStatefulSet(8)
    steady = plan(rollout, None, sts.seen("old"), T0).record
    started = plan(rollout, steady, sts.seen("new"), T0)
    assert started.partition == 7 and started.record is not None
    assert started.record.wave == "explorer" and started.record.stable_revision == "rev-old"
    sts.apply("new", started.partition)
    rolled = plan(rollout, started.record, sts.seen("new"), T0)
    assert rolled.record is not None and rolled.record.bake_started_at is not None
    assert rolled.requeue_after == 300 and rolled.partition == 7
    assert rolled.record.canary_revision == "rev-new"
    early = plan(rollout, rolled.record, sts.seen("new"), T0 + timedelta(seconds=299))
    assert early.partition == 7 and early.requeue_after == pytest.approx(1)
    passed = plan(rollout, early.record, sts.seen("new"), T0 + timedelta(seconds=300))
    assert passed.record is not None and passed.record.wave == "early"
    assert passed.partition == 8 - 2 and [e[1] for e in passed.events] == [
        "WavePassed", "WaveStarted"]


def test_an_unready_pod_starts_the_bake_over() -> None:
    rollout = canary()
    sts = FakeStatefulSet(4)
    record = started(rollout, sts, "new")
    sts.apply("new", 3)
    baking = plan(rollout, record, sts.seen("new"), T0).record
    assert baking is not None and baking.bake_started_at is not None
    sts.unready = 1
    broken = plan(rollout, baking, sts.seen("new"), T0 + timedelta(seconds=200))
    assert broken.record is not None and broken.record.bake_started_at is None
    assert broken.partition == 3 and broken.requeue_after is None
    sts.unready = 0
    again = plan(rollout, broken.record, sts.seen("new"), T0 + timedelta(seconds=400))
    assert again.record is not None and again.record.wave == "explorer"
    assert again.requeue_after == 300


def test_pause_holds_the_wave_and_resume_goes_on() -> None:
    sts = FakeStatefulSet(4)
    rollout = canary()
    record = started(rollout, sts, "new")
    sts.apply("new", 3)
    paused = plan(canary(paused=True), record, sts.seen("new"), T0 + timedelta(hours=2))
    assert paused.record is not None and paused.record.phase == "Paused"
    assert paused.partition == 3 and [e[1] for e in paused.events] == ["RolloutPaused"]
    still = plan(canary(paused=True), paused.record, sts.seen("new"), T0 + timedelta(hours=3))
    assert still.record == paused.record and still.events == ()
    resumed = plan(rollout, still.record, sts.seen("new"), T0 + timedelta(hours=3))
    assert resumed.record is not None and resumed.record.phase == "Progressing"
    assert resumed.record.wave == "explorer" and "RolloutResumed" in [
        e[1] for e in resumed.events]


def test_a_newer_template_restarts_from_the_first_wave() -> None:
    rollout = canary(WAVE_SHAPES["percents"])
    sts = FakeStatefulSet(10)
    record, _, now, _ = run(rollout, sts, "old", None, T0)
    decision = plan(rollout, record, sts.seen("v2"), now)
    sts.apply("v2", decision.partition)
    for _ in range(2):  # the first wave bakes and passes: into the second
        decision = plan(rollout, decision.record, sts.seen("v2"), now)
        sts.apply("v2", decision.partition)
        now += timedelta(seconds=decision.requeue_after or 1)
    assert decision.record is not None and decision.record.wave == "b"
    restarted = plan(rollout, decision.record, sts.seen("v3"), now)
    assert restarted.record is not None and restarted.record.wave == "a"
    assert restarted.record.canary_template == "v3" and restarted.partition == 9
    assert restarted.record.stable_template == "old"
    assert [e[1] for e in restarted.events] == ["RolloutRestarted", "RolloutStarted"]
    # the previous template's pods below the new partition go back to the stable revision
    assert restarted.delete_canaries and not decision.delete_canaries


def test_the_stable_template_back_reverts_the_rollout() -> None:
    rollout = canary()
    sts = FakeStatefulSet(5)
    record = started(rollout, sts, "bad")
    sts.apply("bad", 4)
    reverted = plan(rollout, record, sts.seen("old"), T0 + timedelta(seconds=30))
    assert reverted.partition == 0 and reverted.record is not None
    assert reverted.record.phase == "Reverted" and reverted.record.stable_template == "old"
    assert [e[1] for e in reverted.events] == ["RolloutReverted"]
    settled = plan(rollout, reverted.record, sts.seen("old"), T0 + timedelta(seconds=60))
    assert settled.partition == 0 and settled.record == reverted.record


def test_a_scale_down_mid_wave_keeps_the_waves_share() -> None:
    rollout = canary([{"name": "half", "percent": 50, "bakeSeconds": 60},
                      {"name": "all", "percent": 100, "bakeSeconds": 60}])
    sts = FakeStatefulSet(8)
    record = started(rollout, sts, "new")
    assert record is not None and record.partition == 4
    shrunk = replace(sts, replicas=4)
    decision = plan(rollout, record, shrunk.seen("new"), T0)
    assert decision.partition == 2 and decision.record is not None
    assert decision.record.canary_occurrences == 2


def test_a_scale_up_mid_wave_sends_a_canary_below_the_raised_partition_back() -> None:
    rollout = canary([{"name": "one", "occurrences": 1, "bakeSeconds": 600},
                      {"name": "all", "percent": 100, "bakeSeconds": 60}])
    sts = FakeStatefulSet(4)
    record = started(rollout, sts, "new")
    sts.apply("new", record.partition)
    steady = plan(rollout, record, sts.seen("new"), T0)
    assert steady.partition == 3 and not steady.delete_canaries
    # 4 -> 6: the explorer moves to ordinal 5; ordinal 3 still runs the new revision
    grown = replace(sts, replicas=6).seen("new")
    both = replace(grown, updated=2)  # ordinals 3 and 5
    decision = plan(rollout, record, both, T0)
    assert decision.partition == 5 and decision.delete_canaries
    assert decision.record is not None and decision.record.canary_occurrences == 1
    only_new = replace(grown, updated=1)  # ordinal 5 alone
    assert not plan(rollout, record, only_new, T0).delete_canaries


@pytest.mark.parametrize(("waves", "message"), [
    ([{"name": "a", "occurrences": 2}, {"name": "b", "occurrences": 1},
      {"name": "c", "percent": 100}], "must grow"),
    ([{"name": "a", "percent": 50}, {"name": "b", "percent": 50},
      {"name": "c", "percent": 100}], "must grow"),
    ([{"name": "a", "percent": 50}], "percent: 100"),
    ([{"name": "a", "occurrences": 1}], "percent: 100"),
    ([{"name": "a", "occurrences": 1, "percent": 10}, {"name": "b", "percent": 100}],
     "exactly one"),
    ([{"name": "a"}, {"name": "b", "percent": 100}], "exactly one"),
    ([{"name": "a", "percent": 101}], "less than or equal to 100"),
    ([{"name": "a", "percent": 100, "bakeSeconds": -1}], "greater than or equal to 0"),
    ([{"name": "x", "percent": 10}, {"name": "x", "percent": 100}], "unique"),
    ([], "at least 1 item"),
])
def test_bad_waves_are_refused(waves: list[dict], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        canary(waves)


def test_wave_is_exactly_count_or_percent() -> None:
    assert WaveSpec.model_validate({"name": "w", "percent": 30}).percent == 30
    with pytest.raises(ValidationError):
        WaveSpec.model_validate({"name": "Not-A-Label", "percent": 30})


# -- gates, rollback, inconclusive -------------------------------------------------------

GATED = [{"name": "explorer", "occurrences": 1, "bakeSeconds": 60, "maxBakeSeconds": 120,
          "gates": [{"metric": "taskFailureRatio", "maxIncreaseOverStable": 0.1,
                     "minSamples": 10}]},
         {"name": "general", "percent": 100, "bakeSeconds": 60}]


def outcome(occurrences: int, completed: int, failed: int, seconds: float = 60) -> WorkOutcome:
    return WorkOutcome(occurrences, seconds, completed, failed, completed, failed)


def baking(rollout: RolloutSpec, sts: FakeStatefulSet) -> RolloutStatus:
    record = started(rollout, sts, "new")
    sts.apply("new", record.partition)
    record = plan(rollout, record, sts.seen("new"), T0).record
    assert record is not None and record.bake_started_at is not None
    return record


def test_a_failing_gate_rolls_back_after_failure_limit_evaluations() -> None:
    rollout = canary(GATED, analysisIntervalSeconds=10)
    sts = FakeStatefulSet(4)
    record = baking(rollout, sts)
    bad = replace(sts.seen("new"), canary=outcome(1, 5, 10), stable=outcome(3, 45, 0))
    first = plan(rollout, record, bad, T0 + timedelta(seconds=10))
    assert first.record is not None and first.record.phase == "Progressing"
    (gate,) = first.record.gates or []
    assert (gate.verdict, gate.failures, gate.canary, gate.stable) == ("Fail", 1, 0.666667, 0.0)
    assert gate.threshold == "stable + 0.1" and gate.samples == 15
    soon = plan(rollout, first.record, bad, T0 + timedelta(seconds=15))  # within the interval
    assert soon.record == first.record
    second = plan(rollout, soon.record, bad, T0 + timedelta(seconds=20))
    assert second.record is not None and second.record.phase == "RolledBack"
    assert second.partition == 4 and second.delete_canaries
    (reason,) = [e for e in second.events if e[0] == "Warning"]
    assert reason[1] == "RolloutRolledBack" and "taskFailureRatio 0.666667" in reason[2]
    # held there while the failed template is the spec's; nothing else happens
    held = plan(rollout, second.record, sts.seen("new"), T0 + timedelta(hours=1))
    assert held.partition == 4 and held.delete_canaries and held.events == ()
    assert held_back(held.record) == 4
    # the stable template back in the spec: nothing held back, the gates kept as the why
    back = plan(rollout, held.record, sts.seen("old"), T0 + timedelta(hours=1))
    assert back.partition == 0 and not back.delete_canaries and back.record is not None
    assert back.record.phase == "Reverted" and held_back(back.record) == 0
    assert back.record.gates == held.record.gates
    # a newer template starts a new rollout over the stable one
    fixed = plan(rollout, held.record, sts.seen("fixed"), T0 + timedelta(hours=1))
    assert fixed.record is not None and fixed.record.phase == "Progressing"
    assert fixed.record.canary_template == "fixed" and fixed.record.stable_template == "old"


def test_a_gate_that_recovers_resets_its_failures_and_the_wave_passes() -> None:
    rollout = canary(GATED, analysisIntervalSeconds=10)
    sts = FakeStatefulSet(4)
    record = baking(rollout, sts)
    bad = replace(sts.seen("new"), canary=outcome(1, 5, 10), stable=outcome(3, 45, 0))
    good = replace(sts.seen("new"), canary=outcome(1, 30, 1), stable=outcome(3, 90, 2))
    record = plan(rollout, record, bad, T0 + timedelta(seconds=10)).record
    record = plan(rollout, record, good, T0 + timedelta(seconds=20)).record
    assert record is not None and [g.failures for g in record.gates or []] == [0]
    passed = plan(rollout, record, good, T0 + timedelta(seconds=60))
    assert passed.record is not None and passed.record.wave == "general"
    assert passed.record.gates is None  # the next wave is judged on its own


def test_too_few_samples_hold_the_rollout_as_inconclusive() -> None:
    rollout = canary(GATED, analysisIntervalSeconds=10)
    sts = FakeStatefulSet(4)
    record = baking(rollout, sts)
    quiet = replace(sts.seen("new"), canary=outcome(1, 3, 0), stable=outcome(3, 9, 0))
    at_bake_end = plan(rollout, record, quiet, T0 + timedelta(seconds=60))
    assert at_bake_end.record is not None and at_bake_end.record.phase == "Progressing"
    assert at_bake_end.requeue_after == 10  # keeps baking for evidence
    assert [g.verdict for g in at_bake_end.record.gates or []] == ["Inconclusive"]
    limit = plan(rollout, at_bake_end.record, quiet, T0 + timedelta(seconds=120))
    assert limit.record is not None and limit.record.phase == "Inconclusive"
    assert limit.partition == 3 and [e[1] for e in limit.events] == ["RolloutInconclusive"]
    later = plan(rollout, limit.record, replace(quiet, canary=outcome(1, 100, 0)),
                 T0 + timedelta(hours=1))
    assert later.record == limit.record and later.partition == 3  # a person decides


def test_unmeasured_gates_never_pass_a_wave() -> None:
    rollout = canary(GATED)
    sts = FakeStatefulSet(4)
    record = baking(rollout, sts)
    end = plan(rollout, record, sts.seen("new"), T0 + timedelta(seconds=60))
    assert end.record is not None and end.record.wave == "explorer"
    assert end.record.phase == "Progressing"
    limit = plan(rollout, end.record, sts.seen("new"), T0 + timedelta(seconds=120))
    assert limit.record is not None and limit.record.phase == "Inconclusive"


@pytest.mark.parametrize(("gate", "canary_value", "stable_value", "verdict"), [
    ({"metric": "taskFailureRatio", "max": 0.1}, (9, 1), None, "Pass"),
    ({"metric": "taskFailureRatio", "max": 0.1}, (8, 2), None, "Fail"),
    ({"metric": "taskFailureRatio", "maxIncreaseOverStable": 0.05}, (9, 1), None, "Skipped"),
    ({"metric": "taskFailureRatio", "maxIncreaseOverStable": 0.05}, (9, 1), (19, 1), "Pass"),
    ({"metric": "taskFailureRatio", "maxIncreaseOverStable": 0.05}, (8, 2), (19, 1), "Fail"),
    ({"metric": "completionsPerOccurrencePerMinute", "min": 5}, (6, 0), None, "Pass"),
    ({"metric": "completionsPerOccurrencePerMinute", "min": 5}, (4, 0), None, "Fail"),
    ({"metric": "thoughtErrorRatio", "max": 0.5, "minSamples": 11}, (9, 1), None,
     "Inconclusive"),
])
def test_gate_verdicts(gate: dict, canary_value: tuple[int, int],
                       stable_value: tuple[int, int] | None, verdict: str) -> None:
    spec = GateSpec.model_validate({"minSamples": 1, **gate})
    stable = outcome(2, *stable_value) if stable_value else None
    result = evaluate(spec, outcome(1, *canary_value), stable, None, T0)
    assert result.verdict == verdict, result


def test_a_gate_names_a_threshold() -> None:
    with pytest.raises(ValidationError, match="max, min or maxIncreaseOverStable"):
        GateSpec.model_validate({"metric": "taskFailureRatio"})


# -- one-shot commands (occurrence.dev/rollout) -------------------------------------------


def test_promote_passes_the_wave_now_even_inconclusive() -> None:
    rollout = canary(GATED, analysisIntervalSeconds=10)
    sts = FakeStatefulSet(4)
    record = baking(rollout, sts)
    promoted = plan(rollout, record, replace(sts.seen("new"), command="promote"),
                    T0 + timedelta(seconds=5))
    assert promoted.record is not None and promoted.record.wave == "general"
    assert promoted.partition == 0 and [e[1] for e in promoted.events] == [
        "WavePassed", "WaveStarted"]
    inconclusive = _with_phase(record, "Inconclusive")
    done = plan(rollout, inconclusive, replace(sts.seen("new"), command="promote"), T0)
    assert done.record is not None and done.record.wave == "general"


def test_abort_rolls_back_now_and_retry_starts_the_same_template_over() -> None:
    rollout = canary(GATED)
    sts = FakeStatefulSet(4)
    record = baking(rollout, sts)
    aborted = plan(rollout, record, replace(sts.seen("new"), command="abort"), T0)
    assert aborted.record is not None and aborted.record.phase == "RolledBack"
    assert aborted.partition == 4 and aborted.delete_canaries
    assert [e[1] for e in aborted.events] == ["RolloutAborted", "RolloutRolledBack"]
    retried = plan(rollout, aborted.record, replace(sts.seen("new"), command="retry"), T0)
    assert retried.record is not None and retried.record.phase == "Progressing"
    assert retried.record.wave == "explorer" and retried.partition == 3
    assert retried.record.stable_template == "old"
    assert [e[1] for e in retried.events] == ["RolloutRetried", "RolloutStarted"]


@pytest.mark.parametrize("command", ["promote", "abort", "retry"])
def test_a_command_that_does_not_apply_changes_nothing_and_says_so(command: str) -> None:
    rollout = canary()
    sts = FakeStatefulSet(3)
    steady = plan(rollout, None, sts.seen("old"), T0)
    ignored = plan(rollout, steady.record, replace(sts.seen("old"), command=command), T0)
    assert (ignored.partition, ignored.record) == (steady.partition, steady.record)
    assert [e[1] for e in ignored.events] == ["RolloutCommandIgnored"]


def _with_phase(record: RolloutStatus, phase: str) -> RolloutStatus:
    return record.model_copy(update={"phase": phase})


def test_a_command_to_a_rolling_update_object_says_it_did_nothing() -> None:
    seen = replace(FakeStatefulSet(4).seen("old"), command="promote")
    decision = plan(RolloutSpec(), None, seen, T0)
    assert decision.partition == 0 and decision.record is None
    assert [(e[0], e[1]) for e in decision.events] == [("Warning", "RolloutCommandIgnored")]
    assert "RollingUpdate" in decision.events[0][2]


@pytest.mark.parametrize("retry", [True, False])
def test_a_rollback_marks_the_failed_work_of_the_canary_revision_to_go_back(retry: bool) -> None:
    rollout = canary(GATED, retryFailedOnRollback=retry)
    sts = FakeStatefulSet(4)
    record = baking(rollout, sts)
    assert record.canary_revision == "rev-new" and record.started_at is not None
    aborted = plan(rollout, record, replace(sts.seen("new"), command="abort"), T0)
    assert aborted.record is not None and aborted.record.phase == "RolledBack"
    work = aborted.record.failed_work
    if not retry:
        assert work is None
        return
    assert work is not None and (work.revision, work.since) == ("rev-new", record.started_at)
    assert (work.requeued, work.complete) == (0, False)
    # held, reverted, or retried: the unfinished giving back stays in the record
    held = plan(rollout, aborted.record, sts.seen("new"), T0 + timedelta(minutes=1))
    assert held.record is not None and held.record.failed_work == work
    reverted = plan(rollout, aborted.record, sts.seen("old"), T0 + timedelta(minutes=1))
    assert reverted.record is not None and reverted.record.failed_work == work
    retried = plan(rollout, aborted.record, replace(sts.seen("new"), command="retry"), T0)
    assert retried.record is not None and retried.record.failed_work == work
    # once complete, a new rollout starts without it
    done = aborted.record.model_copy(update={"failed_work": work.model_copy(
        update={"complete": True, "requeued": 7})})
    fresh = plan(rollout, done, sts.seen("fixed"), T0 + timedelta(minutes=2))
    assert fresh.record is not None and fresh.record.failed_work is None
