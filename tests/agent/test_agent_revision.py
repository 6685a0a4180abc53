"""A real agent process stamps its revision on the work it finishes; the tasks a bad revision
failed are given back (store.requeues, what a rollback does) and the good revision completes
them — each task once, on the occurrence that owns it (real PostgreSQL, real processes)."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from occurrence_store import Store, TaskStatus
from tests.agent.agentproc import Agent, migrate, stop_agents, wait_for

AGENT_ID = "team/rev"
TASKS = 20


async def _statuses(store: Store, occurrence: str) -> dict[str, TaskStatus]:
    return {t.task_id: t.status for t in await store.scope(occurrence).get_all_tasks()}


async def test_a_bad_revisions_failures_go_back_and_the_good_one_completes_them(
        pg_url: str, tmp_path: Path) -> None:
    await migrate(pg_url)
    agent = Agent("rev-0", pg_url, tmp_path, {
        "--agent-id": AGENT_ID, "--revision": "bad", "--simulated-failure-ratio": "1",
        "--simulated-work-ms": "1"})
    store = await Store.open(pg_url)
    try:
        async with aiohttp.ClientSession() as http:
            agent.start()
            await agent.wait_ready(http)
            ids = await agent.submit_all(http, TASKS, "work")

            async def all_failed() -> bool:
                statuses = await _statuses(store, "rev-0")
                return len(statuses) == TASKS and set(statuses.values()) == {TaskStatus.FAILED}

            await wait_for(all_failed, 60, "the bad revision to fail every task")
            row = await store.registry.get("rev-0")
            assert row is not None and row.revision == "bad"
            status, text = await agent.get(http, "/metrics")
            assert status == 200
            assert 'occurrence_revision_info{occurrence_id="rev-0",revision="bad"} 1.0' in text
            await stop_agents([agent], 15)

            back = await store.requeues.give_back(AGENT_ID, "bad", ["rev-0"],
                                                  since_seconds=600, reason="rolled back")
            assert back == sorted(ids)
            assert await store.requeues.give_back(
                AGENT_ID, "bad", ["rev-0"], since_seconds=600, reason="again") == []

            agent.options.update({"--revision": "good", "--simulated-failure-ratio": "0"})
            agent.start()
            await agent.wait_ready(http)

            async def all_completed() -> bool:
                statuses = await _statuses(store, "rev-0")
                return set(statuses.values()) == {TaskStatus.COMPLETED}

            await wait_for(all_completed, 60, "the good revision to complete every task")
            row = await store.registry.get("rev-0")
            assert row is not None and row.revision == "good"
            # nothing left for the bad revision to give back, each task given back once
            assert await store.requeues.give_back(
                AGENT_ID, "bad", ["rev-0"], since_seconds=600, reason="again") == []
            records = await store.requeues.records(AGENT_ID, revision="bad")
            assert sorted(r.task_id for r in records) == sorted(ids)
            assert await store.requeues.give_back(
                AGENT_ID, "good", ["rev-0"], since_seconds=600, reason="none failed") == []
    finally:
        await stop_agents([agent], 15)
        await store.close()
