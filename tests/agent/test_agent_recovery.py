"""Errors in the work loop: retried with backoff, failed with a reason, reclaimed, reported.

Runtimes run in the test process against real databases; faults are real ones (a handler
that raises, a thought left PROCESSING, a database that refuses connections).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg
import pytest

from occurrence_agent import BaseHandler, Decision
from occurrence_agent.runtime import StartupError
from occurrence_store import OccurrenceState, Store, Task, TaskStatus, Thought, ThoughtStatus
from occurrence_store.scoped import ScopedStore
from testing.agentproc import migrate
from testing.waiting import wait_for_async
from tests.agent.embedded import get, post, runtimes


class Flaky(BaseHandler):
    """Raises on the first ``failures`` attempts of every thought, then completes."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: dict[str, int] = {}

    async def handle(self, task: Task, thought: Thought) -> Decision:
        self.calls[thought.thought_id] = self.calls.get(thought.thought_id, 0) + 1
        if thought.attempts <= self.failures:
            raise RuntimeError(f"flaky on attempt {thought.attempts}")
        return Decision("complete", {"attempt_key": thought.attempt_key})


async def _finished(runtime: Any, task_id: str) -> Task:
    async def done() -> Task | None:
        task = await runtime.scoped.get_task(task_id)
        return task if task is not None and task.status in (
            TaskStatus.COMPLETED, TaskStatus.FAILED) else None

    return await wait_for_async(done, 30, f"task {task_id} finished")


@pytest.fixture
async def url(db_url: str) -> str:
    await migrate(db_url)
    return db_url


@pytest.mark.timeout(60)
async def test_a_raising_handler_is_retried_with_backoff_then_completes(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    handler = Flaky(failures=2)
    caplog.set_level(logging.INFO, logger="occurrence_agent")
    async with runtimes(url, ["flaky-0"], handler=handler, retry_backoff_seconds=0.05,
                        max_thought_attempts=5) as (runtime,):
        task = await runtime.scoped.add_task("try again")
        done = await _finished(runtime, task.task_id)
        assert done.status == TaskStatus.COMPLETED
        [thought] = await runtime.scoped.get_thoughts_by_task(task.task_id)
        assert thought.attempts == 3 and handler.calls[thought.thought_id] == 3
        assert done.outcome["result"] == {"attempt_key": f"thought:{thought.thought_id}"}
        assert thought.last_error.startswith("attempt 2 failed at handle: RuntimeError")
        assert runtime.metrics.value("occurrence_worker_errors_total", stage="handler") == 2
        assert runtime.metrics.value("occurrence_thoughts_processed_total", result="retried") == 2
    events = [r for r in caplog.records if getattr(r, "event", "") == "thought.handler_error"]
    assert len(events) == 2 and all(r.occurrence_id == "flaky-0" for r in events)


@pytest.mark.timeout(60)
async def test_retries_are_bounded_then_the_task_fails_with_the_reason(url: str) -> None:
    async with runtimes(url, ["doomed-0"], handler=Flaky(failures=100),
                        retry_backoff_seconds=0.01, max_thought_attempts=3) as (runtime,):
        task = await runtime.scoped.add_task("never works")
        done = await _finished(runtime, task.task_id)
        assert done.status == TaskStatus.FAILED
        assert done.outcome["reason"].startswith("attempt 3 failed at handle: RuntimeError")
        [thought] = await runtime.scoped.get_thoughts_by_task(task.task_id)
        assert thought.status == ThoughtStatus.FAILED and thought.attempts == 3
        assert runtime.metrics.value("occurrence_thoughts_processed_total",
                                     result="exhausted") == 1


class Gate(BaseHandler):
    """Completes, but only once the test opens the gate."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.started = asyncio.Event()

    async def handle(self, task: Task, thought: Thought) -> Decision:
        self.started.set()
        await self.open.wait()
        return Decision("complete")


async def _strand(runtime: Any, task_id: str) -> None:
    """Make the task's thought PROCESSING behind the worker's back (a lost claim reply)."""
    async with runtime.store.db.connection() as conn:
        await conn.execute("UPDATE thoughts SET status = 'processing' WHERE source_task_id = $1",
                           task_id)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("recovery", ["retry", "fail"])
async def test_the_sweep_reclaims_a_thought_nobody_works_on(url: str, recovery: str) -> None:
    async with runtimes(url, [f"sweep-{recovery}"], in_flight_recovery=recovery) as (runtime,):
        # the first sweep runs before the loop, whether paused or not: let it pass first (it
        # would seed a thought of its own for the task activated below)
        await wait_for_async(lambda: runtime.worker.loops >= 1, 20, "the worker's first round")
        runtime.worker.pause()
        await runtime.worker.settled()  # a step already running would seed a thought of its own
        task = await runtime.scoped.add_task("stranded")
        await runtime.scoped.activate_pending_tasks(1)
        await runtime.scoped.add_thought(task.task_id, "think")
        await _strand(runtime, task.task_id)
        runtime.worker.resume()
        done = await _finished(runtime, task.task_id)
        [thought] = await runtime.scoped.get_thoughts_by_task(task.task_id)
        if recovery == "retry":
            assert done.status == TaskStatus.COMPLETED and thought.attempts == 1
        else:  # never run a handler whose earlier run's side effects are unknown
            assert done.status == TaskStatus.FAILED and thought.attempts == 0
            assert done.outcome["reason"].startswith("stranded")
        result = "reclaimed" if recovery == "retry" else "stranded_failed"
        assert runtime.metrics.value("occurrence_thoughts_processed_total", result=result) == 1


@pytest.mark.timeout(60)
async def test_a_completion_whose_reply_was_lost_is_not_run_again(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The completing write commits, then the connection dies before the reply arrives."""
    real = ScopedStore.update_thought_status
    lost: list[str] = []

    async def commit_then_lose_the_reply(self: ScopedStore, thought_id: str, *args: Any,
                                         **kwargs: Any) -> bool:
        landed = await real(self, thought_id, *args, **kwargs)
        if not lost:
            lost.append(thought_id)
            raise asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of "
                                                      "operation")
        return landed

    monkeypatch.setattr(ScopedStore, "update_thought_status", commit_then_lose_the_reply)
    handler = Flaky(failures=0)
    async with runtimes(url, ["lost-0"], handler=handler) as (runtime,):
        task = await runtime.scoped.add_task("once")
        done = await _finished(runtime, task.task_id)
        assert done.status == TaskStatus.COMPLETED
        assert lost and handler.calls == {lost[0]: 1}
        assert runtime.metrics.value("occurrence_worker_errors_total", stage="finish") == 1


@pytest.mark.timeout(90)
async def test_readiness_turns_false_while_the_worker_cannot_reach_the_database(
    pg_url: str, pg_server: Any
) -> None:
    await migrate(pg_url)
    database = pg_url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(pg_server.url())
    try:
        async with runtimes(pg_url, ["cut-off-0"]) as (runtime,):
            assert (await get(runtime, "/readyz"))[0] == 200
            await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 "
                "AND application_name LIKE 'occurrence-agent:%'", database)

            async def unready() -> Any:
                status, body = await get(runtime, "/readyz")
                return status == 503 and "worker cannot reach the database" in body["reason"]

            await wait_for_async(unready, 30, "readiness to report the unreachable database")
            assert 'occurrence_worker_healthy{occurrence_id="cut-off-0"} 0.0' in \
                (await get(runtime, "/metrics"))[1]
            await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')

            async def ready() -> bool:
                return (await get(runtime, "/readyz"))[0] == 200

            await wait_for_async(ready, 30, "readiness back once the database is")
            task = await runtime.scoped.add_task("after the outage")
            assert (await _finished(runtime, task.task_id)).status == TaskStatus.COMPLETED
    finally:
        await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        await admin.close()


@pytest.mark.timeout(60)
async def test_a_fence_is_obeyed_on_notification_not_at_the_next_heartbeat(pg_url: str) -> None:
    """The heartbeat runs every 100 s here: only the NOTIFY can make it quiesce in time."""
    await migrate(pg_url)
    gate = Gate()
    async with runtimes(pg_url, ["notified-0"], handler=gate, lease_seconds=300,
                        heartbeat_interval=100) as (runtime,):
        store = runtime.store
        task = await runtime.scoped.add_task("in flight")
        await asyncio.wait_for(gate.started.wait(), 20)
        await store.registry.set_state("notified-0", OccurrenceState.DRAINING, grace_seconds=30)
        await wait_for_async(lambda: runtime.refusal() is not None, 20,
                             "the runtime to see the fence")
        status, _ = await post(runtime, "/tasks", {"description": "refused"})
        assert status == 503
        assert await runtime.scoped.claim_pending_thoughts(1) == []  # fenced at the database
        gate.open.set()  # in-flight work finishes within the grace, then the ack

        async def quiesced() -> bool:
            row = await store.registry.get("notified-0")
            return row is not None and row.quiesced

        await wait_for_async(quiesced, 20, "the quiesce acknowledgement")
        assert (await runtime.scoped.get_task(task.task_id)).status == TaskStatus.COMPLETED


@pytest.mark.timeout(60)
async def test_an_occurrence_id_of_another_agent_is_refused_at_start(url: str) -> None:
    async with await Store.open(url) as store:
        assert await store.registry.claim(["taken-0"], agent_id="ns-a/agent") == []
    with pytest.raises(StartupError, match="belongs to agent 'ns-a/agent'"):
        async with runtimes(url, ["taken-0"], agent_id="ns-b/agent"):
            pass


@pytest.mark.timeout(60)
async def test_a_shutdown_of_one_agent_leaves_another_running(url: str) -> None:
    async with runtimes(url, ["a-0", "a-1"], agent_id="ns/a") as agent_a, \
            runtimes(url, ["b-0"], agent_id="ns/b") as (b,):
        status, body = await post(agent_a[0], "/shutdown", {"reason": "only a"})
        assert status == 200 and body["accept"] and body["task_id"].endswith("@ns/a")
        await asyncio.wait_for(asyncio.gather(*(r.wait_stopped() for r in agent_a)), 15)
        await asyncio.sleep(0.6)  # several of b's heartbeats and shutdown polls
        assert b.ready and not b._stopping
        task = await b.scoped.add_task("b still works")
        assert (await _finished(b, task.task_id)).status == TaskStatus.COMPLETED
        assert b.wakeup is not None and b.wakeup.task_id.endswith("@ns/b")
