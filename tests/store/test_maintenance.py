"""Maintenance: stale shared claims, orphaned thoughts, retention — within boundaries."""

from __future__ import annotations

from occurrence_store import Store, TaskStatus
from tests.support.clock import pin_to_midday


async def test_stale_shared_tasks(store: Store) -> None:
    pin_to_midday(store.clock)  # both decisions stay on one day while the clock moves
    stale, _ = await store.shared.try_claim_shared_task("wakeup", "agent-0", lease_seconds=60)
    done, _ = await store.shared.try_claim_shared_task("shutdown", "agent-0")
    await store.shared.complete_shared_task(done.task_id, "agent-0")
    store.clock.advance(seconds=120)
    assert await store.maintenance.cleanup_stale_shared_tasks() == 0  # not 5 min yet
    store.clock.advance(seconds=300)
    assert await store.maintenance.cleanup_stale_shared_tasks() == 1
    assert await store.shared.get_shared_task(stale.task_id) is None
    assert await store.shared.get_shared_task(done.task_id) is not None


async def test_orphaned_thoughts_and_retention(store: Store) -> None:
    a, b = store.scope("agent-0"), store.scope("agent-1")
    old_a = await a.add_task("old a")
    old_b = await b.add_task("old b")
    await a.add_thought(old_a.task_id, "th")
    await a.update_task_status(old_a.task_id, TaskStatus.COMPLETED)
    await b.update_task_status(old_b.task_id, TaskStatus.COMPLETED)
    keep = await a.add_task("still pending")
    async with store.db.connection() as conn:
        await conn.execute("DELETE FROM tasks WHERE task_id = $1", keep.task_id)
    await a.add_task("pending again")
    assert await store.maintenance.cleanup_orphaned_thoughts() == 0
    store.clock.advance(days=8)
    # per occurrence: b's finished work is not touched when cleaning a
    assert await store.maintenance.cleanup_completed(7 * 86400, occurrence_id="agent-0") == 1
    assert await a.get_thoughts_by_task(old_a.task_id) == []
    assert await b.get_task(old_b.task_id) is not None
    assert await a.count_tasks(TaskStatus.PENDING) == 1
    assert await store.maintenance.cleanup_completed(7 * 86400) == 1
    assert await b.get_task(old_b.task_id) is None
    async with store.db.connection() as conn:
        await conn.execute(
            "INSERT INTO thoughts (thought_id, source_task_id, agent_occurrence_id, status, "
            "content, created_at, updated_at) VALUES ('orphan', 'gone', 'agent-1', "
            "'pending', 'x', occurrence_now(), occurrence_now())")
    assert await store.maintenance.cleanup_orphaned_thoughts(occurrence_id="agent-0") == 0
    assert await store.maintenance.cleanup_orphaned_thoughts() == 1


async def test_retention_deletes_one_agents_old_finished_work_in_batches(store: Store) -> None:
    await store.registry.register("keep-0", agent_id="ns/keep")
    await store.registry.register("old-0", agent_id="ns/old")
    await store.registry.register("old-1", agent_id="ns/old")
    mine, theirs = store.scope("old-0"), store.scope("keep-0")
    finished = []
    for i in range(7):
        task = await mine.add_task(f"done {i}")
        await mine.add_thought(task.task_id, "a thought")
        await mine.update_task_status(task.task_id, TaskStatus.COMPLETED)
        finished.append(task)
    pending = await mine.add_task("still to do")
    other = await theirs.add_task("another agent's")
    await theirs.update_task_status(other.task_id, TaskStatus.COMPLETED)
    assert await store.transfers.transfer_task_ownership(finished[0].task_id, "old-0", "old-1")
    assert await store.transfers.transfer_task_ownership(finished[0].task_id, "old-1", "old-0")
    assert (await store.maintenance.apply_retention(
        "ns/old", finished_seconds=3600, audit_seconds=3600)).tasks == 0  # not old yet
    store.clock.advance(hours=2)
    retained = await store.maintenance.apply_retention(
        "ns/old", finished_seconds=3600, audit_seconds=30 * 86400, batch=3)
    assert (retained.tasks, retained.thoughts, retained.transfer_records) == (7, 7, 0)
    assert await mine.get_task(pending.task_id) is not None  # unfinished work stays
    assert await theirs.get_task(other.task_id) is not None  # another agent's stays
    assert [t.task_id for t in await mine.list_tasks()] == [pending.task_id]
    store.clock.advance(days=31)  # the audit records of a deleted task outlive it, then go
    retained = await store.maintenance.apply_retention(
        "ns/old", finished_seconds=3600, audit_seconds=30 * 86400, batch=1)
    assert retained.transfer_records == 2
    assert await store.transfers.transfers_for_task(finished[0].task_id) == []


async def test_retention_of_one_agent_keeps_another_agents_audit_trail(store: Store) -> None:
    """On a shared database agent A's short auditDays must not delete agent B's records."""
    for occ, agent in (("a-0", "ns/a"), ("a-1", "ns/a"), ("b-0", "ns/b"), ("b-1", "ns/b")):
        await store.registry.register(occ, agent_id=agent)
    moved = {}
    for prefix in ("a", "b"):
        task = await store.scope(f"{prefix}-0").add_task(f"{prefix}'s")
        assert await store.transfers.transfer_task_ownership(
            task.task_id, f"{prefix}-0", f"{prefix}-1")
        await store.scope(f"{prefix}-1").update_task_status(task.task_id, TaskStatus.COMPLETED)
        moved[prefix] = task.task_id
    store.clock.advance(days=2)
    # B: finished work kept an hour, its audit trail 30 days: the task goes, its record stays
    retained = await store.maintenance.apply_retention(
        "ns/b", finished_seconds=3600, audit_seconds=30 * 86400)
    assert (retained.tasks, retained.transfer_records) == (1, 0)
    retained = await store.maintenance.apply_retention(
        "ns/a", finished_seconds=3600, audit_seconds=86400)  # A: auditDays 1
    assert (retained.tasks, retained.transfer_records) == (1, 1)
    assert await store.transfers.transfers_for_task(moved["a"]) == []
    assert len(await store.transfers.transfers_for_task(moved["b"])) == 1  # B's stays
