"""GET /tasks pages in SQL: an occurrence with a million tasks is listed in bounded memory.

The agent runs as a real process against a real PostgreSQL holding 1,000,000 finished tasks of
its occurrence; the test pages through a part of them and reads the first page repeatedly,
measuring the process's resident memory (``VmRSS``) before and after.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from testing.agentproc import Agent, migrate

TASKS = 1_000_000
RSS_GROWTH_BOUND_MIB = 64


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.timeout(300)
async def test_a_million_tasks_are_listed_in_pages_within_a_fixed_memory_bound(
    pg_url: str, tmp_path: Path,
) -> None:
    await migrate(pg_url)
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute(
            "INSERT INTO tasks (task_id, description, status, created_at, updated_at, "
            "agent_occurrence_id) SELECT 'big-' || g, 'finished task ' || g, 'completed', "
            "now() - make_interval(secs => ($1 - g) / 1000.0), now(), 'big-0' "
            "FROM generate_series(1, $1) g", TASKS)
        await conn.execute("ANALYZE tasks")
    finally:
        await conn.close()
    agent = Agent("big-0", pg_url, tmp_path, {"--simulated-work-ms": "0"}).start()
    try:
        await agent.wait_port(60)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
            async def get(query: str) -> dict:
                async with http.get(f"{agent.base}/tasks?{query}") as resp:
                    assert resp.status == 200, await resp.text()
                    return await resp.json()

            first = await get("limit=1000")
            assert first["total"] == TASKS and len(first["tasks"]) == 1000
            before = _rss_mib(agent.proc.pid)
            started = time.monotonic()
            seen, page, pages = 1000, first, 1
            while pages < 100:  # 100,000 tasks, a tenth of the history
                page = await get(f"limit=1000&after={page['next']}")
                assert len(page["tasks"]) == 1000 and page["next"]
                seen += len(page["tasks"])
                pages += 1
            for _ in range(50):  # the default page, as a dashboard polls it
                assert len((await get(""))["tasks"]) == 100
            elapsed = time.monotonic() - started
            after = _rss_mib(agent.proc.pid)
            last = page["tasks"][-1]["task_id"]
            assert last == f"big-{seen}", last  # creation order, no task skipped or repeated
            # an offset page skips what it says and counts nothing (the first page did)
            skipped = await get("limit=2&offset=10000")
            assert skipped["total"] is None
            assert [t["task_id"] for t in skipped["tasks"]] == ["big-10001", "big-10002"]
            async with http.get(f"{agent.base}/tasks?after=garbage!") as resp:
                assert resp.status == 400 and "cursor" in (await resp.json())["error"]
            bogus = base64.urlsafe_b64encode(b'["not a time", 1]').decode()
            async with http.get(f"{agent.base}/tasks?after={bogus}") as resp:
                assert resp.status == 400
        print(f"\nGET /tasks over {TASKS:,} tasks: {pages} pages of 1000 + 50 default pages in "
              f"{elapsed:.1f}s; agent RSS {before:.1f} MiB -> {after:.1f} MiB")
        assert after - before < RSS_GROWTH_BOUND_MIB, (before, after)
    finally:
        agent.kill()
