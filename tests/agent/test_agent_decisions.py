"""Shared wakeup and shutdown decisions, with runtimes embedded in the test process."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from occurrence_agent import BaseHandler, OccurrenceRuntime, ShutdownVerdict
from occurrence_agent.runtime import StartupError
from occurrence_store import Store, TaskStatus
from testing.agentproc import migrate
from testing.waiting import wait_for_async
from tests.agent.embedded import config as _config
from tests.agent.embedded import post as _post
from tests.agent.embedded import runtimes


@pytest.fixture
async def url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    await migrate(url)
    return url


@pytest.mark.timeout(60)
async def test_one_shutdown_decision_every_occurrence_obeys(url: str) -> None:
    async with runtimes(url, ["s-0", "s-1", "s-2"]) as fleet:
        status, body = await _post(fleet[1], "/shutdown", {"reason": "maintenance"})
        assert status == 200 and body["accept"] and body["decided_by"] == "s-1"
        await asyncio.wait_for(asyncio.gather(*(r.wait_stopped() for r in fleet)), 15)
        store = await Store.open(url)
        try:
            task = await store.shared.get_shared_task(body["task_id"])
            assert task is not None and task.outcome["occurrences"] == 3
        finally:
            await store.close()

        # A fleet started after the decision does not obey it; a new request decides again.
        async with runtimes(url, ["s-3"]) as (late,):
            await asyncio.sleep(0.6)  # several heartbeats and polls
            assert late.ready
            status, again = await _post(late, "/shutdown", {"reason": "again"})
            assert status == 200 and again["accept"] and again["task_id"] != body["task_id"]
            await asyncio.wait_for(late.wait_stopped(), 15)


class Stubborn(BaseHandler):
    async def decide_shutdown(self, reason: str, occurrences: int) -> ShutdownVerdict:
        return ShutdownVerdict(False, "busy")


@pytest.mark.timeout(60)
async def test_rejected_shutdown_keeps_everyone_running(url: str) -> None:
    async with runtimes(url, ["r-0", "r-1"], handler=Stubborn()) as fleet:
        status, body = await _post(fleet[0], "/shutdown", {})
        assert status == 200 and not body["accept"] and body["reason"] == "busy"
        await asyncio.sleep(0.6)
        assert all(r.ready for r in fleet)


@pytest.mark.timeout(60)
async def test_wakeup_claimed_by_a_dead_occurrence_is_taken_over_after_its_lease(
    url: str,
) -> None:
    store = await Store.open(url)
    try:
        await store.shared.try_claim_shared_task("wakeup", "ghost-0", lease_seconds=1.0)
        async with runtimes(url, ["w-0"]) as (runtime,):
            assert runtime.wakeup is not None and runtime.wakeup.performed
            assert runtime.wakeup.waited_seconds == 0  # the performer waited, but did it
            assert await store.shared.is_shared_task_completed("wakeup")
    finally:
        await store.close()


@pytest.mark.timeout(60)
async def test_wakeup_wait_is_bounded(url: str) -> None:
    store = await Store.open(url)
    try:
        await store.shared.try_claim_shared_task("wakeup", "ghost-0", lease_seconds=60)
        runtime = OccurrenceRuntime(_config("w-1", url, wakeup_timeout=1.0))
        with pytest.raises(StartupError, match="did not complete within 1s"):
            await asyncio.wait_for(runtime.start(), 10)
        assert runtime.port is not None
    finally:
        await store.close()


@pytest.mark.timeout(60)
async def test_late_joiner_waits_for_the_wakeup_in_progress(url: str) -> None:
    class SlowWakeup(BaseHandler):
        async def wakeup(self, occurrence_id: str, occurrences: int) -> dict[str, Any]:
            await asyncio.sleep(0.8)
            return {"slow": True}

    first = OccurrenceRuntime(_config("j-0", url), handler=SlowWakeup())
    second = OccurrenceRuntime(_config("j-1", url), handler=SlowWakeup())
    starting = asyncio.create_task(first.start())
    try:
        await wait_for_async(lambda: first.port is not None, 10, "first to serve")
        await asyncio.sleep(0.2)
        assert not first.ready  # not ready before the wakeup
        await asyncio.wait_for(second.start(), 10)
        await asyncio.wait_for(starting, 10)
        assert first.wakeup.performed and not second.wakeup.performed
        assert second.wakeup.waited_seconds > 0.2
        assert second.metrics.value("occurrence_claim_conflicts_total", kind="shared_task") == 1
        text = await second.render_metrics()
        assert "occurrence_wakeup_wait_seconds" in text
        # Each runtime works its own tasks only.
        task = await second.scoped.add_task("for j-1")
        second.worker.poke()

        async def done() -> bool:
            got = await second.scoped.get_task(task.task_id)
            return got is not None and got.status == TaskStatus.COMPLETED

        await wait_for_async(done, 10, "j-1's task completed")
        assert await first.scoped.get_task(task.task_id) is None
    finally:
        await asyncio.gather(first.stop(), second.stop())


@pytest.mark.timeout(60)
async def test_during_a_rollout_a_canary_follows_the_stable_occurrences_decisions(
        url: str) -> None:
    """Mixed versions: with the agent's decisions pinned to the stable revision (a canary
    rollout under way), a canary occurrence never performs the wakeup or decides a shutdown:
    it waits for a stable occurrence and follows it."""
    agent = "ns/mixed"
    store = await Store.open(url)
    try:
        # the stable occurrence is live (registered) before either starts: it will decide
        await store.registry.register("mixed-0", agent_id=agent, revision="stable")
        await store.shared_for(agent).pin_to_stable("stable")
        canary = OccurrenceRuntime(_config("mixed-1", url, agent_id=agent, revision="canary"))
        stable = OccurrenceRuntime(_config("mixed-0", url, agent_id=agent, revision="stable"))
        canary_start = asyncio.create_task(canary.start())
        try:
            await asyncio.sleep(1.0)
            assert not canary_start.done()  # waiting for a stable occurrence's wakeup
            await stable.start()
            await asyncio.wait_for(canary_start, 20)
            day = await store.shared_for(agent).now()
            wakeup = await store.shared_for(agent).get_shared_task(
                store.shared_for(agent).task_id("wakeup", day))
            assert wakeup is not None and wakeup.claimed_by == "mixed-0"
            assert wakeup.status is TaskStatus.COMPLETED
            status, body = await _post(canary, "/shutdown", {"reason": "from a canary"})
            assert status == 409 and not body["decided"], body
            assert "stable" in body["reason"]
            assert canary.ready and stable.ready
        finally:
            canary_start.cancel()
            await asyncio.wait_for(asyncio.gather(
                *(r.stop("test over") for r in (canary, stable)), return_exceptions=True), 20)
    finally:
        await store.close()
