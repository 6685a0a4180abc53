"""Paging through an occurrence's tasks in SQL: every task once, in order, any page size."""

from __future__ import annotations

from occurrence_store import Store, TaskStatus


async def test_keyset_pages_visit_every_task_once_in_creation_order(store: Store) -> None:
    mine, other = store.scope("page-0"), store.scope("page-1")
    created = [await mine.add_task(f"t{i}") for i in range(23)]
    # creation order; two tasks of one microsecond are ordered by id
    created.sort(key=lambda t: (t.created_at, t.task_id))
    await other.add_task("not mine")
    for task in created[::4]:
        await mine.update_task_status(task.task_id, TaskStatus.COMPLETED)
    for size in (1, 5, 23, 100):
        seen, after = [], None
        while True:
            page = await mine.list_tasks(limit=size, after=after)
            seen += [t.task_id for t in page]
            if len(page) < size:
                break
            after = (page[-1].created_at, page[-1].task_id)
        assert seen == [t.task_id for t in created], size
    done = await mine.list_tasks(status=TaskStatus.COMPLETED, limit=100)
    assert [t.task_id for t in done] == [t.task_id for t in created[::4]]
    assert [t.task_id for t in await mine.list_tasks(limit=3, offset=20)] == \
        [t.task_id for t in created[20:]]
