"""Thoughts taken out of processing: back to pending with backoff, or FAILED with a reason."""

from __future__ import annotations

from occurrence_store import Store, ThoughtStatus


async def _claimed(store: Store, occurrence_id: str, n: int) -> list:
    scoped = store.scope(occurrence_id)
    await scoped.add_tasks([f"t{i}" for i in range(n)])
    for task in await scoped.activate_pending_tasks(n):
        await scoped.add_thought(task.task_id, "think")
    return await scoped.claim_pending_thoughts(n)


async def test_claims_count_attempts_and_backoff_delays_the_next(store: Store) -> None:
    [thought] = await _claimed(store, "r-0", 1)
    assert thought.attempts == 1 and thought.attempt_key == f"thought:{thought.thought_id}"
    scoped = store.scope("r-0")
    [back] = await scoped.release_thoughts(thought_ids=[thought.thought_id], reason="db blip",
                                           max_attempts=3, backoff_seconds=30)
    assert back.status == ThoughtStatus.PENDING and back.last_error == "db blip"
    assert back.retry_at is not None
    assert await scoped.claim_pending_thoughts(5) == []  # backing off
    store.clock.advance(seconds=31)
    [again] = await scoped.claim_pending_thoughts(5)
    assert again.thought_id == thought.thought_id and again.attempts == 2
    assert again.retry_at is None and again.attempt_key == thought.attempt_key


async def test_the_last_attempt_fails_the_thought_with_its_reason(store: Store) -> None:
    [thought] = await _claimed(store, "r-1", 1)
    scoped = store.scope("r-1")
    for attempt in (1, 2):
        [back] = await scoped.release_thoughts(thought_ids=[thought.thought_id],
                                               reason=f"boom {attempt}", max_attempts=3)
        assert back.status == ThoughtStatus.PENDING
        [thought] = await scoped.claim_pending_thoughts(1)
    assert thought.attempts == 3
    [failed] = await scoped.release_thoughts(thought_ids=[thought.thought_id], reason="boom 3",
                                             max_attempts=3)
    assert failed.status == ThoughtStatus.FAILED
    assert failed.final_action == {"action": "fail", "by": "r-1", "reason": "boom 3",
                                   "result": {"error": "boom 3"}}
    assert await scoped.claim_pending_thoughts(1) == []


async def test_fail_policy_exclusions_and_guards(store: Store) -> None:
    thoughts = await _claimed(store, "r-2", 3)
    scoped = store.scope("r-2")
    working, stranded, done = thoughts
    assert await scoped.update_thought_status(done.thought_id, ThoughtStatus.COMPLETED)
    released = await scoped.release_thoughts(reason="stranded", exclude=[working.thought_id],
                                             fail=True)
    assert [t.thought_id for t in released] == [stranded.thought_id]
    assert released[0].status == ThoughtStatus.FAILED
    assert (await scoped.get_thought(working.thought_id)).status == ThoughtStatus.PROCESSING
    assert (await scoped.get_thought(done.thought_id)).status == ThoughtStatus.COMPLETED
    # another occurrence's handle changes nothing
    assert await store.scope("r-3").release_thoughts(reason="x") == []
    assert await scoped.release_thoughts(reason="x", thought_ids=[]) == []
