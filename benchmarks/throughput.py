"""Work throughput vs peers: K occurrences each claiming and completing only their own tasks.

The workload: N no-op jobs, pre-enqueued, split evenly between K owners (K concurrent
asyncio workers in this process, each with its own connection or pool); the clock runs
from starting the K workers until all of them have drained their share. Run on one
PostgreSQL server (started here, as the test suite does), one database per system:

- **bare asyncpg** — the bound: the same claim and complete statements as ours, taken from
  the store verbatim, on one bare asyncpg connection per worker and nothing else;
- **ours** — ``occurrence_store``: each occurrence has its own :class:`Store` (asyncpg
  pool) and loops ``scope.activate_pending_tasks(batch)`` (one ``FOR UPDATE SKIP LOCKED``
  statement), runs a no-op per task, then ``scope.complete_tasks(ids)`` (one guarded
  statement);
- **PgQueuer** (asyncpg) — one ``QueueManager`` per owner, on its own ``AsyncpgDriver``
  connection, with only that owner's entrypoint registered; jobs pre-enqueued with the
  batch form of ``Queries.enqueue``; ``qm.run(batch_size=batch, mode=drain)``;
- **Procrastinate** (psycopg 3 pool, ``PsycopgConnector``) — one ``App`` per owner with its
  own pool, one queue per owner; jobs pre-enqueued with ``batch_defer_async``;
  ``run_worker_async(queues=[own], wait=False, concurrency=batch)`` (Procrastinate fetches
  one job per statement; its concurrency is the nearest thing to a batch size).

Every peer keeps its defaults otherwise (listen/notify on, its own completion bookkeeping:
PgQueuer moves a finished job to its log table, Procrastinate marks it ``succeeded``; ours
marks the task ``completed``). Systems alternate within each repetition (the order
rotates), each K is repeated, and medians are reported with the ratio ours / peer.

    .venv/bin/python -m benchmarks.throughput [--ks 1,2,4,8] [--jobs 20000] [--batch 10]
        [--repeat 3] [--systems ours,pgqueuer,procrastinate]

Peers are benchmark-only dependencies: ``pip install -r benchmarks/requirements.txt``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from benchmarks.common import append_results, median
from occurrence_store import Store, TaskStatus
from occurrence_store.scoped import _ACTIVATE, complete_tasks_sql
from occurrence_store.sql import compile_named
from testing.postgres import postgres_server

SYSTEMS = ("ours", "bare", "pgqueuer", "procrastinate")
LABELS = {"ours": "occurrence_store", "bare": "bare asyncpg", "pgqueuer": "PgQueuer",
          "procrastinate": "Procrastinate"}
PEERS = ("pgqueuer", "procrastinate")
"""The libraries ours is compared with ("bare" is the bound, not a peer)."""
SEED_CHUNK = 5000


def owner(i: int) -> str:
    return f"occ-{i}"


async def noop(_item: Any) -> None:
    return None


async def settle(url: str, tables: list[str]) -> None:
    """Same state for every system before the clock starts: fresh stats, clean checkpoint."""
    conn = await asyncpg.connect(url)
    try:
        for table in tables:
            await conn.execute(f"VACUUM ANALYZE {table}")
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


# --------------------------------------------------------------------------- ours


class Ours:
    def __init__(self, url: str) -> None:
        self.url = url

    async def setup(self) -> None:
        store = await Store.open(self.url, migrate=True)
        await store.close()

    async def seed(self, k: int, per: int) -> None:
        store = await Store.open(self.url)
        try:
            async with store.db.connection() as conn:
                await conn.execute("TRUNCATE tasks, thoughts")
            for i in range(k):
                scope = store.scope(owner(i))
                for start in range(0, per, SEED_CHUNK):
                    await scope.add_tasks(["noop"] * min(SEED_CHUNK, per - start))
        finally:
            await store.close()
        await settle(self.url, ["tasks"])

    @staticmethod
    async def worker(store: Store, occurrence: str, batch: int) -> int:
        scope = store.scope(occurrence)
        done = 0
        while tasks := await scope.activate_pending_tasks(batch):
            for task in tasks:
                await noop(task)
            done += await scope.complete_tasks([t.task_id for t in tasks])
        return done

    async def run(self, k: int, per: int, batch: int) -> float:
        stores = [await Store.open(self.url, min_size=1, max_size=2) for _ in range(k)]
        try:
            start = time.perf_counter()
            counts = await asyncio.gather(
                *(self.worker(s, owner(i), batch) for i, s in enumerate(stores)))
            elapsed = time.perf_counter() - start
            assert counts == [per] * k, counts
            total = sum([await stores[0].scope(owner(i)).count_tasks(TaskStatus.COMPLETED)
                         for i in range(k)])
            assert total == k * per, total
        finally:
            for s in stores:
                await s.close()
        return elapsed


# --------------------------------------------------------------------------- the bound


class Bare(Ours):
    """The physical limit here: ours' own claim and complete statements, verbatim (taken
    from the store, so they cannot drift), issued on one bare asyncpg connection per
    worker — no pool, no row parsing, no library around them. Same tables and seed."""

    async def run(self, k: int, per: int, batch: int) -> float:
        store = await Store.open(self.url)
        claim_sql, claim_names = compile_named(store.db.claim_sql(_ACTIVATE))
        complete_sql, complete_names = compile_named(complete_tasks_sql(store.db))
        await store.close()

        async def worker(conn: asyncpg.Connection, occurrence: str) -> int:
            values = {"active": TaskStatus.ACTIVE.value, "pending": TaskStatus.PENDING.value,
                      "occurrence_id": occurrence, "limit": batch,
                      "status": TaskStatus.COMPLETED.value}
            claim_args = [values[n] for n in claim_names]
            done = 0
            while rows := await conn.fetch(claim_sql, *claim_args):
                for row in rows:
                    await noop(row)
                values["ids"] = [r["task_id"] for r in rows]
                done += len(await conn.fetch(complete_sql, *[values[n] for n in complete_names]))
            return done

        conns = [await asyncpg.connect(self.url) for _ in range(k)]
        try:
            start = time.perf_counter()
            counts = await asyncio.gather(*(worker(c, owner(i)) for i, c in enumerate(conns)))
            elapsed = time.perf_counter() - start
            assert counts == [per] * k, counts
        finally:
            for c in conns:
                await c.close()
        return elapsed


# --------------------------------------------------------------------------- PgQueuer


class PgQueuer:
    def __init__(self, url: str) -> None:
        self.url = url

    async def setup(self) -> None:
        from pgqueuer.db import AsyncpgDriver
        from pgqueuer.queries import Queries

        conn = await asyncpg.connect(self.url)
        try:
            await Queries(AsyncpgDriver(conn)).install()
        finally:
            await conn.close()

    async def seed(self, k: int, per: int) -> None:
        from pgqueuer.db import AsyncpgDriver
        from pgqueuer.queries import Queries

        conn = await asyncpg.connect(self.url)
        try:
            await conn.execute("TRUNCATE pgqueuer, pgqueuer_log, pgqueuer_statistics")
            queries = Queries(AsyncpgDriver(conn))
            for i in range(k):
                for start in range(0, per, SEED_CHUNK):
                    m = min(SEED_CHUNK, per - start)
                    await queries.enqueue([owner(i)] * m, [None] * m, [0] * m)
        finally:
            await conn.close()
        await settle(self.url, ["pgqueuer", "pgqueuer_log", "pgqueuer_statistics"])

    async def run(self, k: int, per: int, batch: int) -> float:
        from pgqueuer.db import AsyncpgDriver
        from pgqueuer.qm import QueueManager
        from pgqueuer.queries import Queries
        from pgqueuer.types import QueueExecutionMode

        conns = [await asyncpg.connect(self.url) for _ in range(k)]
        managers = []
        for i, conn in enumerate(conns):
            qm = QueueManager(Queries(AsyncpgDriver(conn)))

            async def job(_job: Any) -> None:
                await noop(_job)

            qm.entrypoint(owner(i))(job)
            managers.append(qm)
        try:
            start = time.perf_counter()
            await asyncio.gather(*(qm.run(batch_size=batch, mode=QueueExecutionMode.drain)
                                   for qm in managers))
            elapsed = time.perf_counter() - start
        finally:
            for conn in conns:
                if not conn.is_closed():
                    await conn.close()
        check = await asyncpg.connect(self.url)
        try:
            left = await check.fetchval("SELECT count(*) FROM pgqueuer")
            assert left == 0, f"{left} PgQueuer jobs left"
        finally:
            await check.close()
        return elapsed


# --------------------------------------------------------------------------- Procrastinate


class Procrastinate:
    def __init__(self, url: str) -> None:
        self.url = url

    def app(self, pool_size: int) -> Any:
        import procrastinate

        app = procrastinate.App(connector=procrastinate.PsycopgConnector(
            conninfo=self.url, min_size=pool_size, max_size=pool_size))

        @app.task(name="noop")
        async def noop_task() -> None:
            await noop(None)

        return app

    async def setup(self) -> None:
        app = self.app(1)
        async with app.open_async():
            await app.schema_manager.apply_schema_async()

    async def seed(self, k: int, per: int) -> None:
        conn = await asyncpg.connect(self.url)
        try:
            await conn.execute("TRUNCATE procrastinate_jobs, procrastinate_events, "
                               "procrastinate_periodic_defers, procrastinate_workers CASCADE")
        finally:
            await conn.close()
        app = self.app(1)
        async with app.open_async():
            task = app.tasks["noop"]
            for i in range(k):
                deferrer = task.configure(queue=owner(i))
                for start in range(0, per, SEED_CHUNK):
                    await deferrer.batch_defer_async(*([{}] * min(SEED_CHUNK, per - start)))
        await settle(self.url, ["procrastinate_jobs", "procrastinate_events"])

    async def run(self, k: int, per: int, batch: int) -> float:
        # A pool as large as the worker's concurrency (+2 for its side tasks), opened first.
        apps = [self.app(batch + 2) for _ in range(k)]
        for app in apps:
            await app.open_async()
        try:
            start = time.perf_counter()
            await asyncio.gather(*(
                app.run_worker_async(queues=[owner(i)], wait=False, concurrency=batch,
                                     name=owner(i))
                for i, app in enumerate(apps)))
            elapsed = time.perf_counter() - start
        finally:
            for app in apps:
                await app.close_async()
        check = await asyncpg.connect(self.url)
        try:
            done = await check.fetchval(
                "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'")
            assert done == k * per, f"{done} of {k * per} Procrastinate jobs succeeded"
        finally:
            await check.close()
        return elapsed


FACTORIES: dict[str, Callable[[str], Any]] = {
    "ours": Ours, "bare": Bare, "pgqueuer": PgQueuer, "procrastinate": Procrastinate}


def versions(systems: list[str]) -> str:
    dists = ["asyncpg"]
    for s in systems:
        dists += {"pgqueuer": ["pgqueuer"],
                  "procrastinate": ["procrastinate", "psycopg", "psycopg-binary"]}.get(s, [])
    out = []
    for d in dict.fromkeys(dists):
        try:
            out.append(f"{d} {importlib.metadata.version(d)}")
        except importlib.metadata.PackageNotFoundError:
            out.append(f"{d} (not installed)")
    return ", ".join(out)


async def timed(label: str, coro: Awaitable[float], n: int) -> float:
    elapsed = await coro
    print(f"  {label}: {n} jobs in {elapsed:.3f}s = {n / elapsed:,.0f} jobs/s", flush=True)
    return elapsed


async def main_async(ks: list[int], jobs: int, batch: int, repeat: int,
                     systems: list[str]) -> list[dict]:
    # PgQueuer and Procrastinate log every job on their own loggers; keep it quiet (and
    # Procrastinate warns that the App is made in __main__, which is deliberate here).
    logging.getLogger("pgqueuer").setLevel(logging.WARNING)
    logging.getLogger("procrastinate").setLevel(logging.ERROR)
    samples: dict[tuple[int, str], list[float]] = {(k, s): [] for k in ks for s in systems}
    with postgres_server() as server:
        admin = await asyncpg.connect(server.url())
        impls = {}
        for s in systems:
            await admin.execute(f"CREATE DATABASE bench_{s}")
            impls[s] = FACTORIES[s](server.url(f"bench_{s}"))
            await impls[s].setup()
        await admin.close()
        for rep in range(repeat):
            for ki, k in enumerate(ks):
                per = jobs // k
                shift = (rep + ki) % len(systems)
                order = systems[shift:] + systems[:shift]
                print(f"rep {rep + 1}/{repeat}, K={k} ({per} jobs each), order {order}",
                      flush=True)
                for s in order:
                    await impls[s].seed(k, per)
                    elapsed = await timed(s, impls[s].run(k, per, batch), k * per)
                    samples[(k, s)].append(k * per / elapsed)
    rows = []
    for k in ks:
        row: dict[str, Any] = {"k": k, "n": (jobs // k) * k}
        for s in systems:
            row[s] = median(samples[(k, s)])
            row[f"{s}_all"] = samples[(k, s)]
        rows.append(row)
    return rows


def plot(rows: list[dict], systems: list[str], batch: int, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    ks = [r["k"] for r in rows]
    for s, marker in zip(systems, "o^sd", strict=False):
        mid = [r[s] for r in rows]
        spread = [[m - min(r[f"{s}_all"]) for m, r in zip(mid, rows, strict=True)],
                  [max(r[f"{s}_all"]) - m for m, r in zip(mid, rows, strict=True)]]
        ax.errorbar(ks, mid, yerr=spread, fmt=marker + "-", capsize=3,
                    label=f"{LABELS[s]} (median, min-max)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("K occurrences / workers (each drains only its own jobs)")
    ax.set_ylabel("jobs / s (median)")
    ax.set_ylim(bottom=0)
    ax.set_title(f"No-op job throughput, one PostgreSQL, batch {batch}")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ks", default="1,2,4,8")
    parser.add_argument("--jobs", type=int, default=20_000, help="total jobs per K")
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--png", default="benchmarks/throughput.png")
    args = parser.parse_args()
    ks = [int(k) for k in args.ks.split(",")]
    systems = [s for s in args.systems.split(",") if s]
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        parser.error(f"unknown systems {sorted(unknown)}; choose from {SYSTEMS}")
    rows = asyncio.run(main_async(ks, args.jobs, args.batch, args.repeat, systems))
    plot(rows, systems, args.batch, args.png)
    peers = [s for s in systems if s in PEERS]
    bare = "bare" in systems and "ours" in systems
    head = ["K", "jobs", *(f"{LABELS[s]} jobs/s" for s in systems)]
    if bare:
        head.append("ours / bare")
    if "ours" in systems:
        head += [f"ours / {LABELS[p]}" for p in peers]
        if len(peers) > 1:
            head.append("ours / best peer")
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for r in rows:
        cells = [str(r["k"]), f"{r['n']:,}", *(f"{r[s]:,.0f}" for s in systems)]
        if bare:
            cells.append(f"{r['ours'] / r['bare']:.2f}x")
        if "ours" in systems:
            cells += [f"{r['ours'] / r[p]:.2f}x" for p in peers]
            if len(peers) > 1:
                cells.append(f"{r['ours'] / max(r[p] for p in peers):.2f}x")
        lines.append("| " + " | ".join(cells) + " |")
    def paired(r: dict) -> str:  # ratios within each repetition (same moment)
        text = ""
        if bare:
            text += "; ours / bare per repetition " + ", ".join(
                f"{o / b:.2f}x" for o, b in zip(r["ours_all"], r["bare_all"], strict=True))
        if "ours" in systems and peers:
            ratios = [o / max(r[f"{p}_all"][i] for p in peers)
                      for i, o in enumerate(r["ours_all"])]
            text += "; ours / best peer per repetition " + ", ".join(f"{x:.2f}x" for x in ratios)
        return text

    raw = "\n".join(
        f"- K={r['k']}: " + "; ".join(
            f"{LABELS[s]} " + ", ".join(f"{v:,.0f}" for v in r[f"{s}_all"]) for s in systems)
        + paired(r)
        for r in rows)
    append_results(
        f"Work throughput vs peers (PostgreSQL, batch {args.batch})",
        f"Versions: {versions(systems)}.\n\n"
        f"{args.jobs:,} no-op jobs per K, pre-enqueued and split evenly between K owners; K "
        "concurrent asyncio workers in one process, each with its own connection/pool, each "
        "claiming and completing only its own jobs; the clock runs from starting the workers "
        "until all have drained. Ours: `activate_pending_tasks(batch)` + `complete_tasks(ids)` "
        f"per occurrence. PgQueuer: one `QueueManager` per owner (own entrypoint, asyncpg "
        f"driver), `run(batch_size={args.batch}, mode=drain)`. Procrastinate: one `App` per "
        f"owner (own queue, `PsycopgConnector` pool), `run_worker_async(wait=False, "
        f"concurrency={args.batch})`. Systems alternate (rotating order) on one server; median "
        f"of {args.repeat} runs; ratios are of medians. Bare asyncpg: ours' own claim and "
        "complete statements, verbatim, on one connection per worker with nothing around "
        "them (the bound). Targets: ours / bare >= 0.8, ours / best peer >= 1.0.\n\n"
        + "\n".join(lines)
        + f"\n\nAll runs (jobs/s):\n\n{raw}\n\n![throughput]({args.png.split('/')[-1]})",
    )


if __name__ == "__main__":
    main()
