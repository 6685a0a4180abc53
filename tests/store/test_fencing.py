"""The fence holds at the database: a fenced occurrence claims nothing, also in a race."""

from __future__ import annotations

import asyncio
import random
import time

from occurrence_store import OccurrenceState, Store, TaskStatus, ThoughtStatus
from occurrence_store.registry import NOTIFY_CHANNEL

ROUNDS = 20
CLAIMERS = 6


async def _active_with_thoughts(store: Store, occurrence_id: str, n: int) -> None:
    scoped = store.scope(occurrence_id)
    await scoped.add_tasks([f"t{i}" for i in range(n)])
    for task in await scoped.activate_pending_tasks(n):
        await scoped.add_thought(task.task_id, "think")


async def test_fenced_occurrence_claims_and_activates_nothing(store: Store) -> None:
    await store.registry.register("f-0")
    scoped = store.scope("f-0")
    await scoped.add_tasks(["a", "b", "c"])
    [first] = await scoped.activate_pending_tasks(1)
    await scoped.add_thought(first.task_id, "think")
    await store.registry.set_state("f-0", OccurrenceState.DRAINING)
    assert await scoped.activate_pending_tasks(10) == []
    assert await scoped.claim_pending_thoughts(10) == []
    assert await scoped.count_tasks(TaskStatus.PENDING) == 2
    # completion of work already held is not fenced (wait mode lets it finish)
    await store.registry.set_state("f-0", OccurrenceState.ACTIVE)
    [claimed] = await scoped.claim_pending_thoughts(10)
    await store.registry.set_state("f-0", OccurrenceState.DRAINING)
    assert await scoped.update_thought_status(claimed.thought_id, ThoughtStatus.COMPLETED,
                                              expected_status=ThoughtStatus.PROCESSING)
    # un-fenced: it claims again
    await store.registry.set_state("f-0", OccurrenceState.ACTIVE)
    assert len(await scoped.activate_pending_tasks(10)) == 2


async def test_an_unregistered_occurrence_is_not_fenced(store: Store) -> None:
    await _active_with_thoughts(store, "free-0", 2)
    assert len(await store.scope("free-0").claim_pending_thoughts(5)) == 2
    # the operator fences an occurrence whose pod never registered: the row appears
    await _active_with_thoughts(store, "never-0", 2)
    await store.registry.set_state("never-0", OccurrenceState.DRAINING)
    assert await store.scope("never-0").claim_pending_thoughts(5) == []


async def test_fence_racing_claims_zero_claims_after_the_fence_commits(pg_url: str) -> None:
    """20 rounds: claimers on their own connections hammer claim_pending_thoughts while the
    fence commits at a random moment. Whatever is PROCESSING right after the fence returned
    is all there ever is: not one claim commits after the fence."""
    admin = await Store.open(pg_url, migrate=True)
    claimers = [await Store.open(pg_url) for _ in range(CLAIMERS)]
    rng = random.Random(11)
    overlapping = 0
    try:
        for round_ in range(ROUNDS):
            occ = f"race-{round_}"
            await admin.registry.register(occ)
            await _active_with_thoughts(admin, occ, 400)
            stop, landed, enough = asyncio.Event(), asyncio.Event(), asyncio.Event()
            calls: list[tuple[float, float, int]] = []  # (start, end, claimed)
            wanted = [0]  # calls to wait for after the fence (0: not fenced yet)

            async def claim(store: Store, occ: str = occ, calls: list = calls,
                            stop: asyncio.Event = stop, landed: asyncio.Event = landed,
                            enough: asyncio.Event = enough, wanted: list = wanted) -> None:
                scoped = store.scope(occ)
                while not stop.is_set():
                    started = time.monotonic()
                    got = await scoped.claim_pending_thoughts(1)
                    calls.append((started, time.monotonic(), len(got)))
                    if got:
                        landed.set()
                    if wanted[0] and len(calls) >= wanted[0]:
                        enough.set()

            workers = [asyncio.create_task(claim(s)) for s in claimers]
            await asyncio.wait_for(landed.wait(), 30)  # claims are landing
            await asyncio.sleep(rng.uniform(0, 0.02))
            fence_started = time.monotonic()
            await admin.registry.set_state(occ, OccurrenceState.DRAINING)
            fence_returned = time.monotonic()
            at_fence = {t.thought_id for t in
                        await admin.scope(occ).get_thoughts_by_status(ThoughtStatus.PROCESSING)}
            wanted[0] = len(calls) + 5 * CLAIMERS  # every claimer tries again after the fence
            await asyncio.wait_for(enough.wait(), 30)
            stop.set()
            await asyncio.gather(*workers)
            after = {t.thought_id for t in
                     await admin.scope(occ).get_thoughts_by_status(ThoughtStatus.PROCESSING)}
            assert at_fence, "claims landed before the fence"
            assert after == at_fence, (
                f"round {round_}: {len(after - at_fence)} claim(s) committed after the fence")
            assert all(n == 0 for start, _, n in calls if start > fence_returned)
            overlapping += sum(1 for start, end, _ in calls
                               if start < fence_returned and end > fence_started)
        # the race was real: claims were in flight while fences committed
        print(f"\n{ROUNDS} rounds, {overlapping} claim statements overlapped a fence")
        assert overlapping > 0
    finally:
        for s in (admin, *claimers):
            await s.close()


async def test_fence_is_notified_on_postgresql(pg_url: str) -> None:
    import asyncpg

    store = await Store.open(pg_url, migrate=True)
    listener = await asyncpg.connect(pg_url)
    got: asyncio.Queue[str] = asyncio.Queue()
    try:
        await listener.add_listener(NOTIFY_CHANNEL, lambda *a: got.put_nowait(a[-1]))
        await store.registry.register("n-0")
        await store.registry.set_state("n-0", OccurrenceState.DRAINING, grace_seconds=3)
        assert await asyncio.wait_for(got.get(), 10) == "n-0"
        row = await store.registry.get("n-0")
        assert row is not None and row.drain_grace_seconds == 3
    finally:
        await listener.close()
        await store.close()
