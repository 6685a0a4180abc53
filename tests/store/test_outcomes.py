"""store.outcomes: what some occurrences finished over a recent window (rollout gates)."""

from __future__ import annotations

import pytest

from occurrence_store import Store, TaskStatus, ThoughtStatus


async def _finish(store: Store, occurrence: str, completed: int, failed: int) -> None:
    scoped = store.scope(occurrence)
    for i in range(completed + failed):
        task = await scoped.add_task(f"{occurrence} task {i}")
        thought = await scoped.add_thought(task.task_id, "think")
        done = i < completed
        await scoped.update_thought_status(
            thought.thought_id, ThoughtStatus.COMPLETED if done else ThoughtStatus.FAILED)
        await scoped.update_task_status(
            task.task_id, TaskStatus.COMPLETED if done else TaskStatus.FAILED)


async def test_counts_only_the_named_occurrences_within_the_window(store: Store) -> None:
    await _finish(store, "old-canary", 5, 5)  # finished before the window
    store.clock.advance(seconds=600)
    await _finish(store, "canary-3", 2, 6)
    await _finish(store, "stable-0", 9, 1)
    await _finish(store, "stable-1", 10, 0)
    await store.scope("stable-1").add_task("still pending")  # not finished: not counted

    canary = await store.outcomes.finished(["canary-3", "old-canary"], seconds=300)
    assert (canary.tasks_completed, canary.tasks_failed) == (2, 6)
    assert (canary.thoughts_completed, canary.thoughts_failed) == (2, 6)
    assert canary.tasks_finished == 8 and canary.occurrences == 2
    stable = await store.outcomes.finished(["stable-0", "stable-1"], seconds=300)
    assert (stable.tasks_completed, stable.tasks_failed, stable.thoughts_finished) == (19, 1, 20)
    everything = await store.outcomes.finished(["old-canary"], seconds=3600)
    assert everything.tasks_finished == 10


async def test_no_occurrences_or_no_window_counts_nothing(store: Store) -> None:
    await _finish(store, "a-0", 1, 1)
    assert (await store.outcomes.finished([], seconds=60)).tasks_finished == 0
    assert (await store.outcomes.finished(["a-0"], seconds=0)).tasks_finished == 0
    with pytest.raises(ValueError, match="at most 1000"):
        await store.outcomes.finished([f"a-{k}" for k in range(1001)], seconds=60)


AGENT = "ns/web"


async def test_by_revision_counts_the_work_a_revision_did_on_whichever_pod(store: Store) -> None:
    # web-2 runs the canary and fails its work; then the rollout moves on and web-1 takes the
    # canary revision too, while web-2 is rolled back to stable — same ids, other revisions
    await store.registry.register("web-0", agent_id=AGENT, revision="stable")
    await store.registry.register("web-1", agent_id=AGENT, revision="stable")
    await store.registry.register("web-2", agent_id=AGENT, revision="canary")
    await _finish(store, "web-0", 4, 0)
    await _finish(store, "web-1", 3, 1)
    await _finish(store, "web-2", 1, 3)
    await store.registry.register("web-1", agent_id=AGENT, revision="canary")
    await store.registry.register("web-2", agent_id=AGENT, revision="stable")
    await _finish(store, "web-1", 0, 2)
    await _finish(store, "web-2", 5, 0)
    # another agent on the same database with a revision of the same name
    await store.registry.register("other-0", agent_id="ns/other", revision="canary")
    await _finish(store, "other-0", 0, 7)

    canary = await store.outcomes.finished(["web-1", "web-2"], seconds=300, agent_id=AGENT,
                                           revision="canary")
    assert (canary.tasks_completed, canary.tasks_failed) == (1, 5)
    assert (canary.thoughts_completed, canary.thoughts_failed) == (1, 5)
    assert canary.occurrences == 2
    stable = await store.outcomes.finished(["web-0"], seconds=300, agent_id=AGENT,
                                           revision="stable")
    assert (stable.tasks_completed, stable.tasks_failed) == (12, 1)
    # by pod, web-2 mixes both revisions' work
    by_pod = await store.outcomes.finished(["web-2"], seconds=300)
    assert (by_pod.tasks_completed, by_pod.tasks_failed) == (6, 3)


async def test_work_with_no_revision_falls_back_to_the_occurrences_named(store: Store) -> None:
    # the stable image predates revisions: its occurrences register none
    await store.registry.register("web-0", agent_id=AGENT)
    await store.registry.register("web-1", agent_id=AGENT, revision="canary")
    await _finish(store, "web-0", 6, 2)
    await _finish(store, "web-1", 1, 1)
    stable = await store.outcomes.finished(["web-0"], seconds=300, agent_id=AGENT,
                                           revision="stable")
    assert (stable.tasks_completed, stable.tasks_failed) == (6, 2)
    canary = await store.outcomes.finished(["web-1"], seconds=300, agent_id=AGENT,
                                           revision="canary")
    assert (canary.tasks_completed, canary.tasks_failed) == (1, 1)
    with pytest.raises(ValueError, match="go together"):
        await store.outcomes.finished(["web-0"], seconds=60, revision="stable")
    with pytest.raises(ValueError, match="empty"):
        await store.outcomes.finished(["web-0"], seconds=60, agent_id=AGENT, revision=" ")
