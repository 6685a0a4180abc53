"""Drain cost: N pending tasks (3 thoughts each) from one occurrence to 3 survivors.

Measured side by side in the same run, on the same server and the same rows, with the
bare lower bound: one ``UPDATE ... SET agent_occurrence_id`` over the tasks and one over
their thoughts (no balancing, no guard, no transfer records). Runs alternate, and each
size is repeated; medians are reported.

Growth is checked for linearity: the least-squares slope of log(time) on log(size) (1.0 is
linear) and the time factor per 10x more tasks, for the drain and for the bound.

    .venv/bin/python -m benchmarks.drain [--sizes 10000,100000] [--sqlite-sizes 10000,100000]
    .venv/bin/python -m benchmarks.drain --sizes 10000,100000,1000000   # with 1M, minutes

SQLite is measured the same way against its own bound (stdlib sqlite3 on the same file).

    .venv/bin/python -m benchmarks.drain --explain 100000   # where one batch's time goes

``--explain N`` seeds N tasks on PostgreSQL and prints ``EXPLAIN (ANALYZE, BUFFERS)`` of the
first batch's statement (the one the drain sends; rolled back), then exits: the profile
behind the ratio (benchmarks/RESULTS.md, "Drain: where a batch's time goes").
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from benchmarks.common import append_results, median
from occurrence_store import InFlightPolicy, Store
from occurrence_store.transfer import DEFAULT_DRAIN_BATCH
from testing.drain_plan import explain_drain_batch
from testing.postgres import postgres_server

SURVIVORS = ["bench-0", "bench-1", "bench-2"]
DEPARTING = "bench-3"
SEED_CHUNK = 100_000
TARGET_RATIO = 1.3
TASK_COLUMNS = ["task_id", "agent_occurrence_id", "channel_id", "description", "status",
                "priority", "created_at", "updated_at"]
THOUGHT_COLUMNS = ["thought_id", "source_task_id", "agent_occurrence_id", "thought_type",
                   "status", "content", "created_at", "updated_at"]
BOUND_SQL = ("UPDATE tasks SET agent_occurrence_id = $1 WHERE agent_occurrence_id = $2",
             "UPDATE thoughts SET agent_occurrence_id = $1 WHERE agent_occurrence_id = $2")
"""The bound: every task and every thought of the departing occurrence to one survivor."""


def seed_chunks(n: int) -> Iterator[tuple[list[tuple], list[tuple]]]:
    """(tasks, their 3 thoughts each) rows in chunks: 1M tasks are 4M rows."""
    now = datetime.now(UTC)
    tag = uuid.uuid4().hex[:6]
    for start in range(0, n, SEED_CHUNK):
        tasks = [(f"t-{i}-{tag}", DEPARTING, "", "bench", "pending", 0, now, now)
                 for i in range(start, min(n, start + SEED_CHUNK))]
        thoughts = [(f"{t[0]}-th{j}", t[0], DEPARTING, "standard", "pending", "x", now, now)
                    for t in tasks for j in range(3)]
        yield tasks, thoughts


class Postgres:
    """A fresh database on a server of its own; bound on a bare asyncpg connection."""

    name = "PostgreSQL"

    async def __aenter__(self) -> Postgres:
        self._server_cm = postgres_server()
        server = self._server_cm.__enter__()
        admin = await asyncpg.connect(server.url())
        await admin.execute("CREATE DATABASE bench")
        await admin.close()
        self.url = server.url("bench")
        self.store = await Store.open(self.url, migrate=True)
        self.conn = await asyncpg.connect(self.url)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.conn.close()
        await self.store.close()
        self._server_cm.__exit__(None, None, None)

    async def seed(self, n: int) -> None:
        await self.conn.execute("TRUNCATE tasks, thoughts, task_transfers")
        for tasks, thoughts in seed_chunks(n):
            await self.conn.copy_records_to_table("tasks", records=tasks, columns=TASK_COLUMNS)
            await self.conn.copy_records_to_table("thoughts", records=thoughts,
                                                  columns=THOUGHT_COLUMNS)
        await self.conn.execute("VACUUM ANALYZE tasks")
        await self.conn.execute("VACUUM ANALYZE thoughts")
        await self.conn.execute("CHECKPOINT")

    async def bound(self) -> float:
        start = time.perf_counter()
        async with self.conn.transaction():
            for sql in BOUND_SQL:
                await self.conn.execute(sql, SURVIVORS[0], DEPARTING)
        return time.perf_counter() - start


class Sqlite:
    """A fresh file (WAL, synchronous=NORMAL, as the store opens it); bound with the
    standard library's sqlite3 on the same file, one transaction."""

    name = "SQLite"

    async def __aenter__(self) -> Sqlite:
        self._dir = tempfile.TemporaryDirectory()
        self.path = Path(self._dir.name) / "bench.db"
        self.store = await Store.open(f"sqlite:///{self.path}", migrate=True)
        self.conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = NORMAL")
        self.conn.execute("PRAGMA busy_timeout = 60000")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.conn.close()
        await self.store.close()
        self._dir.cleanup()

    def _seed(self, n: int) -> None:
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        for table in ("tasks", "thoughts", "task_transfers"):
            c.execute(f"DELETE FROM {table}")
        for tasks, thoughts in seed_chunks(n):
            c.executemany(f"INSERT INTO tasks ({', '.join(TASK_COLUMNS)}) VALUES "
                          f"({', '.join('?' * len(TASK_COLUMNS))})",
                          [(*t[:6], t[6].isoformat(), t[7].isoformat()) for t in tasks])
            c.executemany(f"INSERT INTO thoughts ({', '.join(THOUGHT_COLUMNS)}) VALUES "
                          f"({', '.join('?' * len(THOUGHT_COLUMNS))})",
                          [(*t[:6], t[6].isoformat(), t[7].isoformat()) for t in thoughts])
        c.execute("COMMIT")
        c.execute("ANALYZE")
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    async def seed(self, n: int) -> None:
        await asyncio.to_thread(self._seed, n)

    def _bound(self) -> float:
        start = time.perf_counter()
        self.conn.execute("BEGIN IMMEDIATE")
        for sql in BOUND_SQL:
            self.conn.execute(sql.replace("$", "?"), (SURVIVORS[0], DEPARTING))
        self.conn.execute("COMMIT")
        return time.perf_counter() - start

    async def bound(self) -> float:
        return await asyncio.to_thread(self._bound)


BACKENDS = {"postgres": Postgres, "sqlite": Sqlite}


async def ours(store: Store, n: int, batch: int) -> float:
    start = time.perf_counter()
    result = await store.transfers.drain(DEPARTING, SURVIVORS, in_flight=InFlightPolicy.RELEASE,
                                         reason="benchmark", batch_size=batch)
    elapsed = time.perf_counter() - start
    assert result.tasks_moved == n and result.thoughts_moved == 3 * n, result
    return elapsed


async def main_async(backend: str, sizes: list[int], repeat: int, batch: int) -> list[dict]:
    rows = []
    async with BACKENDS[backend]() as db:
        for occ in [*SURVIVORS, DEPARTING]:
            await db.store.registry.register(occ)
        for n in sizes:
            ours_t, bound_t = [], []
            for rep in range(repeat):  # alternate which one runs first
                for which in (("bound", "ours") if rep % 2 == 0 else ("ours", "bound")):
                    await db.seed(n)
                    if which == "bound":
                        bound_t.append(await db.bound())
                    else:
                        ours_t.append(await ours(db.store, n, batch))
            row = {"n": n, "ours": median(ours_t), "bound": median(bound_t),
                   "ours_all": ours_t, "bound_all": bound_t}
            row["ratio"] = row["ours"] / row["bound"]
            print(f"{db.name} n={n}: drain {row['ours']:.3f}s, bound {row['bound']:.3f}s, "
                  f"ratio {row['ratio']:.2f}", flush=True)
            rows.append(row)
    return rows


async def explain(n: int, batch: int) -> None:
    """Print the plan, with actual times, of the first drain batch over `n` seeded tasks."""
    async with Postgres() as db:
        await db.seed(n)
        for line in await explain_drain_batch(db.store, DEPARTING, SURVIVORS, limit=batch,
                                              movable=n, analyze=True):
            print(line)


def loglog_slope(ns: list[int], ts: list[float]) -> float:
    """Least-squares slope of log(t) on log(n): 1.0 is linear growth."""
    if len(ns) < 2:
        return float("nan")
    xs, ys = [math.log(n) for n in ns], [math.log(t) for t in ts]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return (sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
            / sum((x - mx) ** 2 for x in xs))


def plot(results: dict[str, list[dict]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, rx) = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [3, 2]})
    for name, rows in results.items():
        ns = [r["n"] for r in rows]
        ours, bound = [r["ours"] for r in rows], [r["bound"] for r in rows]
        line = ax.loglog(ns, ours, "o-", label=f"{name}: drain (balanced, guarded, audited), "
                         f"slope {loglog_slope(ns, ours):.2f}")[0]
        ax.loglog(ns, bound, "s--", color=line.get_color(),
                  label=f"{name}: bare UPDATE bound, slope {loglog_slope(ns, bound):.2f}")
        rx.semilogx(ns, [r["ratio"] for r in rows], "o-", color=line.get_color(),
                    label=f"{name}: drain / bound")
    ax.set_xlabel("pending tasks (3 thoughts each)")
    ax.set_ylabel("seconds (median)")
    ax.set_title("Drain to 3 survivors")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    ratios = [r["ratio"] for rows in results.values() for r in rows]
    rx.axhline(TARGET_RATIO, color="red", linestyle="--", label=f"target {TARGET_RATIO:g}x")
    rx.set_ylim(0, max(TARGET_RATIO, *ratios) * 1.2)
    rx.set_xlabel("pending tasks")
    rx.set_ylabel("drain / bound")
    rx.set_title("Cost over the lower bound")
    rx.grid(True, which="both", alpha=0.3)
    rx.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def table(name: str, rows: list[dict]) -> str:
    prev: dict | None = None
    lines = [f"**{name}**", "",
             "| tasks | drain s | bound s | drain / bound | within "
             f"{TARGET_RATIO:g}x | growth drain / bound | per repetition drain / bound s |",
             "|---:|---:|---:|---:|---|---|---|"]
    for r in rows:
        growth = "" if prev is None else (
            f"{r['ours'] / prev['ours']:.1f}x / {r['bound'] / prev['bound']:.1f}x "
            f"(tasks {r['n'] / prev['n']:.0f}x)")
        ok = "yes" if r["ratio"] <= TARGET_RATIO else "**no**"
        reps = ", ".join(f"{o:.2f}/{b:.2f}" for o, b in
                         zip(r["ours_all"], r["bound_all"], strict=True))
        lines.append(f"| {r['n']:,} | {r['ours']:.3f} | {r['bound']:.3f} | {r['ratio']:.2f}x "
                     f"| {ok} | {growth} | {reps} |")
        prev = r
    ns = [r["n"] for r in rows]
    slopes = (f"log-log slope (1.00 = linear): drain "
              f"{loglog_slope(ns, [r['ours'] for r in rows]):.2f}, bound "
              f"{loglog_slope(ns, [r['bound'] for r in rows]):.2f}")
    worst = max(r["ratio"] for r in rows)
    verdict = (f"Worst drain / bound: {worst:.2f}x — "
               + ("within" if worst <= TARGET_RATIO else "**over**")
               + f" the {TARGET_RATIO:g}x target at every size; {slopes}.")
    print(f"{name}: {verdict}")
    return "\n".join([*lines, "", verdict])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--sqlite-sizes", default="10000,100000",
                        help="sizes for SQLite ('' to skip it)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_DRAIN_BATCH)
    parser.add_argument("--png", default="benchmarks/drain.png")
    parser.add_argument("--explain", type=int, metavar="N",
                        help="print one batch's EXPLAIN ANALYZE over N tasks, then exit")
    args = parser.parse_args()
    if args.explain:
        asyncio.run(explain(args.explain, args.batch_size))
        return
    plan = {"PostgreSQL": ("postgres", args.sizes), "SQLite": ("sqlite", args.sqlite_sizes)}
    results = {name: asyncio.run(main_async(backend, [int(x) for x in sizes.split(",")],
                                            args.repeat, args.batch_size))
               for name, (backend, sizes) in plan.items() if sizes}
    png = args.png
    plot(results, png)
    append_results(
        f"Drain cost ({', '.join(results)}; batch {args.batch_size:,})",
        "Drain of N pending tasks with 3 thoughts each from one occurrence to 3 survivors "
        f"(`store.transfers.drain`, batch {args.batch_size:,}; median of {args.repeat}), "
        "beside the bare lower bound on the same rows and the same database (one UPDATE of "
        "the tasks and one of their thoughts, one transaction: PostgreSQL on a bare asyncpg "
        "connection, SQLite with the standard library's sqlite3 on the same file); runs "
        f"alternate. Targets: within {TARGET_RATIO:g}x of the bound at every size, linear "
        "growth.\n\n"
        + "\n\n".join(table(name, rows) for name, rows in results.items())
        + f"\n\n![drain]({png.split('/')[-1]})",
    )


if __name__ == "__main__":
    main()
