"""A real agent process stamps its revision on the work it finishes; the tasks a bad revision
failed are given back (store.requeues, what a rollback does) and the good revision completes
them — each task once, on the occurrence that owns it (real PostgreSQL, real processes)."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from occurrence_store import Store, TaskStatus
from testing.agentproc import Agent, migrate, stop_agents
from testing.waiting import wait_for_async

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

            await wait_for_async(all_failed, 60, "the bad revision to fail every task")
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

            await wait_for_async(all_completed, 60, "the good revision to complete every task")
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


async def test_an_agent_follows_its_track_from_the_database(pg_url: str, tmp_path: Path) -> None:
    """The operator pins the agent's decisions to the stable revision while a canary rollout
    is under way: a process on another revision reports the canary track (status, metric)
    from its next heartbeat, and the stable track once the pin is gone."""
    await migrate(pg_url)
    agent_id = "team/track"
    agent = Agent("trk-0", pg_url, tmp_path, {
        "--agent-id": agent_id, "--revision": "v2", "--heartbeat-interval": "0.3"})
    store = await Store.open(pg_url)
    try:
        async with aiohttp.ClientSession() as http:
            agent.start()
            await agent.wait_ready(http)

            async def track_is(track: str) -> bool:
                status, body = await agent.get(http, "/status")
                _, text = await agent.get(http, "/metrics")
                return (status == 200 and body["track"] == track and body["revision"] == "v2"
                        and f'occurrence_track{{occurrence_id="trk-0",track="{track}"}} 1.0'
                        in text)

            await wait_for_async(lambda: track_is("stable"), 30, "stable: no rollout under way")
            await store.shared_for(agent_id).pin_to_stable("v1")
            await wait_for_async(lambda: track_is("canary"), 30,
                                 "canary: not on the stable revision")
            row = await store.registry.get("trk-0")
            assert row is not None and (row.pinned_revision, row.track) == ("v1", "canary")
            await store.shared_for(agent_id).pin_to_stable(None)
            await wait_for_async(lambda: track_is("stable"), 30,
                                 "stable again once the pin is gone")
    finally:
        await stop_agents([agent], 15)
        await store.close()
