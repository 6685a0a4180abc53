"""The rollout driver (rollout/driver.py) with an in-memory port: what it persists, when it
measures the gates (on a real SQLite store), and which pods it sends back."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from occurrence_operator.model.spec import RolloutSpec
from occurrence_operator.model.status import RolloutStatus
from occurrence_operator.model.timeutil import format_time, utcnow
from occurrence_operator.rollout import driver
from occurrence_operator.rollout.planner import Observed, RolloutDecision
from occurrence_store import Store, TaskStatus
from occurrence_store.errors import StoreUnavailable


@dataclass
class FakePort:
    persisted: list[RolloutStatus | None] = field(default_factory=list)
    events: list[tuple[str, str, str]] = field(default_factory=list)
    deleted: list[tuple[str, int]] = field(default_factory=list)
    failed_measurements: int = 0
    labelled: list[str | None] = field(default_factory=list)

    async def persist(self, record: RolloutStatus | None) -> None:
        self.persisted.append(record)

    def queue_event(self, type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))

    async def delete_pods_off(self, revision: str, below: int) -> int:
        self.deleted.append((revision, below))
        return 1

    def measurement_failed(self) -> None:
        self.failed_measurements += 1

    async def label_tracks(self, canary_revision: str | None) -> int:
        self.labelled.append(canary_revision)
        return 0


GATED = RolloutSpec.model_validate({"strategy": "Canary", "waves": [
    {"name": "explorer", "occurrences": 1, "bakeSeconds": 60,
     "gates": [{"metric": "taskFailureRatio", "max": 0.1}]},
    {"name": "general", "percent": 100}]})


def baking_record(seconds_ago: float) -> RolloutStatus:
    return RolloutStatus.from_fields(
        phase="Progressing", wave="explorer", partition=3, canary_occurrences=1,
        canary_template="new", stable_template="old", stable_revision="rev-old",
        bake_started_at=format_time(utcnow() - timedelta(seconds=seconds_ago)))


def test_the_template_hash_is_of_the_pod_template_only() -> None:
    a = {"metadata": {"name": "x"}, "spec": {"replicas": 1, "template": {"spec": {"a": 1}}}}
    b = {"metadata": {"name": "y"}, "spec": {"replicas": 9, "template": {"spec": {"a": 1}}}}
    assert driver.template_hash(a) == driver.template_hash(b)
    c = {"spec": {"template": {"spec": {"a": 2}}}}
    assert driver.template_hash(a) != driver.template_hash(c)
    seen = driver.observe(a, {**b, "status": {"updateRevision": "u", "currentRevision": "c"}})
    assert not seen.template_changed and seen.replicas == 9
    assert (seen.update_revision, seen.current_revision) == ("u", "c")


async def test_gates_are_measured_only_while_a_gated_wave_bakes(tmp_path: Path) -> None:
    store = await Store.open(f"sqlite:///{tmp_path / 'r.db'}", migrate=True)
    try:
        for k, failed in ((3, 4), (0, 0)):
            scoped = store.scope(f"agd-{k}")
            for i in range(5):
                task = await scoped.add_task(f"t{i}")
                await scoped.update_task_status(
                    task.task_id, TaskStatus.FAILED if i < failed else TaskStatus.COMPLETED)
        port = FakePort()
        seen = Observed(template="new", template_changed=False, replicas=4)
        measured = await driver.measure(store, "agd", GATED, baking_record(30), seen, port,
                                        utcnow(), namespace="ns")
        assert measured.canary is not None and measured.stable is not None
        assert (measured.canary.tasks_failed, measured.canary.tasks_completed) == (4, 1)
        assert measured.canary.occurrences == 1 and measured.stable.occurrences == 3
        assert measured.stable.tasks_completed == 5
        not_baking = baking_record(30).model_copy(update={"bake_started_at": None})
        assert await driver.measure(store, "agd", GATED, not_baking, seen, port,
                                    utcnow(), namespace="ns") == seen
        ungated = RolloutSpec.model_validate({"strategy": "Canary"})
        assert await driver.measure(store, "agd", ungated, baking_record(30), seen, port,
                                    utcnow(), namespace="ns") == seen
    finally:
        await store.close()


class _DownOutcomes:
    async def finished(self, occurrence_ids: object, *, seconds: float,
                       **scope: object) -> object:
        raise StoreUnavailable("cannot connect to the database")


class _DownStore:
    outcomes = _DownOutcomes()


async def test_a_database_that_does_not_answer_is_counted_and_the_wave_keeps_baking() -> None:
    port = FakePort()
    seen = Observed(template="new", template_changed=False, replicas=4)
    down = await driver.measure(_DownStore(), "agd", GATED, baking_record(30),  # type: ignore[arg-type]
                                seen, port, utcnow(), namespace="ns")
    assert down == seen and port.failed_measurements == 1


async def test_step_persists_a_changed_record_before_anything_else_and_queues_events() -> None:
    port = FakePort()
    seen = Observed(template="new", template_changed=True, replicas=4,
                    current_revision="rev-old")
    decision = await driver.step(GATED, None, seen, port, utcnow())
    assert decision.partition == 3 and port.persisted == [decision.record]
    assert [e[1] for e in port.events] == ["RolloutStarted"]
    again = await driver.step(GATED, decision.record, seen, port, utcnow())
    assert len(port.persisted) == 1 + (again.record != decision.record)


@pytest.mark.parametrize(("stable", "expected"), [("rev-old", [("rev-old", 4)]), (None, [])])
async def test_pods_go_back_to_the_stable_revision_only_when_it_is_known(
        stable: str | None, expected: list[tuple[str, int]]) -> None:
    port = FakePort()
    record = baking_record(0).model_copy(update={"phase": "RolledBack",
                                                 "stable_revision": stable})
    await driver.return_to_stable(RolloutDecision(4, record, delete_canaries=True), port, "agd")
    assert port.deleted == expected
    await driver.return_to_stable(replace(RolloutDecision(4, record), delete_canaries=False),
                                  port, "agd")
    assert port.deleted == expected


@dataclass
class GivingBackPort(FakePort):
    requeued_tasks: int = 0
    give_back_failures: int = 0
    pin_failures: int = 0

    def requeued(self, tasks: int) -> None:
        self.requeued_tasks += tasks

    def database_failed(self, what: str) -> None:
        self.give_back_failures += what == "GiveBackFailed"
        self.pin_failures += what == "PinFailed"


def rolled_back(revision: str = "rev-bad") -> RolloutStatus:
    return RolloutStatus.from_fields(
        phase="RolledBack", partition=3, canary_template="new", stable_template="old",
        stable_revision="rev-old", canary_revision=revision,
        started_at=format_time(utcnow() - timedelta(minutes=5)),
        failed_work={"revision": revision, "since": format_time(utcnow() - timedelta(minutes=5))})


async def _fail_on(store: Store, occurrence: str, revision: str, count: int) -> None:
    await store.registry.register(occurrence, agent_id="ns/web", revision=revision)
    scoped = store.scope(occurrence)
    for i in range(count):
        task = await scoped.add_task(f"{revision} {i}")
        await scoped.update_task_status(task.task_id, TaskStatus.FAILED)


async def test_failed_work_goes_back_once_the_revision_runs_nowhere(tmp_path: Path) -> None:
    store = await Store.open(f"sqlite:///{tmp_path / 'db.sqlite'}", migrate=True)
    try:
        await _fail_on(store, "web-2", "rev-bad", 4)
        await _fail_on(store, "web-0", "rev-old", 2)  # the stable revision's failures stay
        port = GivingBackPort()
        # the canary pod is still on the bad revision (updated 1): nothing yet — it would
        # claim what went back and fail it again
        running = Observed(template="new", template_changed=False, replicas=3, ready=3,
                           updated=1, update_revision="rev-bad", current_revision="rev-old")
        initial = rolled_back()
        record = await driver.give_back_failed(store, "web", "ns/web", initial, running,
                                               port, utcnow())
        assert record == initial and port.requeued_tasks == 0 and not port.persisted
        # its pod replaced, but the old process still registered on it: still nothing
        gone = replace(running, updated=0)
        record = await driver.give_back_failed(store, "web", "ns/web", record, gone, port,
                                               utcnow())
        assert record is not None and record.failed_work is not None
        assert record.failed_work.requeued == 0 and not port.persisted
        # the new process registered on the stable revision: all of it goes back, complete
        await store.registry.register("web-2", agent_id="ns/web", revision="rev-old")
        record = await driver.give_back_failed(store, "web", "ns/web", record, gone, port,
                                               utcnow())
        assert record is not None and record.failed_work is not None
        assert (record.failed_work.requeued, record.failed_work.complete) == (4, True)
        assert port.requeued_tasks == 4 and port.persisted[-1] == record
        assert [e[1] for e in port.events] == ["FailedWorkRequeued"]
        pending = await store.scope("web-2").get_tasks_by_status(TaskStatus.PENDING)
        assert len(pending) == 4
        stable_failed = await store.scope("web-0").get_tasks_by_status(TaskStatus.FAILED)
        assert len(stable_failed) == 2
        # complete: nothing asked of the database any more, nothing persisted
        persisted = len(port.persisted)
        await store.close()
        again = await driver.give_back_failed(store, "web", "ns/web", record, gone, port,
                                              utcnow())
        assert again == record and len(port.persisted) == persisted
    finally:
        await store.close()


async def test_an_unready_fleet_is_not_settled_and_a_database_error_is_counted(
        tmp_path: Path) -> None:
    seen = Observed(template="old", template_changed=False, replicas=3, ready=2, updated=3,
                    update_revision="rev-old")
    assert not driver.runs_nowhere("rev-bad", seen)
    assert driver.runs_nowhere("rev-bad", replace(seen, ready=3))
    assert not driver.runs_nowhere("rev-bad", replace(seen, ready=3, observed=False))
    assert driver.runs_nowhere("rev-bad", replace(seen, replicas=0, ready=0, updated=0))

    class Unreachable:
        class registry:
            @staticmethod
            async def live_count(*args: object, **kwargs: object) -> int:
                return 0

        class requeues:
            @staticmethod
            async def give_back(*args: object, **kwargs: object) -> list[str]:
                raise StoreUnavailable("down")

    port = GivingBackPort()
    record = rolled_back()
    same = await driver.give_back_failed(Unreachable(), "web", "ns/web",  # type: ignore[arg-type]
                                         record, replace(seen, ready=3), port, utcnow())
    assert same == record and port.give_back_failures == 1 and not port.persisted


async def test_shared_decisions_are_pinned_while_a_rollout_is_under_way(tmp_path: Path) -> None:
    store = await Store.open(f"sqlite:///{tmp_path / 'db.sqlite'}", migrate=True)
    try:
        port = GivingBackPort()
        shared = store.shared_for("ns/web")
        seen = Observed(template="new", template_changed=False, replicas=4, ready=4, updated=1,
                        update_revision="rev-new", current_revision="rev-old")
        record = baking_record(10)
        pinned = await driver.pin_decisions(store, "web", "ns/web", record, seen, port)
        assert pinned is not None and pinned.decisions_pinned
        assert await shared.pinned_to() == "rev-old" and port.persisted == [pinned]
        # steady: nothing written
        assert await driver.pin_decisions(store, "web", "ns/web", pinned, seen, port) == pinned
        assert len(port.persisted) == 1
        # rolled back, the bad revision still on a pod: still pinned; once gone: unpinned
        back = pinned.model_copy(update={"phase": "RolledBack", "canary_revision": "rev-new"})
        assert (await driver.pin_decisions(store, "web", "ns/web", back, seen, port)) == back
        settled = replace(seen, updated=0)
        unpinned = await driver.pin_decisions(store, "web", "ns/web", back, settled, port)
        assert unpinned is not None and not unpinned.decisions_pinned
        assert await shared.pinned_to() is None
        # no stable revision known: nothing to pin to
        unknown = baking_record(10).model_copy(update={"stable_revision": None})
        assert await driver.pin_decisions(store, "web", "ns/web", unknown, seen, port) == unknown


        class Unreachable:
            @staticmethod
            def shared_for(agent_id: str) -> Any:
                class Shared:
                    @staticmethod
                    async def pin_to_stable(revision: str | None) -> None:
                        raise StoreUnavailable("down")
                return Shared()

        failing = await driver.pin_decisions(Unreachable(), "web", "ns/web",  # type: ignore[arg-type]
                                             record, seen, port)
        assert failing == record and port.pin_failures == 1
    finally:
        await store.close()
