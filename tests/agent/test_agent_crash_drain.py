"""Crash, drain and SIGTERM: nothing lost, nothing completed twice, draining owns nothing."""

from __future__ import annotations

import asyncio
import collections
import signal
from pathlib import Path

import aiohttp
import pytest

from occurrence_store import InFlightPolicy, OccurrenceState, Store, TaskStatus, ThoughtStatus
from testing.agentproc import Agent, migrate, running_agents
from testing.waiting import wait_for_async

TIMEOUT = aiohttp.ClientTimeout(total=30)


def _completions(*agents: Agent) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    for agent in agents:
        for event in agent.journal_events():
            if event["event"] == "thought_completed":
                counts[event["thought_id"]] += 1
    return counts


def _started(agent: Agent) -> list[dict]:
    return [e for e in agent.journal_events() if e["event"] == "thought_started"]


@pytest.mark.timeout(180)
async def test_sigkill_mid_thought_then_restart_completes_exactly_once(
    db_url: str, tmp_path: Path
) -> None:
    await migrate(db_url)
    store = await Store.open(db_url)
    try:
        async with running_agents(["crashy-0"], db_url, tmp_path,
                                  **{"--thought-concurrency": "2"}) as (agent,), \
                aiohttp.ClientSession(timeout=TIMEOUT) as http:
            await agent.wait_ready(http)
            ids = await agent.submit_all(http, 4, "slow", context={"work_ms": 1500, "thoughts": 2})
            await wait_for_async(lambda: _started(agent), 20, "a thought to start")
            await asyncio.sleep(0.3)  # well inside the 1.5 s of simulated work
            first_pid = agent.proc.pid
            agent.signal(signal.SIGKILL)
            assert await agent.wait_exit(10) == -signal.SIGKILL

            scoped = store.scope("crashy-0")
            stuck = await scoped.get_thoughts_by_status(ThoughtStatus.PROCESSING)
            assert stuck, "the crash left thoughts PROCESSING"
            stuck_ids = {t.thought_id for t in stuck}

            agent.start()  # same id
            await agent.wait_ready(http)
            assert any(e.get("event") == "worker.reclaimed" and e["reclaimed"] >= 1
                       for e in agent.events())

            async def all_done() -> bool:
                return await scoped.count_tasks(TaskStatus.COMPLETED) == len(ids)

            await wait_for_async(all_done, 60, "all tasks completed after restart", interval=0.2)
            thoughts = [t for tid in ids for t in await scoped.get_thoughts_by_task(tid)]
            assert len(thoughts) == 2 * len(ids)
            assert all(t.status == ThoughtStatus.COMPLETED for t in thoughts)
            # The interrupted thoughts resumed and were completed by the new process.
            for thought in thoughts:
                if thought.thought_id in stuck_ids:
                    assert thought.final_action["pid"] == agent.proc.pid != first_pid
            counts = _completions(agent)
            assert set(counts) == {t.thought_id for t in thoughts}
            assert max(counts.values()) == 1, "no thought completed twice"
            started = collections.Counter(e["thought_id"] for e in _started(agent))
            assert all(started[t] == 2 for t in stuck_ids), "interrupted ones ran again"
    finally:
        await store.close()


@pytest.mark.timeout(180)
async def test_draining_occurrence_refuses_work_releases_in_flight_and_owns_nothing(
    db_url: str, tmp_path: Path
) -> None:
    await migrate(db_url)
    store = await Store.open(db_url)
    try:
        async with running_agents(["drain-0", "drain-1"], db_url, tmp_path,
                                  **{"--drain-timeout": "1"}) as (leaving, staying), \
                aiohttp.ClientSession(timeout=TIMEOUT) as http:
            await asyncio.gather(leaving.wait_ready(http), staying.wait_ready(http))
            # long thoughts: the drain timeout (1 s) cuts them off
            ids = await leaving.submit_all(http, 6, "long", context={"work_ms": 4000})
            scoped = store.scope("drain-0")

            async def processing() -> bool:
                return bool(await scoped.get_thoughts_by_status(ThoughtStatus.PROCESSING))

            await wait_for_async(processing, 20, "in-flight thoughts on drain-0")
            await store.registry.set_state("drain-0", OccurrenceState.DRAINING)

            async def quiesced() -> bool:
                occ = await store.registry.get("drain-0")
                return occ is not None and occ.quiesced

            await wait_for_async(quiesced, 20, "drain-0 to report quiesced")
            status, body = await leaving.submit(http, "refused")
            assert status == 503 and "draining" in body["error"]
            assert (await leaving.get(http, "/readyz"))[0] == 503
            assert not await scoped.get_thoughts_by_status(ThoughtStatus.PROCESSING)
            released = sum(e.get("released", 0) for e in leaving.events()
                           if e.get("event") == "worker.quiesced")
            assert released >= 1, "in-flight thoughts were released at the drain timeout"

            result = await store.transfers.drain("drain-0", ["drain-1"],
                                                 in_flight=InFlightPolicy.WAIT)
            assert result.complete and result.tasks_left_in_flight == 0
            assert await scoped.count_tasks(TaskStatus.PENDING) == 0
            assert await scoped.count_tasks(TaskStatus.ACTIVE) == 0
            await asyncio.sleep(1.0)  # the fenced runtime creates nothing afterwards
            assert await scoped.count_tasks(TaskStatus.PENDING) == 0
            assert await scoped.count_tasks(TaskStatus.ACTIVE) == 0
            assert await scoped.count_thoughts(ThoughtStatus.PENDING) == 0

            other = store.scope("drain-1")

            async def survivor_done() -> bool:
                return await other.count_tasks(TaskStatus.COMPLETED) == len(ids)

            await wait_for_async(survivor_done, 60, "the survivor to finish the moved work",
                                 interval=0.25)
            assert max(_completions(leaving, staying).values()) == 1
    finally:
        await store.close()


@pytest.mark.timeout(180)
async def test_sigterm_mid_work_exits_zero_and_loses_nothing(
    db_url: str, tmp_path: Path
) -> None:
    await migrate(db_url)
    store = await Store.open(db_url)
    try:
        async with running_agents(["term-0"], db_url, tmp_path,
                                  **{"--drain-timeout": "5"}) as (agent,), \
                aiohttp.ClientSession(timeout=TIMEOUT) as http:
            await agent.wait_ready(http)
            ids = await agent.submit_all(http, 12, "t", context={"work_ms": 400})
            await wait_for_async(lambda: _started(agent), 20, "work to start")
            agent.signal(signal.SIGTERM)
            assert await agent.wait_exit(10) == 0, agent.log()[-2000:]
            scoped = store.scope("term-0")
            assert not await scoped.get_thoughts_by_status(ThoughtStatus.PROCESSING)
            assert any(e.get("event") == "runtime.stopped" for e in agent.events())
            assert (await store.registry.get("term-0")).quiesced
            done_before = await scoped.count_tasks(TaskStatus.COMPLETED)
            assert done_before < len(ids), "SIGTERM came mid-work"
            assert await scoped.count_tasks() == len(ids)

            agent.start()

            async def all_done() -> bool:
                return await scoped.count_tasks(TaskStatus.COMPLETED) == len(ids)

            await wait_for_async(all_done, 60, "the rest after restart", interval=0.2)
            counts = _completions(agent)
            assert len(counts) == len(ids) and max(counts.values()) == 1
    finally:
        await store.close()


@pytest.mark.timeout(180)
async def test_with_recovery_fail_a_thought_stranded_by_a_crash_is_failed_not_rerun(
    db_url: str, tmp_path: Path
) -> None:
    """spec.recovery.inFlight: fail — what may have had side effects never runs twice."""
    await migrate(db_url)
    store = await Store.open(db_url)
    try:
        async with running_agents(["careful-0"], db_url, tmp_path,
                                  **{"--in-flight-recovery": "fail"}) as (agent,), \
                aiohttp.ClientSession(timeout=TIMEOUT) as http:
            await agent.wait_ready(http)
            ids = await agent.submit_all(http, 3, "pay", context={"work_ms": 3000})
            await wait_for_async(lambda: _started(agent), 20, "a thought to start")
            agent.signal(signal.SIGKILL)
            assert await agent.wait_exit(10) == -signal.SIGKILL
            scoped = store.scope("careful-0")
            stuck = {t.thought_id for t in await scoped.get_thoughts_by_status(
                ThoughtStatus.PROCESSING)}
            assert stuck

            agent.start()
            await agent.wait_ready(http)

            async def settled() -> bool:
                tasks = [await scoped.get_task(t) for t in ids]
                return all(t.status in (TaskStatus.COMPLETED, TaskStatus.FAILED) for t in tasks)

            await wait_for_async(settled, 60, "every task completed or failed", interval=0.2)
            for task_id in ids:
                task = await scoped.get_task(task_id)
                [thought] = await scoped.get_thoughts_by_task(task_id)
                if thought.thought_id in stuck:
                    assert task.status == TaskStatus.FAILED
                    assert "left processing by a previous run" in task.outcome["reason"]
                else:
                    assert task.status == TaskStatus.COMPLETED
            started = collections.Counter(e["thought_id"] for e in _started(agent))
            assert all(started[t] == 1 for t in stuck), "a stranded thought ran again"
    finally:
        await store.close()
