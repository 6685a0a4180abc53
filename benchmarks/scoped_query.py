"""Latency of the hot scoped query with many tasks over many occurrences.

"Pending tasks for activation" (``ScopedStore.get_pending_tasks_for_activation``) is what
every runtime asks each poll. Measured through the store's public API, with the
occurrence indexes and then, on the same rows, with them dropped.

    .venv/bin/python -m benchmarks.scoped_query [--tasks 1000000] [--occurrences 10]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from datetime import UTC, datetime, timedelta

import asyncpg

from benchmarks.common import append_results, percentile
from occurrence_store import Store
from tests.support.postgres import postgres_server

OCC_INDEXES = ["idx_tasks_occurrence_status", "idx_tasks_occurrence_channel"]


async def seed(url: str, n: int, occurrences: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        base = datetime(2026, 1, 1, tzinfo=UTC)
        statuses = ["completed"] * 7 + ["pending"] * 2 + ["active"]
        chunk = 200_000
        for start in range(0, n, chunk):
            records = []
            for i in range(start, min(n, start + chunk)):
                at = base + timedelta(seconds=i)
                records.append((f"t{i}", f"agent-{i % occurrences}", "", "bench",
                                statuses[(i // occurrences) % len(statuses)], i % 3, at, at))
            await conn.copy_records_to_table(
                "tasks", records=records,
                columns=["task_id", "agent_occurrence_id", "channel_id", "description",
                         "status", "priority", "created_at", "updated_at"])
        await conn.execute("VACUUM ANALYZE tasks")
    finally:
        await conn.close()


async def measure(store: Store, occurrences: int, calls: int) -> list[float]:
    rng = random.Random(7)
    scopes = [store.scope(f"agent-{i}") for i in range(occurrences)]
    for scope in scopes:  # warm the plan cache and buffers
        await scope.get_pending_tasks_for_activation(10)
    samples = []
    for _ in range(calls):
        scope = rng.choice(scopes)
        start = time.perf_counter()
        rows = await scope.get_pending_tasks_for_activation(10)
        samples.append((time.perf_counter() - start) * 1000)
        assert len(rows) == 10
    return samples


async def run(tasks: int, occurrences: int, calls: int) -> dict:
    with postgres_server() as server:
        admin = await asyncpg.connect(server.url())
        await admin.execute("CREATE DATABASE bench")
        await admin.close()
        url = server.url("bench")
        store = await Store.open(url, migrate=True)
        try:
            t0 = time.perf_counter()
            await seed(url, tasks, occurrences)
            print(f"seeded {tasks} tasks in {time.perf_counter() - t0:.1f}s", flush=True)
            with_idx = await measure(store, occurrences, calls)
            async with store.db.connection() as conn:
                for index in OCC_INDEXES:
                    await conn.execute(f"DROP INDEX {index}")
                await conn.execute("ANALYZE tasks")
            without = await measure(store, occurrences, max(20, calls // 50))
        finally:
            await store.close()
    return {"with": with_idx, "without": without}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--occurrences", type=int, default=10)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    result = asyncio.run(run(args.tasks, args.occurrences, args.calls))
    rows = []
    for label, samples in (("with occurrence indexes", result["with"]),
                           ("without (indexes dropped)", result["without"])):
        rows.append(f"| {label} | {len(samples)} | {percentile(samples, 50):.3f} | "
                    f"{percentile(samples, 99):.3f} |")
        print(rows[-1])
    append_results(
        f"Scoped query latency (PostgreSQL, {args.tasks:,} tasks, {args.occurrences} occurrences)",
        "`get_pending_tasks_for_activation(10)` through the store API (asyncpg pool, loopback), "
        "random occurrence per call; 70% of tasks completed, 20% pending, 10% active. "
        "Target: p99 < 5 ms at 1M.\n\n| indexes | calls | p50 ms | p99 ms |\n|---|---:|---:|---:|\n"
        + "\n".join(rows),
    )


if __name__ == "__main__":
    main()
