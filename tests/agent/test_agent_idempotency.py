"""Idempotent submission through the HTTP API: a retried POST never creates a second task."""

from __future__ import annotations

import asyncio

import pytest

from occurrence_store import Store
from testing.agentproc import migrate
from tests.agent.embedded import post, runtimes


@pytest.fixture
async def url(db_url: str) -> str:
    await migrate(db_url)
    return db_url


@pytest.mark.timeout(60)
async def test_twenty_concurrent_submissions_with_one_key_make_one_task(url: str) -> None:
    """20 clients retry the same submission at once, through two occurrences of one agent."""
    async with runtimes(url, ["idem-0", "idem-1"], agent_id="ns/idem") as fleet:
        body = {"description": "charge order 42", "context": {"amount": 42}}
        results = await asyncio.gather(*(
            post(fleet[i % 2], "/tasks", body, headers={"Idempotency-Key": "order-42"})
            for i in range(20)))
        statuses = sorted(status for status, _ in results)
        assert statuses == [200] * 19 + [201]
        assert len({task["task_id"] for _, task in results}) == 1
        assert all(task["correlation_id"] == "order-42" for _, task in results)
        async with await Store.open(url) as store, store.db.connection() as conn:
            assert await conn.fetchval(
                "SELECT COUNT(*) FROM tasks WHERE idempotency_key = 'order-42'") == 1


@pytest.mark.timeout(60)
async def test_key_by_header_or_correlation_id_and_reuse_for_another_request(url: str) -> None:
    async with runtimes(url, ["idem-2"]) as (runtime,):
        status, first = await post(runtime, "/tasks", {"description": "a",
                                                       "correlation_id": "msg-1"})
        assert status == 201
        status, again = await post(runtime, "/tasks", {"description": "a"},
                                   headers={"Idempotency-Key": "msg-1"})
        assert status == 200 and again["task_id"] == first["task_id"]
        status, error = await post(runtime, "/tasks", {"description": "b"},
                                   headers={"Idempotency-Key": "msg-1"})
        assert status == 422 and first["task_id"] in error["error"]
        status, error = await post(runtime, "/tasks", {"description": "a",
                                                       "correlation_id": "x"},
                                   headers={"Idempotency-Key": "y"})
        assert status == 422 and "differ" in error["error"]
        status, _ = await post(runtime, "/tasks", {"description": "a"},
                               headers={"Idempotency-Key": "k" * 256})
        assert status == 422
        status, other = await post(runtime, "/tasks", {"description": "a"})
        assert status == 201 and other["task_id"] != first["task_id"]
