"""Runtimes embedded in the test process (real databases, real HTTP), for agent tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from occurrence_agent import AgentConfig, OccurrenceRuntime


def config(oid: str, url: str, **extra: Any) -> AgentConfig:
    settings: dict[str, Any] = {
        "host": "127.0.0.1", "port": 0, "lease_seconds": 3, "heartbeat_interval": 0.2,
        "poll_interval": 0.05, "shared_lease_seconds": 2, "simulated_work_ms": 0,
        "drain_timeout": 2, **extra}
    return AgentConfig(occurrence_id=oid, database_url=url, **settings)


@asynccontextmanager
async def runtimes(url: str, ids: list[str], handler: Any = None,
                   **extra: Any) -> AsyncIterator[list[OccurrenceRuntime]]:
    started = [OccurrenceRuntime(config(i, url, **extra), handler=handler) for i in ids]
    try:
        await asyncio.gather(*(r.start() for r in started))
        yield started
    finally:
        await asyncio.wait_for(asyncio.gather(*(r.stop("test over") for r in started)), 20)


async def post(runtime: OccurrenceRuntime, path: str, body: dict[str, Any],
               headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http, \
            http.post(f"http://127.0.0.1:{runtime.port}{path}", json=body,
                      headers=headers) as resp:
        return resp.status, await resp.json()


async def get(runtime: OccurrenceRuntime, path: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http, \
            http.get(f"http://127.0.0.1:{runtime.port}{path}") as resp:
        if resp.content_type == "application/json":
            return resp.status, await resp.json()
        return resp.status, await resp.text()
