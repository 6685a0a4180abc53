"""The drain driver end to end: a real (SQLite) store, an in-memory Kubernetes side.

`FakePort` stands in for `drain.cluster.KubeDrainPort` (the StatefulSet size, the persisted
`.status.scaleDown` / `.status.rebalance`, the pods, the Events); the database side is the
real `occurrence_store`, so fencing, transfers and retirement are the real statements.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest

from occurrence_operator.drain import bypass, driver, planner
from occurrence_operator.drain.driver import DrainPort
from occurrence_operator.drain.planner import DrainSettings
from occurrence_operator.model.status import RebalanceStatus, ScaleDownStatus
from occurrence_operator.model.timeutil import format_time, parse_time
from occurrence_operator.render.statefulset import StatefulSetSize
from occurrence_store import OccurrenceState, Store, TaskStatus, ThoughtStatus

NAME = "w"
AGENT = "ns/w"
RELEASE = DrainSettings(timeout_seconds=60, in_flight="release", release_grace_seconds=10)


class Crash(Exception):
    """The operator dies right after this write."""


@dataclass
class FakePort:
    """The Kubernetes side of one operator, in memory."""

    replicas: int | None
    pods: set[int] = field(default_factory=set)
    persisted: ScaleDownStatus | None = None
    rebalance_record: RebalanceStatus | None = None
    history: list[str] = field(default_factory=list)
    """Phases of the records persisted, in order."""
    events: list[tuple[str, str, str]] = field(default_factory=list)
    moved: int = 0
    finished: int = 0
    pods_follow_scale: bool = True
    """Pods appear and terminate at once when the StatefulSet is scaled."""
    crash_after: str | None = None
    """Raise `Crash` right after persisting a record in this phase."""

    async def scale(self, replicas: int) -> None:
        self.replicas = replicas
        if self.pods_follow_scale:
            self.pods = set(range(replicas))
        else:
            self.pods |= set(range(replicas))

    async def persist(self, record: ScaleDownStatus | None) -> None:
        self.persisted = record
        if record is not None:
            self.history.append(record.phase)
            if record.phase == self.crash_after:
                raise Crash(record.phase)

    async def persist_rebalance(self, record: RebalanceStatus) -> None:
        self.rebalance_record = record

    async def reload(self) -> ScaleDownStatus | None:
        return self.persisted

    async def departing_pods(self, ordinals: tuple[int, ...]) -> int:
        return len(self.pods & set(ordinals))

    async def event(self, type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))

    def queue_event(self, type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))

    def transferred(self, tasks: int) -> None:
        self.moved += tasks

    def drain_finished(self, seconds: float) -> None:
        self.finished += 1

    def reasons(self) -> list[str]:
        return [reason for _, reason, _ in self.events]


def _port(replicas: int, **kwargs: object) -> FakePort:
    return FakePort(replicas, pods=set(range(replicas)), **kwargs)  # type: ignore[arg-type]


def _is_port(port: FakePort) -> DrainPort:
    return port  # FakePort satisfies the protocol (checked by mypy)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = await Store.open(f"sqlite:///{tmp_path / 'drain.db'}", migrate=True)
    try:
        yield store
    finally:
        await store.close()


def _id(k: int) -> str:
    return f"{NAME}-{k}"


async def _occurrences(store: Store, n: int, tasks: dict[int, int]) -> int:
    """Register `<name>-0..n-1` and give ordinal k `tasks[k]` pending tasks."""
    ids = [_id(k) for k in range(n)]
    assert not await store.registry.claim(ids, agent_id=AGENT)
    for k in range(n):
        await store.registry.register(_id(k), ordinal=k, agent_id=AGENT)
        for i in range(tasks.get(k, 0)):
            await store.scope(_id(k)).add_task(f"task {k}.{i}")
    return sum(tasks.values())


async def _in_flight(store: Store, k: int) -> None:
    """Ordinal k holds one thought in PROCESSING (an agent working on it)."""
    scoped = store.scope(_id(k))
    task = await scoped.add_task(f"busy {k}")
    await scoped.activate_pending_tasks(10)
    await scoped.add_thought(task.task_id, "thinking")
    assert await scoped.claim_pending_thoughts(1)
    assert await scoped.count_thoughts(ThoughtStatus.PROCESSING) == 1


async def _work(store: Store, k: int) -> int:
    scoped = store.scope(_id(k))
    return await scoped.count_tasks(TaskStatus.PENDING) + await scoped.count_tasks(
        TaskStatus.ACTIVE)


async def _state(store: Store, k: int) -> OccurrenceState:
    row = await store.registry.get(_id(k))
    assert row is not None
    return row.state


async def _drive(
    store: Store, port: FakePort, desired: int, settings: DrainSettings = RELEASE
) -> driver.DriveResult:
    return await driver.drive(
        name=NAME, store=store, settings=settings, desired=desired, current=port.replicas,
        record=port.persisted, port=_is_port(port), agent_id=AGENT)


async def test_scale_down_5_to_2_through_every_phase(store: Store) -> None:
    total = await _occurrences(store, 5, {0: 2, 1: 1, 2: 3, 3: 4, 4: 5})
    port = _port(5, pods_follow_scale=False)

    first = await _drive(store, port, 2)
    # fenced, nothing in flight, work moved (the count persisted with it), StatefulSet
    # shrunk: waiting for the pods
    assert port.history == ["Fencing", "WaitingInFlight", "Transferring", "Transferring",
                            "Shrinking"]
    assert port.replicas == 2 and first.current == 2
    assert first.record is not None and first.record.phase == "Shrinking"
    assert first.requeue_after == planner.POLL_SECONDS
    assert first.transferred == 12 and first.record.transferred == 12
    assert [await _state(store, k) for k in (2, 3, 4)] == [OccurrenceState.DRAINING] * 3
    assert [await _work(store, k) for k in (2, 3, 4)] == [0, 0, 0]

    again = await _drive(store, port, 2)  # pods still there: nothing changes
    assert again.record == first.record and port.history[-1] == "Shrinking"

    port.pods = {0, 1}  # the StatefulSet controller removed the departing pods
    done = await _drive(store, port, 2)
    assert port.history[-2:] == ["Sweeping", "Done"]
    assert done.record is not None and done.record.phase == "Done"
    assert done.record.transferred == 12
    assert [await _state(store, k) for k in (2, 3, 4)] == [OccurrenceState.RETIRED] * 3
    assert [await _state(store, k) for k in (0, 1)] == [OccurrenceState.ACTIVE] * 2
    assert await _work(store, 0) + await _work(store, 1) == total
    assert port.moved == 12 and port.finished == 1
    assert port.reasons() == ["DrainStarted", "DrainWaitingInFlight", "DrainTransferring",
                              "TasksTransferred", "ScalingDown", "DrainSweeping",
                              "DrainComplete"]
    assert (await _drive(store, port, 2)).record == done.record  # settled: no more steps


@pytest.mark.parametrize("phase", ["Fencing", "WaitingInFlight", "Transferring", "Shrinking"])
async def test_a_crash_mid_drain_resumes_from_the_persisted_record(
    store: Store, phase: str
) -> None:
    total = await _occurrences(store, 5, {0: 1, 2: 2, 3: 3, 4: 4})
    dying = _port(5, crash_after=phase)
    with pytest.raises(Crash):
        await _drive(store, dying, 2)
    assert dying.persisted is not None and dying.persisted.phase == phase

    # a new operator: the StatefulSet and the status as the dead one left them
    restarted = FakePort(dying.replicas, pods=set(dying.pods), persisted=dying.persisted)
    result = await _drive(store, restarted, 2)
    assert result.record is not None and result.record.phase == "Done"
    assert restarted.replicas == 2
    assert [await _state(store, k) for k in (2, 3, 4)] == [OccurrenceState.RETIRED] * 3
    assert await _work(store, 0) + await _work(store, 1) == total  # nothing lost or doubled
    assert dying.moved + restarted.moved == 9


async def test_scaling_back_up_cancels_the_drain(store: Store) -> None:
    await _occurrences(store, 5, {3: 2})
    await _in_flight(store, 3)  # a live agent still working: the drain waits for it
    port = _port(5)
    waiting = await _drive(store, port, 2)
    assert waiting.record is not None and waiting.record.phase == "WaitingInFlight"
    assert waiting.requeue_after is not None and waiting.requeue_after <= planner.POLL_SECONDS
    assert await _state(store, 3) is OccurrenceState.DRAINING

    cancelled = await _drive(store, port, 5)
    assert cancelled.record is not None and cancelled.record.phase == "Cancelled"
    assert "DrainCancelled" in port.reasons()
    assert [await _state(store, k) for k in (2, 3, 4)] == [OccurrenceState.ACTIVE] * 3
    assert port.replicas == 5 and await _work(store, 3) == 3  # its work stayed with it

    grown = await _drive(store, port, 6)  # after the cancel: an ordinary scale-up
    assert port.replicas == 6 and grown.record == cancelled.record
    assert port.reasons()[-1] == "Scaled"


async def test_the_wait_mode_releases_in_flight_work_at_the_timeout(store: Store) -> None:
    await _occurrences(store, 3, {2: 1})
    await _in_flight(store, 2)
    wait = DrainSettings(timeout_seconds=30, in_flight="wait")
    port = _port(3)
    waiting = await _drive(store, port, 1, wait)
    assert waiting.record is not None and waiting.record.phase == "WaitingInFlight"
    assert (await store.registry.get(_id(2))).drain_grace_seconds == 30  # type: ignore[union-attr]

    # 31 seconds later (the record's clock), the agent still has not acknowledged
    started = parse_time(waiting.record.started_at) - timedelta(seconds=31)
    port.persisted = waiting.record.model_copy(update={"started_at": format_time(started)})
    done = await _drive(store, port, 1, wait)
    assert done.record is not None and done.record.phase == "Done"
    assert any("30s drain timeout" in message for _, _, message in port.events)
    assert port.history[-4:] == ["Transferring", "Shrinking", "Sweeping", "Done"]
    assert await store.scope(_id(2)).count_thoughts(ThoughtStatus.PROCESSING) == 0
    assert await _work(store, 2) == 0 and await _work(store, 0) == 2
    assert await _state(store, 2) is OccurrenceState.RETIRED


async def test_the_fence_acknowledgement_moves_on_before_the_grace(store: Store) -> None:
    await _occurrences(store, 2, {})
    await _in_flight(store, 1)
    port = _port(2)
    assert (await _drive(store, port, 1)).record.phase == "WaitingInFlight"  # type: ignore[union-attr]
    await store.registry.set_quiesced(_id(1), True)  # the agent: done, or released
    done = await _drive(store, port, 1)
    assert done.record is not None and done.record.phase == "Done"


async def test_the_bypass_shrinks_without_moving_work(store: Store) -> None:
    await _occurrences(store, 4, {2: 2, 3: 1})
    await _in_flight(store, 3)
    port = _port(4)
    waiting = await _drive(store, port, 2)
    record = waiting.record
    assert record is not None and planner.is_active(record)
    assert bypass.should_bypass(requested=True, database_unreachable=True,
                                 statefulset_exists=True, record=record)
    assert not bypass.should_bypass(requested=True, database_unreachable=False,
                                     statefulset_exists=True, record=record)
    assert not bypass.should_bypass(requested=False, database_unreachable=True,
                                     statefulset_exists=True, record=record)

    done = await driver.bypass(port, record)
    assert done.phase == "Done" and "bypassed" in (done.message or "")
    assert port.replicas == 2 and port.persisted == done
    assert port.events[-1][:2] == ("Warning", "DrainBypassed")
    assert await _work(store, 2) == 2 and await _work(store, 3) == 2  # left where it was
    # one-shot: the annotation goes once the drain is over, with no warning when used
    assert bypass.expire_skip_drain(requested=True, record=done, used=True) == (
        bypass.SkipDrainExpiry(remove=True))
    assert bypass.expire_skip_drain(requested=True, record=record, used=False) == (
        bypass.SkipDrainExpiry())
    unused = bypass.expire_skip_drain(requested=True, record=None, used=False)
    assert unused.remove and unused.warning is not None

    # the bypassed occurrences stay fenced; ordinals that run again are un-fenced first
    regrown = await _drive(store, port, 4)
    assert [await _state(store, k) for k in (2, 3)] == [OccurrenceState.ACTIVE] * 2
    assert port.replicas == 4 and regrown.current == 4


async def test_rebalance_after_a_scale_up(store: Store) -> None:
    await _occurrences(store, 4, {0: 8, 1: 8})
    settings = DrainSettings(rebalance_on_scale_up=True)
    port = _port(2)
    await _drive(store, port, 4, settings)
    record = port.rebalance_record
    assert record is not None and record.phase == "Pending"
    assert (record.from_replicas, record.to_replicas) == (2, 4)

    async def step(desired: int, ready: int) -> driver.RebalanceResult:
        return await driver.rebalance(
            name=NAME, store=store, port=port, record=port.rebalance_record,
            desired=desired, drain_active=False,
            statefulset=StatefulSetSize(replicas=port.replicas or 0, ready=ready))

    assert (await step(4, ready=3)).requeue_after == planner.POLL_SECONDS  # not ready yet
    done = await step(4, ready=4)
    assert done.record is not None and done.record.phase == "Done" and done.moved == 8
    assert port.rebalance_record == done.record and port.events[-1][:2] == ("Normal", "Rebalanced")
    assert [await _work(store, k) for k in range(4)] == [4, 4, 4, 4]
    assert (await step(4, ready=4)).moved == 0  # once

    port.rebalance_record = record  # a Pending rebalance outrun by another scale
    cancelled = await step(3, ready=4)
    assert cancelled.record is not None and cancelled.record.phase == "Cancelled"


async def test_a_fenced_middle_ordinal_is_emptied_kept_fenced_and_released_on_removal(
        store: Store) -> None:
    total = await _occurrences(store, 3, {0: 1, 1: 6, 2: 2})
    await _in_flight(store, 1)  # ordinal 1 is working on something when it is fenced
    port = _port(3)
    fence = DrainSettings(timeout_seconds=60, in_flight="release", release_grace_seconds=10,
                          fenced=frozenset({1}))

    fenced = await _drive(store, port, 3, fence)
    assert await _state(store, 1) == OccurrenceState.DRAINING
    assert fenced.requeue_after == planner.POLL_SECONDS  # busy: its in-flight work goes on
    assert await _work(store, 1) == 7 and port.reasons() == ["OccurrencesFenced"]

    await store.registry.set_quiesced(_id(1), True)  # the agent acknowledged the fence
    emptied = await _drive(store, port, 3, fence)
    # work may still trickle in until the pod leaves the endpoints: look again soon
    assert emptied.requeue_after == planner.POLL_SECONDS and await _work(store, 1) == 0
    assert (await _drive(store, port, 3, fence)).requeue_after is None  # nothing moved
    assert await _work(store, 0) + await _work(store, 2) == total + 1
    assert port.reasons() == ["OccurrencesFenced", "FencedWorkMoved"] and port.moved == 7
    assert port.replicas == 3 and port.persisted is None  # no drain, no size change

    await store.scope(_id(1)).add_task("submitted to the fenced one")
    await _drive(store, port, 3, fence)  # moved too; the fence stays
    assert await _work(store, 1) == 0 and await _state(store, 1) == OccurrenceState.DRAINING

    # a scale-down past it moves ordinal 2's work to ordinal 0 alone; the fence stays
    await _drive(store, port, 2, fence)
    assert port.persisted is not None and port.persisted.phase == "Done"
    assert await _work(store, 1) == 0 and await _work(store, 0) == total + 2
    assert await _state(store, 1) == OccurrenceState.DRAINING
    await _drive(store, port, 3, fence)
    assert await _state(store, 1) == OccurrenceState.DRAINING

    await _drive(store, port, 3)  # removed from the spec: un-fenced
    assert await _state(store, 1) == OccurrenceState.ACTIVE
    assert port.reasons()[-1] == "OccurrencesUnfenced"


async def test_deferred_work_leaves_with_its_departing_occurrence(store: Store) -> None:
    """A task waiting for a decision (deferred) is unfinished work: a drain moves it (it was
    stranded on the retired occurrence, and nothing would ever take it up)."""
    await _occurrences(store, 3, {})
    departing = store.scope(_id(2))
    task = await departing.add_task("waits for a person")
    await departing.update_task_status(task.task_id, TaskStatus.DEFERRED)
    port = _port(3)
    await _drive(store, port, 2)
    assert port.persisted is not None and port.persisted.phase == "Done"
    assert await departing.count_tasks(TaskStatus.DEFERRED) == 0
    moved = [await store.scope(_id(k)).get_task(task.task_id) for k in (0, 1)]
    kept = [t for t in moved if t is not None]
    assert len(kept) == 1 and kept[0].status == TaskStatus.DEFERRED
    assert len(await store.transfers.transfers_for_task(task.task_id)) == 1
