"""A pooled connection whose backend was ended while idle is "database unavailable", never
an internal error, and the pool replaces it.

Seen in the whole-system scenario: after ``pg_terminate_backend`` on an idle pooled
connection, asyncpg answered the next statement with ``InternalClientError: cannot switch to
state 12; another operation (2) is in progress`` — the agent turned it into a 500. Every error
here must be one a caller can retry (``is_unreachable``), and the store must work again after.
"""

from __future__ import annotations

import asyncio
import collections

import asyncpg
import pytest

from occurrence_store import Store
from occurrence_store.unreachable import is_unreachable

APP = "terminated-idle"
ROUNDS = 300
POOL_SIZE = 2


async def _end_idle_backends(admin: asyncpg.Connection) -> int:
    return await admin.fetchval(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE application_name = $1 AND state = 'idle'", APP)


@pytest.mark.timeout(180)
async def test_statements_after_idle_backends_are_ended_fail_only_as_unavailable(
    pg_url: str,
) -> None:
    store = await Store.open(pg_url, migrate=True, application_name=APP, min_size=POOL_SIZE,
                             max_size=POOL_SIZE)
    admin = await asyncpg.connect(pg_url)
    errors: collections.Counter[str] = collections.Counter()
    try:
        scope = store.scope("cut-0")
        ended = 0
        for i in range(ROUNDS):
            ended += await _end_idle_backends(admin)
            # the server's goodbye reaches the client at some point in the next instants
            await asyncio.sleep((i % 7) * 0.0005)
            try:
                await scope.add_task_once(f"task {i}", idempotency_key=f"c-{i}")
            except Exception as exc:  # every kind is counted and judged below
                errors[type(exc).__name__] += 1
                assert is_unreachable(exc), f"round {i}: {type(exc).__name__}: {exc}"
        assert ended >= ROUNDS // 2, "the test ended too few backends to mean anything"
        # the pool replaces what broke: a connection whose backend was ended in the last
        # round may still sit in the pool and fail once (retryably), never more than once
        # per pooled connection; then the store works without a single failure
        failed_after = 0
        done = 0
        while done < 20:
            try:
                await scope.add_task_once(f"after {done}", idempotency_key=f"after-{done}")
            except Exception as exc:  # judged right here
                assert is_unreachable(exc), f"after: {type(exc).__name__}: {exc}"
                failed_after += 1
                assert failed_after <= POOL_SIZE, "the pool keeps handing out a dead connection"
                continue
            done += 1
    finally:
        await admin.close()
        await store.close()
    print(f"errors by kind over {ROUNDS} rounds: {dict(errors)}")
