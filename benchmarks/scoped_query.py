"""Latency of the hot scoped queries with many tasks over many occurrences.

"Pending tasks for activation" (``ScopedStore.get_pending_tasks_for_activation``) is what
every runtime asks each poll; ``get_task`` is the point read behind every status check.
Both are measured through the store's public API, on a fresh database per configuration,
for every combination of ``--tasks`` and ``--occurrences``; then, on the same rows, the
activation query again with the occurrence indexes dropped (the baseline they buy).

    .venv/bin/python -m benchmarks.scoped_query [--tasks 1000000] [--occurrences 10]
    .venv/bin/python -m benchmarks.scoped_query --tasks 1000000,10000000 --occurrences 10,100

Rows are generated in the server (``generate_series``), with the secondary indexes built
after the load, so 10M tasks seed in minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from benchmarks.common import append_results, percentile
from occurrence_store import Store
from testing.postgres import postgres_server

OCC_INDEXES = ["idx_tasks_occurrence_status", "idx_tasks_occurrence_channel"]
TARGET_P99_MS = 5.0

# 70% completed, 20% pending, 10% active, by the occurrence-local sequence number.
_SEED = """
INSERT INTO tasks (task_id, agent_occurrence_id, channel_id, description, status, priority,
                   created_at, updated_at)
SELECT 't' || i, 'agent-' || (i % $1), '', 'bench',
       (ARRAY['completed','completed','completed','completed','completed','completed',
              'completed','pending','pending','active'])[(((i / $1) % 10) + 1)::int],
       i % 3, TIMESTAMPTZ '2026-01-01 00:00:00+00' + i * INTERVAL '1 second',
       TIMESTAMPTZ '2026-01-01 00:00:00+00' + i * INTERVAL '1 second'
FROM generate_series($2::bigint, $3::bigint - 1) AS i
"""


async def seed(url: str, n: int, occurrences: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        indexes = await conn.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'tasks' "
            "AND indexname <> 'tasks_pkey'")
        for row in indexes:  # load first, build the secondary indexes once afterwards
            await conn.execute(f"DROP INDEX {row['indexname']}")
        chunk = 1_000_000
        for start in range(0, n, chunk):
            await conn.execute(_SEED, occurrences, start, min(n, start + chunk))
        await conn.execute("SET maintenance_work_mem = '512MB'")
        for row in indexes:
            await conn.execute(row["indexdef"])
        await conn.execute("VACUUM ANALYZE tasks")
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


async def sample(calls: int, pick: Callable[[random.Random], Awaitable[Any]]) -> list[float]:
    rng = random.Random(7)
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        await pick(rng)
        samples.append((time.perf_counter() - start) * 1000)
    return samples


async def measure(store: Store, tasks: int, occurrences: int, calls: int,
                  which: tuple[str, ...]) -> dict[str, list[float]]:
    scopes = [store.scope(f"agent-{i}") for i in range(occurrences)]
    for scope in scopes:  # warm the plan cache and buffers
        await scope.get_pending_tasks_for_activation(10)

    async def pending(rng: random.Random) -> None:
        rows = await rng.choice(scopes).get_pending_tasks_for_activation(10)
        assert len(rows) == 10

    async def get_task(rng: random.Random) -> None:
        i = rng.randrange(tasks)
        assert await scopes[i % occurrences].get_task(f"t{i}") is not None

    queries = {"get_pending_tasks_for_activation(10)": pending, "get_task(id)": get_task}
    return {name: await sample(calls, queries[name]) for name in which}


async def run_one(server: Any, tasks: int, occurrences: int, calls: int,
                  baseline: bool) -> dict[str, list[float]]:
    name = f"bench_{tasks}_{occurrences}"
    admin = await asyncpg.connect(server.url())
    await admin.execute(f"CREATE DATABASE {name}")
    url = server.url(name)
    store = await Store.open(url, migrate=True)
    try:
        t0 = time.perf_counter()
        await seed(url, tasks, occurrences)
        print(f"seeded {tasks:,} tasks over {occurrences} occurrences in "
              f"{time.perf_counter() - t0:.1f}s", flush=True)
        result = await measure(store, tasks, occurrences, calls,
                               ("get_pending_tasks_for_activation(10)", "get_task(id)"))
        if baseline:
            async with store.db.connection() as conn:
                for index in OCC_INDEXES:
                    await conn.execute(f"DROP INDEX {index}")
                await conn.execute("ANALYZE tasks")
            without = await measure(store, tasks, occurrences, max(20, calls // 50),
                                    ("get_pending_tasks_for_activation(10)",))
            result["get_pending_tasks_for_activation(10), occurrence indexes dropped"] = (
                without["get_pending_tasks_for_activation(10)"])
    finally:
        await store.close()
        await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
        await admin.close()
    return result


async def main_async(task_counts: list[int], occurrence_counts: list[int], calls: int,
                     baseline: bool) -> list[dict]:
    rows = []
    with postgres_server() as server:
        for tasks in task_counts:
            for occurrences in occurrence_counts:
                result = await run_one(server, tasks, occurrences, calls, baseline)
                for query, samples in result.items():
                    row = {"tasks": tasks, "occurrences": occurrences, "query": query,
                           "calls": len(samples), "p50": percentile(samples, 50),
                           "p99": percentile(samples, 99)}
                    print(f"{tasks:,} tasks / {occurrences} occ, {query}: "
                          f"p50 {row['p50']:.3f} ms, p99 {row['p99']:.3f} ms", flush=True)
                    rows.append(row)
    return rows


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = list(dict.fromkeys((r["tasks"], r["occurrences"]) for r in rows))
    queries = list(dict.fromkeys(r["query"] for r in rows))
    width = 0.8 / len(queries)
    fig, ax = plt.subplots(figsize=(max(6.0, 2.2 * len(configs)) + 4.0, 4.2))
    for qi, query in enumerate(queries):
        xs, p50, p99 = [], [], []
        for ci, config in enumerate(configs):
            match = [r for r in rows if (r["tasks"], r["occurrences"]) == config
                     and r["query"] == query]
            if match:
                xs.append(ci + (qi - (len(queries) - 1) / 2) * width)
                p50.append(match[0]["p50"])
                p99.append(match[0]["p99"])
        bars = ax.bar(xs, p99, width * 0.9, alpha=0.45, label=f"{query} p99")
        ax.scatter(xs, p50, marker="_", s=200, color=bars.patches[0].get_facecolor()[:3],
                   zorder=3, label=f"{query} p50")
    ax.axhline(TARGET_P99_MS, color="red", linestyle="--", label=f"target p99 {TARGET_P99_MS:g} ms")
    ax.set_yscale("log")
    ax.set_xticks(range(len(configs)), [f"{t:,} tasks\n{o} occurrences" for t, o in configs])
    ax.set_ylabel("ms per call (bar p99, tick p50)")
    ax.set_title("Scoped query latency, PostgreSQL (asyncpg pool, loopback)")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="1000000", help="comma-separated task counts")
    parser.add_argument("--occurrences", default="10",
                        help="comma-separated occurrence counts")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the run with the occurrence indexes dropped")
    parser.add_argument("--png", default="benchmarks/scoped_query.png")
    args = parser.parse_args()
    task_counts = [int(t) for t in args.tasks.split(",")]
    occurrence_counts = [int(o) for o in args.occurrences.split(",")]
    rows = asyncio.run(main_async(task_counts, occurrence_counts, args.calls,
                                  not args.no_baseline))
    plot(rows, args.png)
    table = "\n".join(
        f"| {r['tasks']:,} | {r['occurrences']} | {r['query']} | {r['calls']} | "
        f"{r['p50']:.3f} | {r['p99']:.3f} |" for r in rows)
    at_1m = [r["p99"] for r in rows if r["tasks"] == 1_000_000 and "dropped" not in r["query"]]
    verdict = (f"Worst p99 with the indexes at 1M tasks: {max(at_1m):.3f} ms (target < "
               f"{TARGET_P99_MS:g} ms: {'met' if max(at_1m) < TARGET_P99_MS else '**missed**'})."
               if at_1m else "")
    append_results(
        "Scoped query latency (PostgreSQL, "
        + ", ".join(f"{t:,}" for t in task_counts) + " tasks; "
        + ", ".join(str(o) for o in occurrence_counts) + " occurrences)",
        "Hot scoped queries through the store API (asyncpg pool, loopback), random occurrence "
        "per call (`get_task`: a random existing task, asked by its owner); 70% of tasks "
        "completed, 20% pending, 10% active; a fresh database per configuration. "
        f"Target: p99 < {TARGET_P99_MS:g} ms at 1M.\n\n"
        "| tasks | occurrences | query | calls | p50 ms | p99 ms |\n"
        "|---:|---:|---|---:|---:|---:|\n"
        + table + (f"\n\n{verdict}" if verdict else "")
        + f"\n\n![scoped query latency]({args.png.split('/')[-1]})",
    )


if __name__ == "__main__":
    main()
