"""Idempotent submission: one task per key and agent, decided by a unique index."""

from __future__ import annotations

import asyncio

import pytest

from occurrence_store import InvalidTaskId, Store, StoreError


async def test_same_key_returns_the_first_task(store: Store) -> None:
    a = store.scope("i-0")
    first, created = await a.add_task_once("pay invoice 7", idempotency_key="inv-7")
    again, created_again = await a.add_task_once("pay invoice 7", idempotency_key="inv-7")
    assert created and not created_again
    assert again.task_id == first.task_id and again.idempotency_key == "inv-7"
    assert await a.count_tasks() == 1
    other, created_other = await a.add_task_once("pay invoice 8", idempotency_key="inv-8")
    assert created_other and other.task_id != first.task_id
    # add_task with a key behaves the same, returning the existing task
    assert (await a.add_task("pay invoice 7", idempotency_key="inv-7")).task_id == first.task_id


async def test_the_key_is_per_agent_across_its_occurrences(store: Store) -> None:
    for occ, agent in (("n1-0", "ns1/agent"), ("n1-1", "ns1/agent"), ("n2-0", "ns2/agent")):
        await store.registry.register(occ, agent_id=agent)
    first, _ = await store.scope("n1-0").add_task_once("x", idempotency_key="k")
    # a retry that reached another occurrence of the same agent finds it
    via_other, created = await store.scope("n1-1").add_task_once("x", idempotency_key="k")
    assert not created and via_other.task_id == first.task_id
    assert via_other.agent_occurrence_id == "n1-0" and via_other.agent_id == "ns1/agent"
    # the same key for another agent is another task
    theirs, created = await store.scope("n2-0").add_task_once("x", idempotency_key="k")
    assert created and theirs.task_id != first.task_id and theirs.agent_id == "ns2/agent"
    # still found after the task moved to another occurrence of the agent
    assert await store.transfers.transfer_task_ownership(first.task_id, "n1-0", "n1-1")
    moved, created = await store.scope("n1-0").add_task_once("x", idempotency_key="k")
    assert not created and moved.agent_occurrence_id == "n1-1"


async def test_twenty_concurrent_submissions_with_one_key_make_one_task(db_url: str) -> None:
    stores = [await Store.open(db_url, migrate=(i == 0)) for i in range(20)]
    try:
        results = await asyncio.gather(*(
            s.scope(f"c-{i % 3}").add_task_once("once", idempotency_key="retry-me")
            for i, s in enumerate(stores)))
    finally:
        for s in stores:
            await s.close()
    assert sum(1 for _, created in results if created) == 1
    assert len({task.task_id for task, _ in results}) == 1
    async with await Store.open(db_url) as check:
        async with check.db.connection() as conn:
            count = await conn.fetchval(
                "SELECT COUNT(*) FROM tasks WHERE idempotency_key = $1", "retry-me")
    assert count == 1


async def test_bad_keys_and_shared_ids_are_refused(store: Store) -> None:
    a = store.scope("i-1")
    for key in ("", "x" * 256, "nul\x00"):
        with pytest.raises(StoreError):
            await a.add_task_once("x", idempotency_key=key)
    for task_id in ("WAKEUP_SHARED_20261201", "SHUTDOWN_G2_SHARED_20261201@ns/a"):
        with pytest.raises(InvalidTaskId):
            await a.add_task("squat", task_id=task_id)
    assert (await a.add_task("fine", task_id="wakeup_shared_20261201")).task_id
