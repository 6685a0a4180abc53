"""No silent stall: a worker whose database connection is cut in the middle of each step of
a thought's processing still completes every task, every thought once, and logs each error.

The cuts are real: the test locks the tables, waits until one of the agent's backends is
blocked inside a statement of the step it wants to hit, and ends that backend with
``pg_terminate_backend`` — the agent sees its connection die mid-statement, exactly as
when a database fails over or a proxy drops it. Which statement is next is random (the
moment of each cut is), and the test goes on until every step was cut several times.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
import re
import signal
import time
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from occurrence_store import Store, TaskStatus, ThoughtStatus
from testing.agentproc import migrate, running_agents

AGENT = "faulty-0"
TASKS = 30
THOUGHTS_PER_TASK = 3
CUTS_PER_POINT = 3
BUDGET_SECONDS = 150
STALL_SECONDS = 30
"""No task completed for this long while cutting: a stall, the failure this test is for."""

# The statements of one thought's processing, as pg_stat_activity shows them.
POINTS: dict[str, re.Pattern[str]] = {
    "count": re.compile(r"^SELECT COUNT\(\*\) FROM tasks WHERE agent_occurrence_id = \$1 AND"),
    "activate": re.compile(r"^WITH fence AS .*UPDATE tasks t SET status", re.S),
    "add_thought": re.compile(r"^INSERT INTO thoughts"),
    "claim": re.compile(r"^WITH fence AS .*UPDATE thoughts x SET", re.S),
    "load": re.compile(r"^SELECT task_id, .* FROM tasks WHERE task_id = \$1 AND "
                       r"agent_occurrence_id = \$2$", re.S),
    "finish": re.compile(r"^UPDATE thoughts SET status = \$1, updated_at = occurrence_now\(\), "
                         r"final_action_json"),
    "after": re.compile(r"^UPDATE tasks SET status = \$1, updated_at = occurrence_now\(\), "
                        r"outcome_json"),
}


def _point(query: str) -> str | None:
    return next((name for name, pattern in POINTS.items() if pattern.search(query)), None)


async def _cut_once(admin: asyncpg.Connection, cuts: collections.Counter[str],
                    rng: random.Random) -> None:
    """Block the tables; end the agent's backend waiting inside a statement we want cut."""
    async with admin.transaction():
        await admin.execute("LOCK TABLE tasks, thoughts IN ACCESS EXCLUSIVE MODE")
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            # pg_stat_activity is a snapshot per transaction: take a fresh one each time
            await admin.execute("SELECT pg_stat_clear_snapshot()")
            blocked = await admin.fetch(
                "SELECT pid, query FROM pg_stat_activity WHERE application_name = $1 "
                "AND wait_event_type = 'Lock'", f"occurrence-agent:{AGENT}")
            wanted = [(r["pid"], _point(r["query"])) for r in blocked]
            wanted = [(pid, p) for pid, p in wanted
                      if p is not None and (cuts[p] < CUTS_PER_POINT or rng.random() < 0.3)]
            if wanted:
                for pid, point in wanted:
                    if await admin.fetchval("SELECT pg_terminate_backend($1, 5000)", pid):
                        cuts[point] += 1
                return
            await asyncio.sleep(0.005)


@pytest.mark.timeout(300)
async def test_connection_cut_at_each_step_every_task_completes_every_thought_once(
    pg_url: str, tmp_path: Path
) -> None:
    await migrate(pg_url)
    store = await Store.open(pg_url)
    admin = await asyncpg.connect(pg_url, server_settings={"application_name": "fault-injector"})
    rng = random.Random(20261201)
    cuts: collections.Counter[str] = collections.Counter()
    options = {"--thought-concurrency": "4", "--max-active-tasks": "6",
               "--max-thought-attempts": "100", "--retry-backoff-seconds": "0.02",
               "--retry-backoff-max-seconds": "0.5"}
    try:
        async with running_agents([AGENT], pg_url, tmp_path, **options) as (agent,), \
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
            await agent.wait_ready(http)
            scoped = store.scope(AGENT)
            ids = [(await scoped.add_task(
                f"task {n}", context={"thoughts": THOUGHTS_PER_TASK,
                                      "work_ms": rng.randint(0, 40)})).task_id
                for n in range(TASKS)]
            started = progressed_at = time.monotonic()
            done_before = 0
            while True:
                # our LOCK can deadlock with an agent transaction that holds one of the
                # tables: the server then breaks it, and we try again
                with contextlib.suppress(asyncpg.DeadlockDetectedError):
                    await _cut_once(admin, cuts, rng)
                done = await scoped.count_tasks(TaskStatus.COMPLETED)
                if done > done_before:
                    done_before, progressed_at = done, time.monotonic()
                if all(cuts[p] >= CUTS_PER_POINT for p in POINTS):
                    break  # every step cut several times: let the rest finish in peace
                if done == len(ids):  # out of work before every step was cut: more work
                    ids.append((await scoped.add_task(
                        "more", context={"thoughts": THOUGHTS_PER_TASK})).task_id)
                over_budget = time.monotonic() - started > BUDGET_SECONDS
                if over_budget and all(cuts[p] >= 1 for p in POINTS) and \
                        time.monotonic() - progressed_at < STALL_SECONDS:
                    # work goes on and every step was cut, some fewer times than wished (the
                    # moment of a cut is chance): stop cutting, the checks below still hold
                    print(f"\nbudget spent before {CUTS_PER_POINT} cuts of every step: {cuts}")
                    break
                if over_budget or time.monotonic() - progressed_at > STALL_SECONDS:
                    stuck = [t for t in await scoped.get_all_tasks()
                             if t.status != TaskStatus.COMPLETED]
                    detail = [(t.task_id, t.status.value, [
                        (th.thought_depth, th.status.value, th.attempts, th.last_error)
                        for th in await scoped.get_thoughts_by_task(t.task_id)]) for t in stuck]
                    elapsed, quiet = time.monotonic() - started, time.monotonic() - progressed_at
                    raise AssertionError(
                        f"after {elapsed:.0f}s ({quiet:.0f}s without a completion): "
                        f"{done}/{len(ids)} tasks done, cuts "
                        f"{dict(cuts)}; not done: {detail}")
                await asyncio.sleep(rng.uniform(0, 0.1))
            while await scoped.count_tasks(TaskStatus.COMPLETED) < len(ids):  # the last ones
                assert time.monotonic() - started < BUDGET_SECONDS + 60
                await asyncio.sleep(0.1)
            status, metrics = await agent.get(http, "/metrics")
            assert status == 200
            agent.signal(signal.SIGTERM)
            assert await agent.wait_exit(20) == 0

        # every task completed, with exactly its thoughts, each completed
        for task_id in ids:
            task = await scoped.get_task(task_id)
            assert task is not None and task.status == TaskStatus.COMPLETED, task
            thoughts = await scoped.get_thoughts_by_task(task_id)
            assert [t.thought_depth for t in thoughts] == list(range(THOUGHTS_PER_TASK))
            assert all(t.status == ThoughtStatus.COMPLETED for t in thoughts), thoughts
        # every thought completed once
        completions = collections.Counter(
            e["thought_id"] for e in agent.journal_events() if e["event"] == "thought_completed")
        assert len(completions) == len(ids) * THOUGHTS_PER_TASK
        assert set(completions.values()) == {1}
        # every cut was logged and counted
        # (the load statement is also how the heartbeat polls for a shutdown decision:
        # its cuts are heartbeat failures, logged and counted as such)
        events = agent.events()
        errors = [e for e in events if e.get("event") == "worker.error"]
        logged = errors + [e for e in events if e.get("event") == "registry.heartbeat_failed"]
        assert len(logged) >= sum(cuts.values()), (dict(cuts), collections.Counter(
            e.get("stage", "heartbeat") for e in logged))
        assert {"step", "load", "finish", "after"} <= {e["stage"] for e in errors}
        assert all(e["occurrence_id"] == AGENT and e["level"] == "warning" for e in logged)
        counted = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                      if line.startswith("occurrence_worker_errors_total{"))
        assert counted >= len(logged)
        runs = collections.Counter(
            e["thought_id"] for e in agent.journal_events() if e["event"] == "thought_started")
        print(f"\ncuts per step: {dict(cuts)}; errors logged: {len(errors)} "
              f"(stages {dict(collections.Counter(e['stage'] for e in errors))}); "
              f"handler runs repeated for {sum(1 for n in runs.values() if n > 1)} of "
              f"{len(runs)} thoughts (cut after the handler ran)")
    finally:
        await admin.close()
        await store.close()
