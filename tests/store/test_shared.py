"""Shared decisions: exactly one claimer wins, leases expire, waiters wake up."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from datetime import UTC, datetime

import pytest

from occurrence_store import SHARED_OCCURRENCE_ID, Store, TaskStatus
from occurrence_store.shared import shared_task_id
from tests.support.clock import pin_to_midday


def test_shared_task_id_is_deterministic() -> None:
    day = datetime(2025, 10, 28, 23, 59, tzinfo=UTC)
    assert shared_task_id("wakeup_ritual", day) == "WAKEUP_RITUAL_SHARED_20251028"
    with pytest.raises(ValueError):
        shared_task_id("bad type!", day)


async def test_first_claim_wins_and_others_see_the_same_task(store: Store) -> None:
    task, won = await store.shared.try_claim_shared_task("wakeup", "agent-0")
    assert won is True
    assert task.agent_occurrence_id == SHARED_OCCURRENCE_ID
    assert task.claimed_by == "agent-0"
    again, won2 = await store.shared.try_claim_shared_task("wakeup", "agent-1")
    assert won2 is False
    assert again.task_id == task.task_id and again.claimed_by == "agent-0"
    # shared tasks are invisible to every occurrence's scope
    assert await store.scope("agent-0").get_task(task.task_id) is None


async def test_twenty_concurrent_claimers_one_winner(db_url: str) -> None:
    stores = [await Store.open(db_url, migrate=(i == 0)) for i in range(20)]
    try:
        results = await asyncio.gather(*(
            s.shared.try_claim_shared_task("wakeup", f"agent-{i}") for i, s in enumerate(stores)
        ))
    finally:
        for s in stores:
            await s.close()
    assert sum(1 for _, won in results if won) == 1
    assert len({task.task_id for task, _ in results}) == 1
    assert len({task.claimed_by for task, _ in results}) == 1


def _claim_in_process(url: str, occurrence_id: str, start: float, queue) -> None:
    async def go() -> tuple[str, bool]:
        store = await Store.open(url)
        try:
            await asyncio.sleep(max(0.0, start - time.time()))  # all processes fire together
            task, won = await store.shared.try_claim_shared_task("wakeup", occurrence_id)
            return task.task_id, won
        finally:
            await store.close()

    queue.put(asyncio.run(go()))


async def test_twenty_claimers_in_separate_processes(db_url: str) -> None:
    async with await Store.open(db_url, migrate=True):
        pass
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    start = time.time() + 3.0
    procs = [ctx.Process(target=_claim_in_process, args=(db_url, f"agent-{i}", start, queue))
             for i in range(20)]
    for p in procs:
        p.start()
    results = [await asyncio.to_thread(queue.get, True, 60) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert sum(1 for _, won in results if won) == 1
    assert len({tid for tid, _ in results}) == 1


async def test_lease_expiry_lets_exactly_one_take_over(store: Store) -> None:
    clock = store.clock
    pin_to_midday(clock)  # the ten minutes below stay on one day's decision
    task, won = await store.shared.try_claim_shared_task("wakeup", "agent-0", lease_seconds=60)
    assert won
    clock.advance(seconds=30)
    _, won = await store.shared.try_claim_shared_task("wakeup", "agent-1", lease_seconds=60)
    assert not won  # lease still alive
    assert await store.shared.renew_lease(task.task_id, "agent-0", 60)
    clock.advance(seconds=61)  # winner died: lease ran out
    took, won = await store.shared.try_claim_shared_task("wakeup", "agent-1", lease_seconds=60)
    assert won and took.claimed_by == "agent-1"
    _, won = await store.shared.try_claim_shared_task("wakeup", "agent-2", lease_seconds=60)
    assert not won
    # the old holder can no longer renew or complete
    assert not await store.shared.renew_lease(task.task_id, "agent-0", 60)
    assert not await store.shared.complete_shared_task(task.task_id, "agent-0")
    assert await store.shared.complete_shared_task(task.task_id, "agent-1")
    clock.advance(seconds=600)
    _, won = await store.shared.try_claim_shared_task("wakeup", "agent-3")
    assert not won  # a completed decision is never retaken


async def test_status_helpers(store: Store) -> None:
    assert await store.shared.get_shared_task_status("shutdown") is None
    assert not await store.shared.is_shared_task_completed("shutdown")
    task, _ = await store.shared.try_claim_shared_task("shutdown", "agent-0")
    assert await store.shared.get_shared_task_status("shutdown") == TaskStatus.ACTIVE
    assert (await store.shared.get_latest_shared_task("shutdown")).task_id == task.task_id
    assert await store.shared.get_latest_shared_task("wakeup") is None
    assert await store.shared.complete_shared_task(task.task_id, "agent-0", outcome={"x": 1})
    assert await store.shared.is_shared_task_completed("shutdown")
    assert (await store.shared.get_shared_task(task.task_id)).outcome == {"x": 1}


async def test_wait_for_completion_wakes_waiters(db_url: str) -> None:
    winner = await Store.open(db_url, migrate=True)
    waiter = await Store.open(db_url)
    try:
        task, _ = await winner.shared.try_claim_shared_task("wakeup", "agent-0")
        wait = asyncio.create_task(
            waiter.shared.wait_for_shared_task_completion(task.task_id, timeout=20)
        )
        await asyncio.sleep(0.3)
        assert not wait.done()
        assert await winner.shared.complete_shared_task(task.task_id, "agent-0")
        done = await asyncio.wait_for(wait, 10)
        assert done is not None and done.status == TaskStatus.COMPLETED
    finally:
        await winner.close()
        await waiter.close()


async def test_wait_for_completion_times_out(store: Store) -> None:
    task, _ = await store.shared.try_claim_shared_task("wakeup", "agent-0")
    assert await store.shared.wait_for_shared_task_completion(
        task.task_id, timeout=0.3, poll_interval=0.05) is None


async def test_the_age_of_an_unfinished_decision_shows_a_stuck_one(store: Store) -> None:
    clock = store.clock
    pin_to_midday(clock)
    mine, other = store.shared_for("ns/a"), store.shared_for("ns/b")
    assert await mine.oldest_unfinished_age() == 0.0
    task, won = await mine.try_claim_shared_task("wakeup", "a-0", lease_seconds=60)
    assert won
    clock.advance(seconds=660)  # still processing eleven minutes later (renewed or not)
    assert 655 <= await mine.oldest_unfinished_age() <= 700
    assert await other.oldest_unfinished_age() == 0.0  # another agent's decisions are apart
    await mine.renew_lease(task.task_id, "a-0", 60)
    assert await mine.complete_shared_task(task.task_id, "a-0")
    assert await mine.oldest_unfinished_age() == 0.0
