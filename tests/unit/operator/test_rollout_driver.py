"""The rollout driver (rollout/driver.py) with an in-memory port: what it persists, when it
measures the gates (on a real SQLite store), and which pods it sends back."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path

import pytest

from occurrence_operator.rollout import driver
from occurrence_operator.rollout.planner import Observed, RolloutDecision
from occurrence_operator.spec import RolloutSpec
from occurrence_operator.status import RolloutStatus
from occurrence_operator.timeutil import format_time, utcnow
from occurrence_store import Store, TaskStatus
from occurrence_store.errors import StoreUnavailable


@dataclass
class FakePort:
    persisted: list[RolloutStatus | None] = field(default_factory=list)
    events: list[tuple[str, str, str]] = field(default_factory=list)
    deleted: list[tuple[str, int]] = field(default_factory=list)
    failed_measurements: int = 0

    async def persist(self, record: RolloutStatus | None) -> None:
        self.persisted.append(record)

    def queue_event(self, type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))

    async def delete_pods_off(self, revision: str, below: int) -> int:
        self.deleted.append((revision, below))
        return 1

    def measurement_failed(self) -> None:
        self.failed_measurements += 1


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
                                        utcnow())
        assert measured.canary is not None and measured.stable is not None
        assert (measured.canary.tasks_failed, measured.canary.tasks_completed) == (4, 1)
        assert measured.canary.occurrences == 1 and measured.stable.occurrences == 3
        assert measured.stable.tasks_completed == 5
        not_baking = baking_record(30).model_copy(update={"bake_started_at": None})
        assert await driver.measure(store, "agd", GATED, not_baking, seen, port,
                                    utcnow()) == seen
        ungated = RolloutSpec.model_validate({"strategy": "Canary"})
        assert await driver.measure(store, "agd", ungated, baking_record(30), seen, port,
                                    utcnow()) == seen
    finally:
        await store.close()


class _DownOutcomes:
    async def finished(self, occurrence_ids: object, *, seconds: float) -> object:
        raise StoreUnavailable("cannot connect to the database")


class _DownStore:
    outcomes = _DownOutcomes()


async def test_a_database_that_does_not_answer_is_counted_and_the_wave_keeps_baking() -> None:
    port = FakePort()
    seen = Observed(template="new", template_changed=False, replicas=4)
    down = await driver.measure(_DownStore(), "agd", GATED, baking_record(30),  # type: ignore[arg-type]
                                seen, port, utcnow())
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
