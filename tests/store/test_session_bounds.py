"""Every PostgreSQL session of the store is bounded: keepalives, idle transactions, a
statement whose client is gone, and a caller never waits for a pooled connection without end."""

from __future__ import annotations

import asyncio
import signal
import sys
import time

import pytest

from occurrence_store import Store, StoreUnavailable
from occurrence_store.backends.postgres import CLIENT_CHECK_INTERVAL, SESSION_BOUNDS
from testing.waiting import wait_for_async


async def test_sessions_start_with_the_bounds(pg_url: str) -> None:
    async with await Store.open(pg_url, migrate=True) as store:
        async with store.db.connection() as conn:
            for name, value in SESSION_BOUNDS.items():
                shown = await conn.fetchval(f"SELECT current_setting('{name}')")
                assert shown.removesuffix("s") == value.removesuffix("s") or \
                    (shown == "1min" and value == "60s"), (name, shown)
            shown = await conn.fetchval(
                "SELECT current_setting('client_connection_check_interval')")
            assert shown == CLIENT_CHECK_INTERVAL


async def test_a_caller_waits_for_a_pooled_connection_only_so_long(pg_url: str) -> None:
    store = await Store.open(pg_url, migrate=True, min_size=1, max_size=1, acquire_timeout=0.5)
    try:
        async with store.db.connection():
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                async with store.db.connection():
                    pass
            assert time.monotonic() - started < 10
        async with store.db.connection() as conn:  # released: usable again
            assert await conn.fetchval("SELECT 1") == 1
    finally:
        await store.close()


async def test_a_killed_clients_statement_stops_and_releases_its_locks(pg_url: str) -> None:
    """A client killed mid-statement (an operator SIGKILLed while its drain statement waits or
    runs) leaves no backend behind holding the rows it locked: the server checks the client
    while the statement runs (`client_connection_check_interval`) and ends it."""
    script = (
        "import asyncio, sys\n"
        "from occurrence_store import Store\n"
        "async def main():\n"
        "    store = await Store.open(sys.argv[1])\n"
        "    async with store.db.connection() as conn:\n"
        "        print(await conn.fetchval('SELECT pg_backend_pid()'), flush=True)\n"
        "        await conn.fetchval('SELECT pg_sleep(600)')\n"
        "asyncio.run(main())\n"
    )
    client = await asyncio.create_subprocess_exec(sys.executable, "-c", script, pg_url,
                                                  stdout=asyncio.subprocess.PIPE)
    try:
        assert client.stdout is not None
        backend = int(await asyncio.wait_for(client.stdout.readline(), 30))
        async with await Store.open(pg_url, migrate=True) as store:
            async with store.db.connection() as conn:
                async def running() -> bool:
                    return bool(await conn.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 "
                        "AND state = 'active'", backend))

                await wait_for_async(running, timeout=10, message="the statement runs")
                client.send_signal(signal.SIGKILL)
                await asyncio.wait_for(client.wait(), 10)

                async def gone() -> bool:
                    return not await conn.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", backend)

                # the statement would run for 600 s: its backend ends only by noticing
                await wait_for_async(gone, timeout=60, message="the orphaned backend ended")
    finally:
        if client.returncode is None:
            client.kill()
            await client.wait()
