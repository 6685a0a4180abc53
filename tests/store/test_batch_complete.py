"""ScopedStore.complete_tasks: one guarded statement for many tasks, on both backends."""

from __future__ import annotations

from occurrence_store import Store, TaskStatus


async def test_completes_own_tasks_and_counts(store: Store) -> None:
    a = store.scope("agent-0")
    ids = await a.add_tasks([f"t{i}" for i in range(5)])
    activated = await a.activate_pending_tasks(3)
    done = [t.task_id for t in activated]
    assert await a.complete_tasks(done) == 3
    assert sorted(t.task_id for t in await a.get_tasks_by_status(TaskStatus.COMPLETED)) == sorted(
        done)
    assert await a.count_tasks(TaskStatus.PENDING) == 2
    # Duplicates count once; unknown ids count for nothing; empty is a no-op.
    rest = [i for i in ids if i not in done]
    assert await a.complete_tasks([rest[0], rest[0], "no-such-task"], TaskStatus.FAILED) == 1
    assert (await a.get_task(rest[0])).status is TaskStatus.FAILED
    assert await a.complete_tasks([]) == 0
    assert await a.count_tasks(TaskStatus.PENDING) == 1


async def test_other_occurrences_tasks_are_not_changed(store: Store) -> None:
    a, b = store.scope("agent-0"), store.scope("agent-1")
    mine = await a.add_tasks(["a1", "a2"])
    theirs = await b.add_tasks(["b1", "b2", "b3"])
    await b.activate_pending_tasks(1)
    before = {t.task_id: (t.status, t.updated_at) for t in await b.get_all_tasks()}

    assert await a.complete_tasks(theirs) == 0
    assert await a.complete_tasks([*mine, *theirs]) == 2

    after = {t.task_id: (t.status, t.updated_at) for t in await b.get_all_tasks()}
    assert after == before
    assert await b.count_tasks(TaskStatus.COMPLETED) == 0
    assert await a.count_tasks(TaskStatus.COMPLETED) == 2
    # And the owner can still complete its own.
    assert await b.complete_tasks(theirs) == 3
    assert await b.count_tasks(TaskStatus.COMPLETED) == 3
