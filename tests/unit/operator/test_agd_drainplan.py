"""The scale-down drain protocol, step by step and in a simulated world."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from occurrence_operator.drain.planner import (
    ACK_MARGIN_SECONDS,
    DrainAction,
    DrainDecision,
    DrainSettings,
    Observations,
    departing_ordinals,
    draining_count,
    is_active,
    plan,
    record_transferred,
    survivor_ids,
)
from occurrence_operator.drain.rebalance import rebalance_intent
from occurrence_operator.model.spec import DrainSpec
from occurrence_operator.model.status import ScaleDownStatus
from occurrence_operator.model.timeutil import format_time

T0 = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
RELEASE = DrainSettings(timeout_seconds=60, in_flight="release")
WAIT = DrainSettings(timeout_seconds=60, in_flight="wait")


def _plan(
    current: int | None,
    desired: int,
    record: ScaleDownStatus | None = None,
    *,
    drain: DrainSettings = RELEASE,
    observed: Observations | None = None,
    now: datetime = T0,
) -> DrainDecision:
    return plan(
        "w",
        current=current,
        desired=desired,
        record=record,
        settings=drain,
        observed=observed or Observations(),
        now=now,
    )


def _record(phase: str, frm: int = 5, to: int = 2, **extra: object) -> ScaleDownStatus:
    return ScaleDownStatus.model_validate(
        {
            "phase": phase,
            "fromReplicas": frm,
            "toReplicas": to,
            "ordinals": list(departing_ordinals(frm, to)),
            "startedAt": format_time(T0),
            **extra,
        }
    )


def test_departing_and_survivors() -> None:
    assert departing_ordinals(5, 2) == (2, 3, 4)
    assert survivor_ids("w", 2) == ("w-0", "w-1")
    # Scale to zero: ordinal 0 keeps its work, the others park theirs on it.
    assert departing_ordinals(4, 0) == (1, 2, 3)
    assert survivor_ids("w", 0) == ("w-0",)
    assert departing_ordinals(1, 0) == ()


def test_steady_state_and_creation() -> None:
    assert _plan(3, 3).action is DrainAction.NOOP
    created = _plan(None, 3)
    assert (created.action, created.statefulset_replicas) == (DrainAction.SCALE, 3)


def test_scale_up_is_direct() -> None:
    decision = _plan(2, 4, drain=DrainSettings(rebalance_on_scale_up=True))
    assert decision.action is DrainAction.SCALE and decision.statefulset_replicas == 4
    # with rebalanceOnScaleUp the driver records the rebalance before it scales
    intent = rebalance_intent(DrainSettings(rebalance_on_scale_up=True), 2, 4, T0)
    assert intent is not None and intent.phase == "Pending"
    assert (intent.from_replicas, intent.to_replicas) == (2, 4)
    assert rebalance_intent(DrainSettings(), 2, 4, T0) is None
    assert rebalance_intent(DrainSettings(rebalance_on_scale_up=True), None, 4, T0) is None


def test_one_to_zero_needs_no_drain() -> None:
    decision = _plan(1, 0)
    assert (decision.action, decision.statefulset_replicas, decision.record) == (
        DrainAction.SCALE,
        0,
        None,
    )


def test_full_scale_down_release() -> None:
    start = _plan(5, 2)
    assert start.action is DrainAction.ADVANCE  # the intent is persisted before any fencing
    record = start.record
    assert record is not None and record.phase == "Fencing"
    assert (record.from_replicas, record.to_replicas, record.ordinals) == (5, 2, [2, 3, 4])
    assert draining_count(record) == 3
    assert is_active(record)  # departing pods stay until their work has moved

    fence = _plan(5, 2, record)
    assert (fence.action, fence.ordinals) == (DrainAction.FENCE, (2, 3, 4))
    assert fence.record is not None and fence.record.phase == "WaitingInFlight"
    assert fence.grace_seconds == RELEASE.release_grace_seconds

    # the fenced agents finish (or give back) their in-flight work and acknowledge
    waiting = _plan(5, 2, fence.record)
    assert waiting.action is DrainAction.WAIT and waiting.record == fence.record
    late = T0 + timedelta(seconds=RELEASE.grace_seconds + ACK_MARGIN_SECONDS)
    release = _plan(5, 2, fence.record, now=late)  # no acknowledgement: released anyway
    assert release.action is DrainAction.RELEASE_IN_FLIGHT
    assert "grace" in (release.record.message or "")
    assert release.record is not None and release.record.phase == "Transferring"

    transfer = _plan(5, 2, release.record, observed=Observations(departing_work=7))
    assert transfer.action is DrainAction.TRANSFER
    assert transfer.survivors == ("w-0", "w-1") and transfer.ordinals == (2, 3, 4)
    moved = record_transferred(transfer.record, 7)  # type: ignore[arg-type]
    assert moved.transferred == 7

    shrink = _plan(5, 2, moved, observed=Observations(departing_work=0))
    assert (shrink.action, shrink.statefulset_replicas) == (DrainAction.SHRINK, 2)
    assert shrink.record is not None and shrink.record.phase == "Shrinking"
    assert is_active(shrink.record)

    # The operator died after patching but before persisting: Transferring again is harmless.
    assert _plan(2, 2, moved, observed=Observations(departing_work=0)).action is DrainAction.SHRINK

    pods_left = _plan(2, 2, shrink.record, observed=Observations(departing_pods=1))
    assert pods_left.action is DrainAction.WAIT and pods_left.requeue_after

    gone = _plan(2, 2, shrink.record)
    assert gone.action is DrainAction.ADVANCE
    assert gone.record is not None and gone.record.phase == "Sweeping"

    sweep = _plan(2, 2, gone.record)
    assert (sweep.action, sweep.ordinals, sweep.survivors) == (
        DrainAction.SWEEP,
        (2, 3, 4),
        ("w-0", "w-1"),
    )
    assert sweep.record is not None and sweep.record.phase == "Done"
    assert sweep.record.transferred == 7
    assert draining_count(sweep.record) == 0
    assert _plan(2, 2, sweep.record).action is DrainAction.NOOP


def test_release_mode_moves_on_at_the_acknowledgement_or_when_holders_are_dead() -> None:
    waiting = _record("WaitingInFlight")
    acked = _plan(5, 2, waiting, observed=Observations(in_flight_quiet=True))
    assert acked.action is DrainAction.ADVANCE and acked.record.phase == "Transferring"
    dead = _plan(5, 2, waiting, observed=Observations(unresponsive=True))
    assert dead.action is DrainAction.RELEASE_IN_FLIGHT and "lease expired" in dead.record.message
    near = _plan(5, 2, waiting, now=T0 + timedelta(seconds=12))
    assert near.action is DrainAction.WAIT
    assert near.requeue_after == pytest.approx(RELEASE.grace_seconds + ACK_MARGIN_SECONDS - 12)


def test_the_fence_grace_follows_the_mode() -> None:
    assert RELEASE.grace_seconds == 10 and WAIT.grace_seconds == 60
    short = DrainSettings(timeout_seconds=3, in_flight="release", release_grace_seconds=10)
    assert short.grace_seconds == 3  # never longer than the drain timeout
    fence = _plan(5, 2, _record("Fencing"), drain=WAIT)
    assert fence.grace_seconds == 60


def test_fences_left_outside_a_drain_are_lifted_before_scaling_up() -> None:
    """A drain bypassed while the database was down left ordinals 2..4 fenced."""
    bypassed = _record("Done")
    lift = _plan(2, 5, bypassed, observed=Observations(stale_fences=(2, 3, 4)))
    assert (lift.action, lift.ordinals) == (DrainAction.UNFENCE, (2, 3, 4))
    assert _plan(2, 5, bypassed).action is DrainAction.SCALE


def test_wait_mode_waits_until_quiet() -> None:
    waiting = _record("WaitingInFlight")
    decision = _plan(5, 2, waiting, drain=WAIT, now=T0 + timedelta(seconds=10))
    assert decision.action is DrainAction.WAIT and decision.record == waiting
    assert 0 < (decision.requeue_after or 0) <= 5
    quiet = _plan(5, 2, waiting, drain=WAIT, observed=Observations(in_flight_quiet=True))
    assert quiet.action is DrainAction.ADVANCE
    assert quiet.record is not None and quiet.record.phase == "Transferring"
    dead = _plan(5, 2, waiting, drain=WAIT, observed=Observations(unresponsive=True))
    assert dead.action is DrainAction.RELEASE_IN_FLIGHT  # a dead agent finishes nothing


def test_wait_mode_releases_after_timeout() -> None:
    waiting = _record("WaitingInFlight")
    late = _plan(5, 2, waiting, drain=WAIT, now=T0 + timedelta(seconds=61))
    assert late.action is DrainAction.RELEASE_IN_FLIGHT
    assert late.record is not None and "timeout" in (late.record.message or "")
    near = _plan(5, 2, waiting, drain=WAIT, now=T0 + timedelta(seconds=58))
    assert near.action is DrainAction.WAIT and near.requeue_after == pytest.approx(2)


def test_scale_to_zero_parks_work_on_ordinal_zero() -> None:
    start = _plan(3, 0)
    assert start.record is not None and start.record.ordinals == [1, 2]
    transfer = _plan(3, 0, _record("Transferring", 3, 0), observed=Observations(departing_work=4))
    assert transfer.survivors == ("w-0",) and transfer.ordinals == (1, 2)
    shrink = _plan(3, 0, _record("Transferring", 3, 0), observed=Observations(departing_work=0))
    assert shrink.statefulset_replicas == 0


@pytest.mark.parametrize("phase", ["Fencing", "WaitingInFlight", "Transferring"])
def test_scale_up_during_drain_cancels(phase: str) -> None:
    decision = _plan(5, 6, _record(phase))
    assert (decision.action, decision.ordinals) == (DrainAction.UNFENCE, (2, 3, 4))
    assert decision.record is not None and decision.record.phase == "Cancelled"
    assert draining_count(decision.record) == 0
    assert not is_active(decision.record)
    follow = _plan(5, 6, decision.record)
    assert (follow.action, follow.statefulset_replicas) == (DrainAction.SCALE, 6)
    assert _plan(5, 5, decision.record).action is DrainAction.NOOP


def test_partial_scale_up_during_drain_narrows() -> None:
    decision = _plan(5, 4, _record("Transferring"))
    assert (decision.action, decision.ordinals) == (DrainAction.UNFENCE, (2, 3))
    assert decision.record is not None
    assert decision.record.phase == "Transferring" and decision.record.ordinals == [4]
    assert decision.record.to_replicas == 4


def test_further_scale_down_during_drain_widens() -> None:
    later = T0 + timedelta(seconds=30)
    decision = _plan(5, 1, _record("WaitingInFlight"), now=later)
    assert decision.action is DrainAction.ADVANCE
    assert decision.record is not None
    assert decision.record.phase == "Fencing" and decision.record.ordinals == [1, 2, 3, 4]
    assert decision.record.started_at == format_time(later)


def test_scale_to_zero_during_drain_to_one_keeps_ordinals() -> None:
    decision = _plan(3, 0, _record("Transferring", 3, 1))
    assert decision.action is DrainAction.ADVANCE
    assert decision.record is not None
    assert (decision.record.phase, decision.record.to_replicas) == ("Transferring", 0)


def test_drain_after_shrink_finishes_before_scale_up() -> None:
    shrinking = _record("Shrinking")
    decision = _plan(2, 6, shrinking)
    assert decision.action is DrainAction.ADVANCE and decision.record is not None
    assert decision.record.phase == "Sweeping"
    done = _plan(2, 6, _plan(2, 6, decision.record).record)
    assert (done.action, done.statefulset_replicas) == (DrainAction.SCALE, 6)


def test_replan_is_deterministic() -> None:
    record = _record("WaitingInFlight")
    assert _plan(5, 2, record, drain=WAIT) == _plan(5, 2, record, drain=WAIT)


def test_settings_from_spec_with_recovery() -> None:
    from occurrence_operator.model.spec import RecoverySpec

    settings = DrainSettings.from_spec(DrainSpec.model_validate({"releaseGraceSeconds": 4}),
                                       RecoverySpec.model_validate({"inFlight": "fail"}))
    assert (settings.release_grace_seconds, settings.recovery) == (4, "fail")


def test_settings_from_spec() -> None:
    drain = DrainSpec.model_validate({"timeoutSeconds": 9, "inFlight": "wait"})
    assert DrainSettings.from_spec(drain) == DrainSettings(9, "wait", False)


def test_negative_desired_rejected() -> None:
    with pytest.raises(ValueError):
        _plan(1, -1)


# --- simulation ---------------------------------------------------------------------------


@dataclass
class World:
    """StatefulSet, pods, registry and tasks, as the handler's actions change them."""

    sts: int
    pods: set[int]
    tasks: dict[str, int]
    in_flight: dict[int, int]
    fenced: set[int] = field(default_factory=set)
    retired: set[int] = field(default_factory=set)
    record: ScaleDownStatus | None = None
    now: datetime = T0
    created: int = 0

    def departing(self) -> tuple[int, ...]:
        return tuple(self.record.ordinals) if draining_count(self.record) else ()

    def observe(self, desired: int) -> Observations:
        departing = self.departing()
        if not departing:  # outside a drain: what the registry still has fenced
            return Observations(stale_fences=tuple(sorted(
                k for k in self.fenced if k < max(desired, 1))))
        return Observations(
            in_flight_quiet=all(self.in_flight.get(k, 0) == 0 for k in departing),
            departing_work=sum(1 for owner in self.tasks.values() if owner in departing),
            departing_pods=sum(1 for k in departing if k in self.pods),
        )

    def tick(self, seconds: float) -> None:
        """Time passes: pods converge on the StatefulSet, agents work."""
        self.now += timedelta(seconds=seconds)
        for k in range(self.sts):
            if k not in self.pods:
                self.pods.add(k)
                self.retired.discard(k)  # a returning id registers again (a fence stays)
        self.pods = {k for k in self.pods if k < self.sts}
        for k in sorted(self.pods):
            if k in self.fenced:
                self.in_flight[k] = max(0, self.in_flight.get(k, 0) - 1)
            else:  # only unfenced occurrences create and claim work
                self.tasks[f"t{self.created}"] = k
                self.created += 1
                self.in_flight[k] = 1

    def move(self, ordinals: tuple[int, ...], survivors: tuple[str, ...]) -> int:
        targets = [int(s.rsplit("-", 1)[1]) for s in survivors]
        moved = 0
        for task, owner in sorted(self.tasks.items()):
            if owner in ordinals:
                self.tasks[task] = targets[moved % len(targets)]
                moved += 1
        return moved

    def apply(self, decision: DrainDecision) -> None:
        record = decision.record
        match decision.action:
            case DrainAction.SCALE | DrainAction.SHRINK:
                assert decision.statefulset_replicas is not None
                if decision.action is DrainAction.SHRINK:
                    # Never remove a pod that still owns work.
                    gone = {k for k in range(decision.statefulset_replicas, self.sts) if k}
                    assert not gone & set(self.tasks.values())
                self.sts = decision.statefulset_replicas
            case DrainAction.FENCE:
                self.fenced |= set(decision.ordinals)
            case DrainAction.UNFENCE:
                self.fenced -= set(decision.ordinals)
            case DrainAction.RELEASE_IN_FLIGHT:
                for k in decision.ordinals:
                    self.in_flight[k] = 0
            case DrainAction.TRANSFER:
                assert record is not None
                record = record_transferred(
                    record, self.move(decision.ordinals, decision.survivors)
                )
            case DrainAction.SWEEP:
                assert record is not None
                record = record_transferred(
                    record, self.move(decision.ordinals, decision.survivors)
                )
                self.retired |= set(decision.ordinals)
                self.fenced -= set(decision.ordinals)
            case DrainAction.WAIT:
                self.tick(decision.requeue_after or 1)
        self.record = record

    def step(self, desired: int, drain: DrainSettings) -> DrainDecision:
        decision = plan(
            "w",
            current=self.sts,
            desired=desired,
            record=self.record,
            settings=drain,
            observed=self.observe(desired),
            now=self.now,
        )
        self.apply(decision)
        return decision


@settings(max_examples=150, deadline=None)
@given(
    start=st.integers(0, 6),
    changes=st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), max_size=5),
    mode=st.sampled_from(["release", "wait"]),
)
def test_simulated_scaling_never_strands_work(
    start: int, changes: list[tuple[int, int]], mode: str
) -> None:
    drain = DrainSettings(timeout_seconds=20, in_flight=mode)  # type: ignore[arg-type]
    world = World(sts=start, pods=set(range(start)), tasks={}, in_flight={})
    world.tick(1)
    for desired, steps in changes:  # the user changes replicas mid-way through drains
        for _ in range(steps):
            world.step(desired, drain)
            world.tick(0.5)
    final = changes[-1][0] if changes else start
    for _ in range(500):
        if world.step(final, drain).action is DrainAction.NOOP:
            break
        world.tick(0.5)
    else:
        pytest.fail(f"did not settle: {world.record}")
    world.tick(1)
    assert world.sts == final
    assert draining_count(world.record) == 0
    live = set(range(max(final, 1)))
    assert set(world.tasks.values()) <= live, "work owned by a removed occurrence"
    assert not world.fenced & world.pods, "a running occurrence was left fenced"


# -- fencing by hand (spec.fencedOccurrences) -------------------------------------------------

FENCE_1 = DrainSettings(timeout_seconds=60, in_flight="release", fenced=frozenset({1}))


def test_a_fence_by_hand_is_fenced_then_emptied_onto_the_others() -> None:
    due = _plan(3, 3, drain=FENCE_1, observed=Observations(fences_due=(1,)))
    assert (due.action, due.ordinals, due.record) == (DrainAction.FENCE, (1,), None)
    assert due.grace_seconds == FENCE_1.grace_seconds
    busy = _plan(3, 3, drain=FENCE_1, observed=Observations(fenced_busy=True))
    assert busy.action is DrainAction.WAIT and busy.requeue_after is not None
    move = _plan(3, 3, drain=FENCE_1, observed=Observations(fenced_to_evacuate=(1,)))
    assert (move.action, move.ordinals, move.survivors) == (
        DrainAction.EVACUATE, (1,), ("w-0", "w-2"))
    assert _plan(3, 3, drain=FENCE_1).action is DrainAction.NOOP


def test_a_fenced_occurrence_never_receives_work_unless_every_one_is_fenced() -> None:
    assert survivor_ids("w", 3, frozenset({1})) == ("w-0", "w-2")
    assert survivor_ids("w", 0, frozenset({0})) == ("w-0",)  # the work must go somewhere
    everyone = DrainSettings(fenced=frozenset({0, 1}))
    stuck = _plan(2, 2, drain=everyone, observed=Observations(fenced_to_evacuate=(0, 1)))
    assert stuck.action is DrainAction.NOOP  # nowhere to go: it stays where it is
    # a scale-down drain moves the departing work past the fenced ones
    drain = _plan(5, 3, _record("Transferring", 5, 3), drain=FENCE_1,
                  observed=Observations(departing_work=4))
    assert drain.action is DrainAction.TRANSFER and drain.survivors == ("w-0", "w-2")


def test_sizing_goes_first_and_a_drain_wins_over_a_fence() -> None:
    observed = Observations(fences_due=(1,))
    assert _plan(None, 3, drain=FENCE_1, observed=observed).action is DrainAction.SCALE
    assert _plan(2, 3, drain=FENCE_1, observed=observed).action is DrainAction.SCALE
    assert _plan(3, 2, drain=FENCE_1, observed=observed).action is DrainAction.ADVANCE
