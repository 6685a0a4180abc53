"""Two occurrences never see or change each other's tasks and thoughts: every scoped call."""

from __future__ import annotations

import pytest

from occurrence_store import (
    InvalidOccurrenceId,
    NotOwnedError,
    Store,
    TaskStatus,
    ThoughtStatus,
)


@pytest.fixture
async def two(store: Store):
    a, b = store.scope("agent-0"), store.scope("agent-1")
    ta = await a.add_task("a's task", channel_id="chan")
    tb = await b.add_task("b's task", channel_id="chan")
    return a, b, ta, tb


async def test_add_task_stamps_owner(two) -> None:
    a, b, ta, tb = two
    assert ta.agent_occurrence_id == "agent-0"
    assert tb.agent_occurrence_id == "agent-1"


async def test_reads_are_scoped(two) -> None:
    a, b, ta, tb = two
    assert await a.get_task(tb.task_id) is None
    assert await b.get_task(ta.task_id) is None
    assert [t.task_id for t in await a.get_all_tasks()] == [ta.task_id]
    assert [t.task_id for t in await a.get_tasks_by_status(TaskStatus.PENDING)] == [ta.task_id]
    assert await a.count_tasks() == 1
    assert await a.count_tasks(TaskStatus.PENDING) == 1
    assert [t.task_id for t in await b.get_pending_tasks_for_activation(10)] == [tb.task_id]


async def test_update_status_refused_cross_occurrence(two) -> None:
    a, b, ta, tb = two
    assert await a.update_task_status(tb.task_id, TaskStatus.COMPLETED) is False
    assert (await b.get_task(tb.task_id)).status == TaskStatus.PENDING
    assert await a.update_task_status(ta.task_id, TaskStatus.COMPLETED) is True
    assert (await a.get_task(ta.task_id)).status == TaskStatus.COMPLETED


async def test_activation_only_touches_own(two) -> None:
    a, b, ta, tb = two
    activated = await a.activate_pending_tasks(10)
    assert [t.task_id for t in activated] == [ta.task_id]
    assert (await b.get_task(tb.task_id)).status == TaskStatus.PENDING
    assert (await a.get_active_task_for_channel("chan")).task_id == ta.task_id
    assert await b.get_active_task_for_channel("chan") is None


async def test_activate_respects_limit_and_priority(store: Store) -> None:
    a = store.scope("agent-0")
    low = [await a.add_task(f"low {i}") for i in range(3)]
    high = await a.add_task("high", priority=5)
    activated = await a.activate_pending_tasks(2)
    assert [t.task_id for t in activated] == [high.task_id, low[0].task_id]
    assert await a.count_tasks(TaskStatus.ACTIVE) == 2
    assert await a.activate_pending_tasks(0) == []


async def test_updated_info_flag_refused_cross_occurrence(two) -> None:
    a, b, ta, tb = two
    assert await a.set_task_updated_info_flag(tb.task_id, "news") is False
    assert (await b.get_task(tb.task_id)).updated_info_available is False
    assert await b.set_task_updated_info_flag(tb.task_id, "news") is True
    task = await b.get_task(tb.task_id)
    assert task.updated_info_available is True and task.updated_info_content == "news"


async def test_thoughts_are_scoped(two) -> None:
    a, b, ta, tb = two
    th = await a.add_thought(ta.task_id, "think")
    assert th.agent_occurrence_id == "agent-0"
    with pytest.raises(NotOwnedError):
        await a.add_thought(tb.task_id, "not mine")
    assert await b.get_thoughts_by_task(tb.task_id) == []
    assert await b.get_thoughts_by_task(ta.task_id) == []
    assert await b.get_thought(th.thought_id) is None
    assert [t.thought_id for t in await a.get_thoughts_by_task(ta.task_id)] == [th.thought_id]
    assert await b.update_thought_status(th.thought_id, ThoughtStatus.COMPLETED) is False
    assert (await a.get_thought(th.thought_id)).status == ThoughtStatus.PENDING
    assert await b.count_thoughts() == 0 and await a.count_thoughts() == 1


async def test_pending_thoughts_for_active_tasks_and_claim(two) -> None:
    a, b, ta, tb = two
    tha = await a.add_thought(ta.task_id, "a1")
    await b.add_thought(tb.task_id, "b1")
    assert await a.get_pending_thoughts_for_active_tasks() == []  # task not active yet
    await a.activate_pending_tasks(5)
    await b.activate_pending_tasks(5)
    assert [t.thought_id for t in await a.get_pending_thoughts_for_active_tasks()] == [
        tha.thought_id
    ]
    claimed = await a.claim_pending_thoughts(10)
    assert [t.thought_id for t in claimed] == [tha.thought_id]
    assert claimed[0].status == ThoughtStatus.PROCESSING
    assert await a.claim_pending_thoughts(10) == []
    assert len(await b.get_thoughts_by_status(ThoughtStatus.PENDING)) == 1
    assert await a.update_thought_status(
        tha.thought_id, ThoughtStatus.COMPLETED, expected_status=ThoughtStatus.PROCESSING,
        final_action={"action": "speak"},
    )
    done = await a.get_thought(tha.thought_id)
    assert done.status == ThoughtStatus.COMPLETED and done.final_action == {"action": "speak"}


async def test_reset_processing_only_own(two) -> None:
    a, b, ta, tb = two
    await a.add_thought(ta.task_id, "a1")
    await b.add_thought(tb.task_id, "b1")
    await a.activate_pending_tasks(5)
    await b.activate_pending_tasks(5)
    await a.claim_pending_thoughts(5)
    await b.claim_pending_thoughts(5)
    assert await a.reset_processing_thoughts() == 1
    assert await a.count_thoughts(ThoughtStatus.PENDING) == 1
    assert await b.count_thoughts(ThoughtStatus.PROCESSING) == 1


async def test_task_context_round_trips(store: Store) -> None:
    a = store.scope("agent-0")
    task = await a.add_task("ctx", context={"user": "u1", "n": 3})
    assert (await a.get_task(task.task_id)).context == {"user": "u1", "n": 3}
    assert await a.update_task_status(task.task_id, TaskStatus.COMPLETED, outcome={"ok": True})
    assert (await a.get_task(task.task_id)).outcome == {"ok": True}


async def test_bulk_add(store: Store) -> None:
    a = store.scope("agent-0")
    ids = await a.add_tasks(["x"] * 50)
    assert len(set(ids)) == 50
    assert await a.count_tasks(TaskStatus.PENDING) == 50
    assert await store.scope("agent-1").count_tasks() == 0


@pytest.mark.parametrize("bad", ["", "__shared__", "-x", "a b", "x/y", "a" * 300])
async def test_invalid_occurrence_ids_rejected(store: Store, bad: str) -> None:
    with pytest.raises(InvalidOccurrenceId):
        store.scope(bad)
