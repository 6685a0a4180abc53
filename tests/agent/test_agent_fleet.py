"""Several runtime processes on one database: one wakeup, all ready, own work only, none lost."""

from __future__ import annotations

import asyncio
import collections
import time
from pathlib import Path

import aiohttp
import pytest

from occurrence_store import Store, TaskStatus, ThoughtStatus
from testing.agentproc import migrate, running_agents
from testing.waiting import wait_for_async

OCCURRENCES = 5
TASKS_PER_OCCURRENCE = 100


@pytest.mark.timeout(240)
async def test_fleet_wakes_once_and_processes_only_own_work(
    db_url: str, tmp_path: Path
) -> None:
    await migrate(db_url)
    ids = [f"agent-{i}" for i in range(OCCURRENCES)]
    async with running_agents(ids, db_url, tmp_path, **{"--max-active-tasks": "8"}) as agents, \
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        await asyncio.gather(*(a.wait_ready(http) for a in agents))

        # Exactly one performed the wakeup; the others joined after it.
        performed = [a for a in agents
                     if any(e.get("event") == "wakeup.performed" for e in a.events())]
        joined = [a for a in agents
                  if any(e.get("event") == "wakeup.joined" for e in a.events())]
        assert len(performed) == 1, [a.occurrence_id for a in performed]
        assert len(joined) == OCCURRENCES - 1
        statuses = [(await a.get(http, "/status"))[1] for a in agents]
        assert all(s["ready"] for s in statuses)
        assert sum(s["wakeup"]["performed"] for s in statuses) == 1
        assert {s["wakeup"]["performed_by"] for s in statuses} == {performed[0].occurrence_id}

        # Concurrent submissions to every occurrence.
        started = time.monotonic()

        async def submit_all(agent_index: int) -> list[str]:
            agent = agents[agent_index]
            results = await asyncio.gather(*(
                agent.submit(http, f"{agent.occurrence_id} task {n}",
                             context={"work_ms": 5 + n % 7})
                for n in range(TASKS_PER_OCCURRENCE)))
            assert all(status == 201 for status, _ in results), results[:3]
            return [body["task_id"] for _, body in results]

        submitted = await asyncio.gather(*(submit_all(i) for i in range(OCCURRENCES)))
        total = OCCURRENCES * TASKS_PER_OCCURRENCE

        store = await Store.open(db_url)
        try:
            async def all_done() -> bool:
                done = 0
                for oid in ids:
                    done += await store.scope(oid).count_tasks(TaskStatus.COMPLETED)
                return done == total

            await wait_for_async(all_done, 120, f"{total} tasks completed", interval=0.25)
            elapsed = time.monotonic() - started
            print(f"\nstress[{store.dialect}]: {OCCURRENCES} occurrences, {total} tasks "
                  f"submitted and completed in {elapsed:.2f}s")

            for oid, task_ids in zip(ids, submitted, strict=True):
                scoped = store.scope(oid)
                tasks = {t.task_id: t for t in await scoped.get_all_tasks()}
                assert set(tasks) == set(task_ids), "each occurrence owns exactly its own"
                for task in tasks.values():
                    assert task.status == TaskStatus.COMPLETED
                    assert task.outcome["by"] == oid, "completed by its owner"
                    thoughts = await scoped.get_thoughts_by_task(task.task_id)
                    assert [t.status for t in thoughts] == [ThoughtStatus.COMPLETED]
                    assert thoughts[0].final_action["by"] == oid
        finally:
            await store.close()

        # No thought completed twice; every completion by the owner's own process.
        completions: collections.Counter[str] = collections.Counter()
        for agent in agents:
            for event in agent.journal_events():
                if event["event"] == "thought_completed":
                    completions[event["thought_id"]] += 1
                    assert event["occurrence_id"] == agent.occurrence_id
        assert len(completions) == total
        assert max(completions.values()) == 1

        # Every log line is one JSON object carrying the occurrence id.
        for agent in agents:
            events = agent.events()
            assert events
            assert all(e["occurrence_id"] == agent.occurrence_id for e in events)
