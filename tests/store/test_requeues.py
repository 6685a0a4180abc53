"""store.requeues: the tasks a rolled-back revision failed go back to pending, once each,
with an audit record; every status an occurrence sets carries the revision it registered."""

from __future__ import annotations

import pytest

from occurrence_store import Store, TaskStatus
from occurrence_store.errors import StoreError

AGENT = "ns/agent"


async def _run(store: Store, occurrence: str, revision: str | None, *, failed: int,
               completed: int = 0, agent: str = AGENT) -> list[str]:
    """`occurrence` registers on `revision` and finishes tasks; returns the failed ids."""
    await store.registry.register(occurrence, agent_id=agent, revision=revision)
    scoped = store.scope(occurrence)
    ids = []
    for i in range(failed + completed):
        task = await scoped.add_task(f"{occurrence} {revision} {i}")
        bad = i < failed
        await scoped.update_task_status(
            task.task_id, TaskStatus.FAILED if bad else TaskStatus.COMPLETED,
            outcome={"error": "boom"} if bad else None)
        if bad:
            ids.append(task.task_id)
    return ids


async def test_only_the_failures_of_the_revision_go_back_once_each(store: Store) -> None:
    bad = await _run(store, "agent-1", "bad", failed=3, completed=2)
    stable = await _run(store, "agent-0", "good", failed=1, completed=2)

    back = await store.requeues.give_back(AGENT, "bad", ["agent-0", "agent-1"],
                                          since_seconds=600, reason="rollout 1 rolled back")
    assert back == sorted(bad)
    scoped = store.scope("agent-1")
    for task_id in bad:
        task = await scoped.get_task(task_id)
        assert task is not None and task.status is TaskStatus.PENDING and not task.outcome
    stable_task = await store.scope("agent-0").get_task(stable[0])
    assert stable_task is not None and stable_task.status is TaskStatus.FAILED
    records = await store.requeues.records(AGENT)
    assert sorted(r.task_id for r in records) == sorted(bad)
    assert {(r.revision, r.occurrence_id, r.reason) for r in records} == {
        ("bad", "agent-1", "rollout 1 rolled back")}
    assert all(r.previous_outcome == {"error": "boom"} for r in records)

    # again: nothing (idempotent)
    assert await store.requeues.give_back(AGENT, "bad", ["agent-0", "agent-1"],
                                          since_seconds=600, reason="again") == []
    # the same task failed by the same revision again is not given back a second time
    await store.registry.register("agent-1", agent_id=AGENT, revision="bad")
    await scoped.update_task_status(bad[0], TaskStatus.FAILED)
    assert await store.requeues.give_back(AGENT, "bad", ["agent-1"], since_seconds=600,
                                          reason="again") == []
    # ... and one failed again on the stable revision stays failed
    await store.registry.register("agent-1", agent_id=AGENT, revision="good")
    await scoped.update_task_status(bad[1], TaskStatus.FAILED)
    assert await store.requeues.give_back(AGENT, "bad", ["agent-1"], since_seconds=600,
                                          reason="again") == []
    assert len(await store.requeues.records(AGENT, revision="bad")) == 3


async def test_scoped_to_the_agent_the_occurrences_and_the_window(store: Store) -> None:
    old = await _run(store, "agent-1", "bad", failed=2)
    store.clock.advance(seconds=600)
    recent = await _run(store, "agent-1", "bad", failed=1)
    elsewhere = await _run(store, "agent-2", "bad", failed=1)  # not among the ids given
    other_agent = await _run(store, "other-0", "bad", failed=2, agent="ns/other")

    back = await store.requeues.give_back(AGENT, "bad", ["agent-1", "other-0"],
                                          since_seconds=300, reason="rolled back")
    assert back == recent
    for occurrence, ids in (("agent-1", old), ("agent-2", elsewhere), ("other-0", other_agent)):
        for task_id in ids:
            task = await store.scope(occurrence).get_task(task_id)
            assert task is not None and task.status is TaskStatus.FAILED, (occurrence, task)
    assert await store.requeues.records("ns/other") == []


async def test_unregistered_or_unknown_revision_gives_nothing_back(store: Store) -> None:
    scoped = store.scope("loose-0")  # never registered: its statuses carry no revision
    task = await scoped.add_task("x")
    await scoped.update_task_status(task.task_id, TaskStatus.FAILED)
    await _run(store, "agent-1", None, failed=1)  # registered without a revision
    assert await store.requeues.give_back("", "bad", ["loose-0"], since_seconds=60,
                                          reason="r") == []
    assert await store.requeues.give_back(AGENT, "bad", ["agent-1"], since_seconds=60,
                                          reason="r") == []


async def test_batches_are_bounded(store: Store) -> None:
    bad = await _run(store, "agent-1", "bad", failed=5)
    first = await store.requeues.give_back(AGENT, "bad", ["agent-1"], since_seconds=60,
                                           reason="r", limit=2)
    rest = await store.requeues.give_back(AGENT, "bad", ["agent-1"], since_seconds=60,
                                          reason="r", limit=10)
    assert len(first) == 2 and sorted(first + rest) == sorted(bad)


@pytest.mark.parametrize("revision", ["", "x" * 300])
async def test_bad_revision_refused(store: Store, revision: str) -> None:
    with pytest.raises(StoreError):
        await store.requeues.give_back(AGENT, revision, ["agent-1"], since_seconds=60,
                                       reason="r")
    if revision:
        with pytest.raises(StoreError):
            await store.registry.register("agent-1", agent_id=AGENT, revision=revision)


async def test_retention_deletes_requeue_records_of_deleted_tasks(store: Store) -> None:
    await _run(store, "agent-1", "bad", failed=2)
    back = await store.requeues.give_back(AGENT, "bad", ["agent-1"], since_seconds=60,
                                          reason="r")
    scoped = store.scope("agent-1")
    await scoped.update_task_status(back[0], TaskStatus.COMPLETED)
    store.clock.advance(seconds=7200)
    retained = await store.maintenance.apply_retention(AGENT, finished_seconds=3600,
                                                       audit_seconds=3600)
    assert retained.requeue_records == 1  # the completed (deleted) task's; the pending stays
    assert [r.task_id for r in await store.requeues.records(AGENT)] == [back[1]]
