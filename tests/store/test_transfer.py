"""Ownership transfer and the bulk drain: nothing lost, nothing owned twice, idempotent."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from occurrence_store import InFlightPolicy, Store, StoreError, TaskStatus, ThoughtStatus
from testing.drain_plan import explain_drain_batch

MOVABLE = {TaskStatus.PENDING, TaskStatus.ACTIVE, TaskStatus.DEFERRED}
"""Unfinished work: what a drain moves (the store's TRANSFERABLE_TASK_STATUSES, spelled out
here so that a change there has to change this test too)."""


async def _owners(store: Store, prefix: str) -> tuple[dict[str, str], dict[str, tuple[str, str]]]:
    """task_id -> owner, thought_id -> (task_id, owner) for one test's occurrences."""
    async with store.db.connection() as conn:
        tasks = await conn.fetch(
            "SELECT task_id, agent_occurrence_id FROM tasks WHERE agent_occurrence_id LIKE $1",
            prefix + "%")
        thoughts = await conn.fetch(
            "SELECT thought_id, source_task_id, agent_occurrence_id FROM thoughts "
            "WHERE agent_occurrence_id LIKE $1", prefix + "%")
    return ({r["task_id"]: r["agent_occurrence_id"] for r in tasks},
            {r["thought_id"]: (r["source_task_id"], r["agent_occurrence_id"]) for r in thoughts})


async def test_transfer_task_moves_thoughts_and_records(store: Store) -> None:
    a, b = store.scope("agent-0"), store.scope("agent-1")
    task = await a.add_task("t")
    await a.add_thought(task.task_id, "one")
    await a.add_thought(task.task_id, "two")
    assert await store.transfers.transfer_task_ownership(task.task_id, "agent-0", "agent-1",
                                                         reason="test")
    assert await a.get_task(task.task_id) is None
    assert (await b.get_task(task.task_id)) is not None
    assert len(await b.get_thoughts_by_task(task.task_id)) == 2
    # guarded: the old owner can no longer move it
    assert not await store.transfers.transfer_task_ownership(task.task_id, "agent-0", "agent-2")
    [record] = await store.transfers.transfers_for_task(task.task_id)
    assert (record.from_occurrence_id, record.to_occurrence_id, record.reason,
            record.thoughts_moved) == ("agent-0", "agent-1", "test", 2)


async def test_shared_task_thoughts_move_to_claimer(store: Store) -> None:
    task, won = await store.shared.try_claim_shared_task("wakeup", "agent-0")
    assert won
    async with store.db.connection() as conn:  # seed thoughts in the shared namespace
        for i in range(3):
            await conn.execute(
                "INSERT INTO thoughts (thought_id, source_task_id, agent_occurrence_id, status, "
                "content, created_at, updated_at) VALUES ($1, $2, '__shared__', 'pending', "
                "'seed', occurrence_now(), occurrence_now())", f"th-{i}", task.task_id)
    moved = await store.transfers.transfer_thought_ownership("__shared__", "agent-0",
                                                             task.task_id)
    assert moved == 3
    assert await store.scope("agent-0").count_thoughts() == 3
    assert await store.transfers.transfer_thought_ownership("__shared__", "agent-0",
                                                            task.task_id) == 0


async def test_drain_rejects_bad_targets(store: Store) -> None:
    with pytest.raises(StoreError):
        await store.transfers.drain("agent-1", [], in_flight=InFlightPolicy.RELEASE)
    with pytest.raises(StoreError):
        await store.transfers.drain("agent-1", ["agent-1"], in_flight=InFlightPolicy.RELEASE)


async def test_drain_balances_equal_survivors_and_is_idempotent(store: Store) -> None:
    gone = store.scope("agent-3")
    ids = await gone.add_tasks([f"t{i}" for i in range(100)])
    for tid in ids[:10]:
        await gone.add_thought(tid, "th")
    result = await store.transfers.drain("agent-3", ["agent-0", "agent-1", "agent-2"],
                                         in_flight=InFlightPolicy.RELEASE, batch_size=7)
    assert result.tasks_moved == 100 and result.thoughts_moved == 10
    assert sorted(result.per_target.values()) == [33, 33, 34]
    assert result.batches == 15 and result.complete
    assert await gone.count_tasks() == 0
    again = await store.transfers.drain("agent-3", ["agent-0", "agent-1", "agent-2"],
                                        in_flight=InFlightPolicy.RELEASE)
    assert again.tasks_moved == 0 and again.thoughts_moved == 0
    assert await store.transfers.count_transfers(from_occurrence_id="agent-3") == 100


async def test_drain_fills_the_least_loaded_first(store: Store) -> None:
    await store.scope("agent-0").add_tasks(["x"] * 10)
    await store.scope("agent-2").add_tasks(["y"] * 12)
    moved = await store.transfers.drain(
        "agent-2", ["agent-0", "agent-1"], in_flight=InFlightPolicy.RELEASE)
    assert moved.per_target == {"agent-1": 11, "agent-0": 1}
    assert await store.scope("agent-0").count_tasks() == 11
    assert await store.scope("agent-1").count_tasks() == 11


async def test_in_flight_policies(store: Store) -> None:
    gone = store.scope("agent-9")
    busy = await gone.add_task("busy")
    idle = await gone.add_task("idle")
    await gone.activate_pending_tasks(2)
    await gone.add_thought(busy.task_id, "working")
    await gone.add_thought(idle.task_id, "waiting")
    [claimed] = await gone.claim_pending_thoughts(1)
    assert claimed.source_task_id == busy.task_id

    left = await store.transfers.drain("agent-9", ["agent-0"], in_flight=InFlightPolicy.WAIT)
    assert left.tasks_moved == 1 and left.tasks_left_in_flight == 1 and not left.complete
    assert (await gone.get_task(busy.task_id)) is not None
    assert (await gone.get_thought(claimed.thought_id)).status == ThoughtStatus.PROCESSING

    released = await store.transfers.drain("agent-9", ["agent-0"],
                                           in_flight=InFlightPolicy.RELEASE)
    assert released.thoughts_released == 1 and released.tasks_moved == 1 and released.complete
    moved = await store.scope("agent-0").get_thought(claimed.thought_id)
    assert moved.status == ThoughtStatus.PENDING
    # the departing runtime can no longer finish a thought that moved away
    assert not await gone.update_thought_status(claimed.thought_id, ThoughtStatus.COMPLETED)


task_spec = st.tuples(
    st.sampled_from(list(TaskStatus)),
    st.lists(st.sampled_from([ThoughtStatus.PENDING, ThoughtStatus.PROCESSING,
                              ThoughtStatus.COMPLETED]), max_size=3),
)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    departing=st.lists(task_spec, max_size=60),
    survivor_loads=st.lists(st.integers(0, 20), min_size=1, max_size=4),
    equal=st.booleans(),
    policy=st.sampled_from(list(InFlightPolicy)),
    batch=st.integers(1, 50),
)
def test_drain_properties(db_url: str, departing, survivor_loads, equal, policy, batch) -> None:
    asyncio.run(_drain_properties(db_url, departing, survivor_loads, equal, policy, batch))


async def _drain_properties(db_url, departing, survivor_loads, equal, policy, batch) -> None:
    prefix = f"p{uuid.uuid4().hex[:8]}-"
    if equal:
        survivor_loads = [survivor_loads[0]] * len(survivor_loads)
    store = await Store.open(db_url, migrate=True)
    try:
        source = prefix + "gone"
        survivors = [f"{prefix}s{i}" for i in range(len(survivor_loads))]
        for sid, load in zip(survivors, survivor_loads, strict=True):
            await store.scope(sid).add_tasks(["load"] * load)
        scope = store.scope(source)
        busy_tasks = set()
        for status, thoughts in departing:
            task = await scope.add_task("w")
            for th_status in thoughts:
                th = await scope.add_thought(task.task_id, "th")
                await scope.update_thought_status(th.thought_id, th_status)
                if th_status == ThoughtStatus.PROCESSING and status in MOVABLE:
                    busy_tasks.add(task.task_id)
            await scope.update_task_status(task.task_id, status)
        before_tasks, before_thoughts = await _owners(store, prefix)

        result = await store.transfers.drain(source, survivors, in_flight=policy,
                                             batch_size=batch)

        after_tasks, after_thoughts = await _owners(store, prefix)
        assert set(after_tasks) == set(before_tasks)  # nothing lost, nothing duplicated
        assert set(after_thoughts) == set(before_thoughts)
        for th_id, (task_id, owner) in after_thoughts.items():
            assert owner == after_tasks[task_id], f"thought {th_id} did not follow its task"
        left = await scope.get_all_tasks()
        left_movable = {t.task_id for t in left if t.status in MOVABLE}
        expected_left = busy_tasks if policy is InFlightPolicy.WAIT else set()
        assert left_movable == expected_left
        assert result.tasks_left_in_flight == len(expected_left)
        moved = sum(1 for s, _ in departing if s in MOVABLE) - len(expected_left)
        assert result.tasks_moved == moved
        assert await store.transfers.count_transfers(from_occurrence_id=source) == moved
        if equal:
            counts = [await store.scope(s).count_tasks() for s in survivors]
            assert max(counts) - min(counts) <= 1
        again = await store.transfers.drain(source, survivors, in_flight=policy)
        assert again.tasks_moved == 0
    finally:
        await store.close()


def test_drain_killed_half_way_leaves_one_owner_and_completes(db_url: str, tmp_path) -> None:
    asyncio.run(_killed_drain(db_url))


async def _killed_drain(db_url: str) -> None:
    n = 3000
    store = await Store.open(db_url, migrate=True)
    try:
        for occ in ("k-0", "k-1", "k-2"):
            await store.registry.register(occ)
        ids = await store.scope("k-2").add_tasks(["w"] * n)
        for tid in ids[:300]:
            await store.scope("k-2").add_thought(tid, "th")
        env = {**os.environ, "DATABASE_URL": db_url}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "occurrence_store.cli", "drain", "--from", "k-2",
            "--to", "k-0,k-1", "--batch-size", "10",
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while await store.transfers.count_transfers(from_occurrence_id="k-2") < 200:
            assert proc.returncode is None, "drain exited before it was killed"
            assert loop.time() < deadline, "drain made no progress"
            await asyncio.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        await asyncio.wait_for(proc.wait(), 30)
        moved_before = await store.transfers.count_transfers(from_occurrence_id="k-2")
        assert 0 < moved_before < n, "kill landed outside the drain"

        owners, thoughts = await _owners(store, "k-")
        assert len(owners) == n
        for _th, (task_id, owner) in thoughts.items():
            assert owners[task_id] == owner
        assert Counter(owners.values())["k-2"] == n - moved_before

        result = await store.transfers.drain("k-2", ["k-0", "k-1"],
                                             in_flight=InFlightPolicy.RELEASE)
        assert result.tasks_moved == n - moved_before
        owners, _ = await _owners(store, "k-")
        assert Counter(owners.values()) == {"k-0": n // 2, "k-1": n // 2}
        assert await store.transfers.count_transfers(from_occurrence_id="k-2") == n
    finally:
        await store.close()


async def test_rebalance_moves_only_pending_excess(store: Store) -> None:
    old = store.scope("agent-0")
    await old.add_tasks(["backlog"] * 30)
    await old.activate_pending_tasks(4)  # active work is never taken away
    moved = await store.transfers.rebalance(["agent-0", "agent-1", "agent-2"],
                                            reason="scale-up")
    counts = {o: await store.scope(o).count_tasks(TaskStatus.PENDING)
              for o in ("agent-0", "agent-1", "agent-2")}
    assert moved == {"agent-0": {"agent-1": 9, "agent-2": 8}}  # 26 pending: 9 + 9 + 8
    assert counts == {"agent-0": 9, "agent-1": 9, "agent-2": 8}
    assert await old.count_tasks(TaskStatus.ACTIVE) == 4
    assert await store.transfers.count_transfers(from_occurrence_id="agent-0") == 17
    again = await store.transfers.rebalance(["agent-0", "agent-1", "agent-2"])
    assert again == {}
    assert await store.transfers.rebalance(["agent-0"]) == {}


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(loads=st.lists(st.integers(0, 25), min_size=2, max_size=5))
def test_rebalance_evens_out_any_backlog(db_url: str, loads: list[int]) -> None:
    asyncio.run(_rebalance_property(db_url, loads))


async def _rebalance_property(db_url: str, loads: list[int]) -> None:
    prefix = f"r{uuid.uuid4().hex[:8]}-"
    members = [f"{prefix}{i}" for i in range(len(loads))]
    store = await Store.open(db_url, migrate=True)
    try:
        for member, load in zip(members, loads, strict=True):
            await store.scope(member).add_tasks(["w"] * load)
        before, _ = await _owners(store, prefix)
        await store.transfers.rebalance(members)
        after, _ = await _owners(store, prefix)
        assert set(after) == set(before)
        counts = Counter(after.values())
        finals = [counts.get(m, 0) for m in members]
        assert max(finals) - min(finals) <= 1, (loads, finals)
    finally:
        await store.close()


async def test_a_drain_stays_linear_on_stale_statistics(pg_url: str) -> None:
    """Statistics taken while the table held a handful of tasks make the planner expect one
    row on each side of every join in a drain batch. Without a guard it joins the moved
    tasks, their thoughts and their counts in nested loops without an index: quadratic in
    the batch (a 20,000-task drain ran 96 s instead of 0.4 s, past the operator's statement
    timeout). The batch's plan holds no nested loop, and the drain moves everything once."""
    async with await Store.open(pg_url, migrate=True) as store:
        await store.scope("stale-0").add_tasks([f"s{i}" for i in range(10)])
        async with store.db.connection() as conn:
            await conn.execute("ANALYZE tasks")
            await conn.execute("ANALYZE thoughts")
        departing = store.scope("stale-1")
        ids = await departing.add_tasks([f"t{i}" for i in range(2_000)])
        for task_id in ids[:200]:
            await departing.add_thought(task_id, "a thought")

        plan = "\n".join(await explain_drain_batch(store, "stale-1", ["stale-0"], limit=25_000,
                                                    movable=len(ids)))
        assert "Nested Loop" not in plan, plan

        result = await store.transfers.drain("stale-1", ["stale-0"],
                                             in_flight=InFlightPolicy.RELEASE)
        assert result.tasks_moved == len(ids) and result.thoughts_moved == 200
        assert await departing.count_tasks() == 0
        async with store.db.connection() as conn:
            recorded = await conn.fetchval(
                "SELECT count(DISTINCT task_id) FROM task_transfers WHERE from_occurrence_id = $1",
                "stale-1")
        assert recorded == len(ids)
