"""`/metrics` is open: however many scrape at once, the task and thought counts run once per
`WORK_GAUGES_TTL_SECONDS` (a real runtime on SQLite, its real HTTP endpoint)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from occurrence_agent import runtime as runtime_module
from occurrence_store import Store
from tests.agent.embedded import runtimes


async def test_parallel_scrapes_share_one_count(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    await (await Store.open(url, migrate=True)).close()
    async with runtimes(url, ["m-0"]) as (agent,):
        counted: list[Any] = []
        original = agent._count_work

        async def counting() -> Any:
            counted.append(1)
            await asyncio.sleep(0.05)  # a slow database: the scrapes overlap
            return await original()

        monkeypatch.setattr(agent, "_count_work", counting)
        await agent.scoped.add_tasks(["a", "b", "c"])
        async with aiohttp.ClientSession() as http:
            async def scrape() -> str:
                async with http.get(f"http://127.0.0.1:{agent.port}/metrics") as resp:
                    assert resp.status == 200
                    return await resp.text()

            texts = await asyncio.gather(*(scrape() for _ in range(8)))
            assert len(counted) == 1  # one count set for eight scrapes
            counts = {tuple(line for line in t.splitlines() if line.startswith("occurrence_tasks{"))
                      for t in texts}
            assert len(counts) == 1 and len(next(iter(counts))) == 6  # the same, shared count
            monkeypatch.setattr(runtime_module, "WORK_GAUGES_TTL_SECONDS", 0.0)
            await scrape()
            assert len(counted) == 2  # expired: counted again
