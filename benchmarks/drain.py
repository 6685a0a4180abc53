"""Drain cost: N pending tasks (3 thoughts each) from one occurrence to 3 survivors.

Measured side by side in the same run, on the same server and the same rows, with the
bare lower bound: one ``UPDATE ... SET agent_occurrence_id`` over the tasks and one over
their thoughts (no balancing, no guard, no transfer records). Runs alternate, and each
size is repeated; medians are reported.

Growth is checked for linearity: the least-squares slope of log(time) on log(size) (1.0 is
linear) and the time factor per 10x more tasks, for the drain and for the bound.

    .venv/bin/python -m benchmarks.drain [--sizes 1000,10000,100000] [--repeat 3]
    .venv/bin/python -m benchmarks.drain --sizes 1000,10000,100000,1000000   # full curve, minutes
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time
import uuid
from datetime import UTC, datetime

import asyncpg

from benchmarks.common import append_results, median
from occurrence_store import InFlightPolicy, Store
from tests.support.postgres import postgres_server

SURVIVORS = ["bench-0", "bench-1", "bench-2"]
DEPARTING = "bench-3"
SEED_CHUNK = 100_000
TARGET_RATIO = 2.0


async def seed(conn: asyncpg.Connection, n: int) -> None:
    now = datetime.now(UTC)
    await conn.execute("TRUNCATE tasks, thoughts, task_transfers")
    tag = uuid.uuid4().hex[:6]
    for start in range(0, n, SEED_CHUNK):  # chunked: 1M tasks are 4M rows
        tasks = [(f"t-{i}-{tag}", DEPARTING, "", "bench", "pending", 0, now, now)
                 for i in range(start, min(n, start + SEED_CHUNK))]
        await conn.copy_records_to_table(
            "tasks", records=tasks,
            columns=["task_id", "agent_occurrence_id", "channel_id", "description", "status",
                     "priority", "created_at", "updated_at"])
        thoughts = [(f"{t[0]}-th{j}", t[0], DEPARTING, "standard", "pending", "x", now, now)
                    for t in tasks for j in range(3)]
        await conn.copy_records_to_table(
            "thoughts", records=thoughts,
            columns=["thought_id", "source_task_id", "agent_occurrence_id", "thought_type",
                     "status", "content", "created_at", "updated_at"])
    await conn.execute("VACUUM ANALYZE tasks")
    await conn.execute("VACUUM ANALYZE thoughts")
    await conn.execute("CHECKPOINT")


async def bound(conn: asyncpg.Connection) -> float:
    start = time.perf_counter()
    async with conn.transaction():
        await conn.execute("UPDATE tasks SET agent_occurrence_id = $1 "
                           "WHERE agent_occurrence_id = $2", SURVIVORS[0], DEPARTING)
        await conn.execute("UPDATE thoughts SET agent_occurrence_id = $1 "
                           "WHERE agent_occurrence_id = $2", SURVIVORS[0], DEPARTING)
    return time.perf_counter() - start


async def ours(store: Store, n: int) -> float:
    start = time.perf_counter()
    result = await store.transfers.drain(DEPARTING, SURVIVORS, in_flight=InFlightPolicy.RELEASE,
                                         reason="benchmark")
    elapsed = time.perf_counter() - start
    assert result.tasks_moved == n and result.thoughts_moved == 3 * n, result
    return elapsed


async def main_async(sizes: list[int], repeat: int) -> list[dict]:
    rows = []
    with postgres_server() as server:
        admin = await asyncpg.connect(server.url())
        await admin.execute("CREATE DATABASE bench")
        await admin.close()
        url = server.url("bench")
        store = await Store.open(url, migrate=True)
        conn = await asyncpg.connect(url)
        try:
            for occ in [*SURVIVORS, DEPARTING]:
                await store.registry.register(occ)
            for n in sizes:
                ours_t, bound_t = [], []
                for rep in range(repeat):  # alternate which one runs first
                    for which in (("bound", "ours") if rep % 2 == 0 else ("ours", "bound")):
                        await seed(conn, n)
                        if which == "bound":
                            bound_t.append(await bound(conn))
                        else:
                            ours_t.append(await ours(store, n))
                row = {"n": n, "ours": median(ours_t), "bound": median(bound_t)}
                row["ratio"] = row["ours"] / row["bound"]
                print(f"n={n}: drain {row['ours']:.3f}s, bound {row['bound']:.3f}s, "
                      f"ratio {row['ratio']:.2f}", flush=True)
                rows.append(row)
        finally:
            await conn.close()
            await store.close()
    return rows


def loglog_slope(ns: list[int], ts: list[float]) -> float:
    """Least-squares slope of log(t) on log(n): 1.0 is linear growth."""
    if len(ns) < 2:
        return float("nan")
    xs, ys = [math.log(n) for n in ns], [math.log(t) for t in ts]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return (sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
            / sum((x - mx) ** 2 for x in xs))


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, rx) = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [3, 2]})
    ns = [r["n"] for r in rows]
    ours = [r["ours"] for r in rows]
    bound = [r["bound"] for r in rows]
    ax.loglog(ns, ours, "o-", label=f"drain (balanced, guarded, audited), "
              f"slope {loglog_slope(ns, ours):.2f}")
    ax.loglog(ns, bound, "s--",
              label=f"bare UPDATE lower bound, slope {loglog_slope(ns, bound):.2f}")
    # Linear growth through the largest drain: a straight line of slope 1 on log-log axes.
    ax.loglog(ns, [ours[-1] * n / ns[-1] for n in ns], ":", color="grey",
              label="linear (slope 1) through the largest drain")
    ax.set_xlabel("pending tasks (3 thoughts each)")
    ax.set_ylabel("seconds (median)")
    ax.set_title("Drain to 3 survivors, PostgreSQL")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    rx.semilogx(ns, [r["ratio"] for r in rows], "o-", label="drain / bound")
    rx.axhline(TARGET_RATIO, color="red", linestyle="--", label=f"target {TARGET_RATIO:g}x")
    rx.set_ylim(0, max(TARGET_RATIO, *(r["ratio"] for r in rows)) * 1.2)
    rx.set_xlabel("pending tasks")
    rx.set_ylabel("drain / bound")
    rx.set_title("Cost over the lower bound")
    rx.grid(True, which="both", alpha=0.3)
    rx.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--png", default="benchmarks/drain.png")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = asyncio.run(main_async(sizes, args.repeat))
    png = args.png
    plot(rows, png)
    prev: dict | None = None
    lines = []
    for r in rows:
        growth = "" if prev is None else (
            f"{r['ours'] / prev['ours']:.1f}x / {r['bound'] / prev['bound']:.1f}x "
            f"(tasks {r['n'] / prev['n']:.0f}x)")
        ok = "yes" if r["ratio"] <= TARGET_RATIO else "**no**"
        lines.append(f"| {r['n']:,} | {r['ours']:.3f} | {r['bound']:.3f} | {r['ratio']:.2f}x "
                     f"| {ok} | {growth} |")
        prev = r
    ns = [r["n"] for r in rows]
    slope_ours = loglog_slope(ns, [r["ours"] for r in rows])
    slope_bound = loglog_slope(ns, [r["bound"] for r in rows])
    slopes = f"log-log slope (1.00 = linear): drain {slope_ours:.2f}, bound {slope_bound:.2f}"
    worst = max(r["ratio"] for r in rows)
    verdict = (f"Worst drain / bound: {worst:.2f}x — "
               + ("within" if worst <= TARGET_RATIO else "**over**")
               + f" the {TARGET_RATIO:g}x target at every size; {slopes}.")
    print(verdict)
    append_results(
        "Drain cost (PostgreSQL)",
        "Drain of N pending tasks with 3 thoughts each from one occurrence to 3 survivors "
        f"(median of {args.repeat}), beside the bare lower bound on the same rows (one UPDATE "
        "of the tasks and one of their thoughts, one transaction); runs alternate. Targets: "
        f"within {TARGET_RATIO:g}x of the bound at every size, linear growth (100k under 3 s).\n\n"
        "| tasks | drain s | bound s | drain / bound | within 2x | growth drain / bound |\n"
        "|---:|---:|---:|---:|---|---|\n"
        + "\n".join(lines)
        + f"\n\n{verdict}\n\n![drain]({png.split('/')[-1]})",
    )


if __name__ == "__main__":
    main()
