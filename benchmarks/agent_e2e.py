"""What a user feels: tasks through real agent processes, from the HTTP submit to the finish.

K `occurrence-agent` processes (the real runtime: HTTP API, worker, heartbeat, journal) on one
PostgreSQL started here; the default handler with no simulated work (`--simulated-work-ms
0`), so what is measured is the machinery, not the work. Two phases per K:

- **latency** — one client per agent submits one task at a time (`POST /tasks`, then the next
  after `--gap` seconds); submit → start is the time from sending the request to the agent's
  journal event `thought_started` of the task (one clock: same host). Percentiles over all.
- **throughput** — every agent gets `--tasks` tasks submitted with 16 requests in flight
  each; tasks/s is the count over the time from the first request to the last
  `task_finished`.

Beside it, the **bare bound**, side by side in the same run: the same per-task database work
done in-process by K asyncio workers on the store (add the task, activate it, add its thought,
claim it, complete the thought, complete the task) — no HTTP, no process, no polling. The
ratio agents / bound is the cost of the runtime around the store.

    .venv/bin/python -m benchmarks.agent_e2e [--ks 1,2,4] [--tasks 1000] [--latency 200]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.common import append_results, median, percentile
from benchmarks.operator_scale import cpu_seconds
from occurrence_agent.journal import read_journal
from occurrence_store import Store, TaskStatus, ThoughtStatus
from testing.postgres import postgres_server

PNG = Path(__file__).with_name("agent_e2e.png")
IN_FLIGHT = 16
"""Requests in flight per agent in the throughput phase."""


class Agents:
    """K agent processes on one database, each with its journal and port file."""

    def __init__(self, url: str, k: int, workdir: Path, run: str) -> None:
        self.url, self.workdir = url, workdir
        self.ids = [f"{run}-{i}" for i in range(k)]
        self.procs: list[subprocess.Popen[bytes]] = []
        self.ports: dict[str, int] = {}

    def journal(self, occ: str) -> Path:
        return self.workdir / f"{occ}.journal"

    def _spawn(self) -> None:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("AGENT_") and k != "DATABASE_URL"}
        for occ in self.ids:
            args = [sys.executable, "-m", "occurrence_agent.cli", "--occurrence-id", occ,
                    "--database-url", self.url, "--host", "127.0.0.1", "--port", "0",
                    "--port-file", str(self.workdir / f"{occ}.port"),
                    "--journal", str(self.journal(occ)), "--simulated-work-ms", "0",
                    "--submit-rate", "0", "--log-level", "WARNING"]
            with open(self.workdir / f"{occ}.log", "wb") as log:
                self.procs.append(subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                                   env=env))

    async def __aenter__(self) -> Agents:
        self._spawn()
        deadline = time.monotonic() + 60
        async with aiohttp.ClientSession() as session:
            for occ in self.ids:
                while True:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{occ} not ready: "
                                           f"{(self.workdir / f'{occ}.log').read_text()[-2000:]}")
                    with contextlib.suppress(OSError, ValueError, aiohttp.ClientError):
                        port = int((self.workdir / f"{occ}.port").read_text())
                        async with session.get(f"http://127.0.0.1:{port}/readyz") as r:
                            if r.status == 200:
                                self.ports[occ] = port
                                break
                    await asyncio.sleep(0.1)
        return self

    async def __aexit__(self, *_: object) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()

    def events(self, kind: str) -> dict[str, float]:
        """task id -> time of its first `kind` journal event, over every agent."""
        seen: dict[str, float] = {}
        for occ in self.ids:
            for event in read_journal(self.journal(occ)):
                if event["event"] == kind and event.get("task_id") not in seen:
                    seen[event["task_id"]] = float(event["t"])
        return seen


async def _post(session: aiohttp.ClientSession, port: int, text: str) -> str:
    async with session.post(f"http://127.0.0.1:{port}/tasks",
                            json={"description": text}) as resp:
        body = await resp.json()
        if resp.status != 201:
            raise RuntimeError(f"submit refused: {resp.status} {body}")
        return str(body["task_id"])


async def _wait_finished(agents: Agents, ids: set[str], timeout: float) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while True:
        finished = agents.events("task_finished")
        if ids <= set(finished):
            return finished
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(ids - set(finished))} of {len(ids)} tasks unfinished")
        await asyncio.sleep(0.2)


async def latency(agents: Agents, count: int, gap: float) -> list[float]:
    sent: dict[str, float] = {}

    async def client(occ: str) -> None:
        async with aiohttp.ClientSession() as session:
            for n in range(count // len(agents.ids)):
                t0 = time.time()
                sent[await _post(session, agents.ports[occ], f"latency {n}")] = t0
                await asyncio.sleep(gap)

    await asyncio.gather(*(client(occ) for occ in agents.ids))
    await _wait_finished(agents, set(sent), 120)
    started = agents.events("thought_started")
    return [started[task] - t0 for task, t0 in sent.items()]


def _cpu_seconds(pid: int) -> float:
    """A live process's CPU so far; 0 once it is gone (a backend that ended meanwhile)."""
    try:
        return cpu_seconds(pid)
    except OSError:
        return 0.0


def _postgres_cpu() -> float:
    """CPU of every `postgres` process on the host (the benchmark's server: run it alone)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == "postgres":
                    total += _cpu_seconds(int(entry.name))
    return total


class CpuMeter:
    """Where the CPU of a phase went: the agent processes, PostgreSQL, this client."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids

    def sample(self) -> tuple[float, float, float]:
        return (sum(_cpu_seconds(p) for p in self.pids), _postgres_cpu(), time.process_time())

    @staticmethod
    def per_task_us(before: tuple[float, float, float], after: tuple[float, float, float],
                    tasks: int) -> dict[str, float]:
        names = ("agents", "postgres", "client")
        return {n: 1e6 * (a - b) / tasks for n, a, b in zip(names, after, before, strict=True)}


async def throughput(agents: Agents, per_agent: int) -> tuple[float, float, dict[str, float]]:
    """(tasks/s end to end, tasks/s accepted by the API, CPU µs per task by process)."""
    ids: set[str] = set()
    meter = CpuMeter([p.pid for p in agents.procs])
    cpu0 = meter.sample()

    async def client(occ: str) -> None:
        queue = iter(range(per_agent))
        async with aiohttp.ClientSession() as session:
            async def lane() -> None:
                for n in queue:
                    ids.add(await _post(session, agents.ports[occ], f"bulk {n}"))
            await asyncio.gather(*(lane() for _ in range(IN_FLIGHT)))

    t0 = time.time()
    await asyncio.gather(*(client(occ) for occ in agents.ids))
    submitted = time.time() - t0
    finished = await _wait_finished(agents, ids, 600)
    elapsed = max(finished[t] for t in ids) - t0
    return len(ids) / elapsed, len(ids) / submitted, meter.per_task_us(
        cpu0, meter.sample(), len(ids))


async def bound(url: str, k: int, per_worker: int, run: str
                ) -> tuple[float, dict[str, float]]:
    """tasks/s of the same database work per task, in-process, K concurrent workers; CPU µs
    per task by process."""
    stores = [await Store.open(url) for _ in range(k)]
    meter = CpuMeter([])
    try:
        async def worker(i: int) -> None:
            scope = stores[i].scope(f"{run}-bound-{i}")
            for n in range(per_worker):
                task = await scope.add_task(f"bound {n}")
                (active,) = await scope.activate_pending_tasks(1)
                await scope.add_thought(active.task_id, "think")
                (thought,) = await scope.claim_pending_thoughts(1)
                await scope.update_thought_status(thought.thought_id, ThoughtStatus.COMPLETED)
                await scope.update_task_status(task.task_id, TaskStatus.COMPLETED)

        cpu0, t0 = meter.sample(), time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(k)))
        rate = k * per_worker / (time.perf_counter() - t0)
        return rate, meter.per_task_us(cpu0, meter.sample(), k * per_worker)
    finally:
        for store in stores:
            await store.close()


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


async def main_async(ks: list[int], per_agent: int, latency_count: int, gap: float
                     ) -> list[dict[str, Any]]:
    rows = []
    with postgres_server() as pg, tempfile.TemporaryDirectory() as tmp:
        url = pg.url()
        await (await Store.open(url, migrate=True)).close()
        for k in ks:
            run = f"k{k}"
            workdir = Path(tmp) / run
            workdir.mkdir()
            async with Agents(url, k, workdir, run) as agents:
                lat = await latency(agents, latency_count, gap)
                e2e, accepted, cpu = await throughput(agents, per_agent)
            bare, bare_cpu = await bound(url, k, per_agent, run)
            row = {"k": k, "tasks": k * per_agent, "p50_ms": 1000 * median(lat),
                   "p95_ms": 1000 * percentile(lat, 95), "p99_ms": 1000 * percentile(lat, 99),
                   "e2e": e2e, "accepted": accepted, "bound": bare, "load": load_average(),
                   "latencies_ms": sorted(1000 * t for t in lat), "cpu": cpu,
                   "bound_cpu": bare_cpu}
            print(json.dumps({k: v for k, v in row.items() if k != "latencies_ms"}), flush=True)
            rows.append(row)
    return rows


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"K `occurrence-agent` processes on one PostgreSQL, default handler with no simulated "
        f"work. Latency: {args.latency} tasks submitted one at a time ({args.gap:g} s apart per "
        "client), submit → `thought_started` (journal, same host clock). Throughput: "
        f"{args.tasks} tasks per agent, {IN_FLIGHT} requests in flight per agent, first request "
        "→ last `task_finished`. Bound: the same per-task store calls in-process (add, activate, "
        "add thought, claim, complete thought, complete task), K workers, measured in the same "
        "run right after.",
        "",
        "| K | tasks | submit→start p50 ms | p95 ms | p99 ms | accepted /s | end-to-end tasks/s "
        "| bound tasks/s | agents / bound | load avg after |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    cpu_lines = [
        "",
        "Where the CPU goes, µs per task (`/proc/PID/stat` of the agent processes and of every "
        "`postgres` process, `time.process_time()` of the client; in the bound the client is "
        "the in-process workers). With 2 cores, 2,000,000 µs/s divided by the total is the "
        "most this machine can do:",
        "",
        "| K | agents | PostgreSQL | client | total → ceiling tasks/s | bound: PostgreSQL | "
        "bound: client | bound total → ceiling |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        c, b = r["cpu"], r["bound_cpu"]
        total, btotal = sum(c.values()), b["postgres"] + b["client"]
        cpu_lines.append(
            f"| {r['k']} | {c['agents']:.0f} | {c['postgres']:.0f} | {c['client']:.0f} | "
            f"{total:.0f} → {2e6 / total:,.0f} | {b['postgres']:.0f} | {b['client']:.0f} | "
            f"{btotal:.0f} → {2e6 / btotal:,.0f} |")
    for r in rows:
        lines.append(f"| {r['k']} | {r['tasks']:,} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | "
                     f"{r['p99_ms']:.1f} | {r['accepted']:,.0f} | {r['e2e']:,.0f} | "
                     f"{r['bound']:,.0f} | {r['e2e'] / r['bound']:.2f}x | {r['load']} |")
    return "\n".join(lines + cpu_lines)


def plot(rows: list[dict[str, Any]], path: Path = PNG) -> None:
    """The distribution of submit → start latencies per K (empirical CDF, log x)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for r in rows:
        ms = r["latencies_ms"]
        ax.step(ms, [(i + 1) / len(ms) for i in range(len(ms))], where="post",
                label=f"K={r['k']}: p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms")
    ax.axvline(50, color="red", linestyle="--", label="target: p99 ≤ 50 ms")
    ax.set_xscale("log")
    ax.set(xlabel="submit (POST /tasks) → the worker starts it, ms", ylabel="fraction of tasks",
           title="Submit-to-start latency through real agents")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ks", default="1,2,4")
    parser.add_argument("--tasks", type=int, default=1000, help="per agent (throughput)")
    parser.add_argument("--latency", type=int, default=200, help="tasks, over all agents")
    parser.add_argument("--gap", type=float, default=0.05)
    args = parser.parse_args()
    rows = asyncio.run(main_async([int(k) for k in args.ks.split(",")], args.tasks,
                                  args.latency, args.gap))
    plot(rows)
    append_results("Tasks through real agent processes (benchmarks/agent_e2e.py)",
                   report(rows, args) + f"\n\n![latency distribution]({PNG.name})")


if __name__ == "__main__":
    main()
