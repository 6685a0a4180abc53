"""The operator at scale on kwok: N AgentDeployments Ready, then idle traffic, then a mass drain.

On the local control plane (kube-apiserver, kwok nodes; testing/localcluster.py), one
throwaway PostgreSQL database shared by all, and `occurrence-operator --namespace NS` as a
subprocess with its default resync (300 s):

1. `--count` AgentDeployments of `--replicas` each (migrations disabled: this measures the
   operator, not the Job controller), applied at once: the time until all are Ready.
2. `--idle` seconds with nothing changing while a stand-in for the agents heartbeats every
   occurrence (one UPDATE every 10 s): API requests by verb from the API server's own
   `apiserver_request_total` (resources the operator touches), sampled every 30 s; then
   the same window with the operator frozen (SIGSTOP), whose rate is the cluster's own
   background (controllers, kwok) and is subtracted. Also the operator's own counters
   (GETs sent, reads answered from its cache, writes), database transactions per second
   (`pg_stat_database`, less the stand-in's own), the operator's RSS and CPU.
3. `--scale-down` of them at once to 5 and, with `--pending` tasks on each departing
   occurrence, back to 2 through the `/scale` subresource: time until every StatefulSet is
   at 2 with every departing task moved (checked in the database), and the slowest one.

    .venv/bin/python -m benchmarks.operator_idle [--count 1000] [--idle 600]

Appends to benchmarks/RESULTS.md and writes benchmarks/operator_idle.png.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg

from benchmarks.common import append_results, median, percentile
from benchmarks.operator_scale import Api, cpu_seconds, new_database, ready, seed_pending
from occurrence_store import Store
from testing import localcluster
from testing.operator_support import (
    OperatorProcess,
    agd_manifest,
    create_db_secret,
    drop_namespace,
    install_crd,
)
from testing.postgres import postgres_server

PNG = Path(__file__).with_name("operator_idle.png")
RESOURCES = ("agentdeployments", "statefulsets", "jobs", "services", "poddisruptionbudgets",
             "networkpolicies", "pods", "secrets", "events")
"""What the operator reads or writes; requests for anything else are not its own."""
HEARTBEAT_SECONDS = 10
SAMPLE_SECONDS = 30


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def apiserver_requests(cluster: Any, by_resource: bool = False) -> dict[str, float]:
    """`apiserver_request_total` summed by verb (or "VERB resource") over the operator's
    resources."""
    text = cluster.kubectl("get", "--raw", "/metrics", timeout=60).stdout
    by_verb: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels, _, value = line.rpartition(" ")
        fields = dict(part.split("=", 1) for part in labels[len("apiserver_request_total{"):-1]
                      .replace('"', "").split(","))
        if fields.get("resource") in RESOURCES:
            verb = fields.get("verb", "?")
            if by_resource:
                verb = f"{verb} {fields['resource']}/{fields.get('subresource', '')}".rstrip("/")
            by_verb[verb] = by_verb.get(verb, 0.0) + float(value)
    return by_verb


async def settle(cluster: Any, quiet_seconds: float = 60, limit: float = 900) -> dict[str, Any]:
    """Wait until nobody writes the operator's resources for `quiet_seconds` (the rollout's
    tail: the scheduler binding the last pods, their events): only then is it idle."""
    t0 = time.monotonic()
    last, quiet_since, tail = apiserver_requests(cluster, by_resource=True), t0, {}
    while time.monotonic() - t0 < limit:
        await asyncio.sleep(15)
        now = apiserver_requests(cluster, by_resource=True)
        writes = {k: v for k, v in diff(now, last).items()
                  if v and k.split()[0] not in ("GET", "LIST", "WATCH")}
        for key, value in writes.items():
            tail[key] = tail.get(key, 0.0) + value
        last = now
        if writes:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= quiet_seconds:
            break
    waited = time.monotonic() - t0
    log(f"settled after {waited:.0f} s; the rollout's tail wrote {tail}")
    return {"seconds": waited, "tail": tail}


def operator_counters(op: OperatorProcess) -> dict[str, float]:
    samples = op.metrics()
    out = {"api_gets": 0.0, "cache_reads": 0.0, "writes": 0.0, "reconciles": 0.0}
    for key, value in samples.items():
        if key.startswith("occurrence_operator_api_reads_total"):
            out["api_gets" if 'source="api"' in key else "cache_reads"] += value
        elif key.startswith("occurrence_operator_api_writes_total"):
            out["writes"] += value
        elif key.startswith("occurrence_operator_reconciles_total"):
            out["reconciles"] += value
    return out


async def transactions(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval(
        "SELECT xact_commit + xact_rollback FROM pg_stat_database "
        "WHERE datname = current_database()"))


def diff(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: after.get(k, 0.0) - before.get(k, 0.0) for k in set(after) | set(before)}


class Heartbeats:
    """Every active occurrence's agent, as far as the registry can tell: one UPDATE."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sent = 0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Heartbeats:
        self._conn = await asyncpg.connect(self.url)
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        while True:
            await self._conn.execute(
                "UPDATE occurrences SET heartbeat_at = now(), "
                "lease_expires_at = now() + interval '60 seconds' WHERE state = 'active'")
            self.sent += 1
            await asyncio.sleep(HEARTBEAT_SECONDS)

    async def __aexit__(self, *_: Any) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._conn.close()


async def wait_ready(api: Api, ns: str, names: set[str], replicas: int, timeout: float,
                     t0: float) -> dict[str, float]:
    ready_at: dict[str, float] = {}
    while len(ready_at) < len(names):
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"only {len(ready_at)}/{len(names)} Ready after {timeout:.0f} s")
        for agd in await api.agds(ns):
            name = agd["metadata"]["name"]
            if name in names and name not in ready_at and ready(agd, replicas):
                ready_at[name] = time.monotonic() - t0
        await asyncio.sleep(2)
    return ready_at


async def roll_out(cluster: Any, api: Api, op: OperatorProcess, ns: str, count: int,
                   replicas: int) -> dict[str, Any]:
    names = [f"agd-{i:04d}" for i in range(count)]
    docs = [agd_manifest(n, ns, replicas=replicas, migrations={"enabled": False})
            for n in names]
    assert op.proc is not None
    cpu0, t0 = cpu_seconds(op.proc.pid), time.monotonic()
    for start in range(0, count, 100):
        await asyncio.to_thread(cluster.kubectl, "apply", "-f", "-",
                                input="---\n".join(docs[start:start + 100]), timeout=600)
    applied = time.monotonic() - t0
    log(f"applied {count} AgentDeployments in {applied:.1f} s")
    ready_at = await wait_ready(api, ns, set(names), replicas, 3600, t0)
    times = sorted(ready_at.values())
    result = {"names": names, "applied": applied, "all_ready": times[-1],
              "p50": percentile(times, 50), "p90": percentile(times, 90),
              "cpu": cpu_seconds(op.proc.pid) - cpu0}
    log(f"all {count} Ready after {times[-1]:.1f} s (p50 {result['p50']:.1f} s)")
    return result


async def window(cluster: Any, op: OperatorProcess, db: asyncpg.Connection, beats: Heartbeats,
                 seconds: float, series: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Counters over `seconds` (sampled every SAMPLE_SECONDS into `series`)."""
    assert op.proc is not None
    frozen = series is None
    start = {"api": apiserver_requests(cluster), "xact": await transactions(db),
             "detail": apiserver_requests(cluster, by_resource=True),
             "beats": beats.sent, "cpu": cpu_seconds(op.proc.pid), "t": time.monotonic(),
             "op": None if frozen else operator_counters(op)}
    last, rss = dict(start), []
    while time.monotonic() - start["t"] < seconds:
        await asyncio.sleep(min(SAMPLE_SECONDS, seconds - (time.monotonic() - start["t"])))
        api = apiserver_requests(cluster)
        rss.append(rss_mib(op.proc.pid))
        now = time.monotonic()
        if series is not None:
            series.append({"t": now - start["t"],
                           "rates": {k: v / (now - last["t"]) for k, v in
                                     diff(api, last["api"]).items()}})
        last = {"api": api, "t": now}
    elapsed = time.monotonic() - start["t"]
    detail = {k: v for k, v in diff(apiserver_requests(cluster, by_resource=True),
                                    start["detail"]).items() if v}
    return {"seconds": elapsed, "api": diff(last["api"], start["api"]), "detail": detail,
            "xact": await transactions(db) - start["xact"] - (beats.sent - start["beats"]),
            "cpu": cpu_seconds(op.proc.pid) - start["cpu"], "rss": max(rss or [0.0]),
            "op": None if frozen else diff(operator_counters(op), start["op"])}


async def idle(cluster: Any, op: OperatorProcess, url: str, beats: Heartbeats,
               seconds: float, baseline_seconds: float) -> dict[str, Any]:
    db = await asyncpg.connect(url)
    try:
        series: list[dict[str, Any]] = []
        log(f"idle: measuring {seconds:.0f} s")
        measured = await window(cluster, op, db, beats, seconds, series)
        assert op.proc is not None
        os.kill(op.proc.pid, signal.SIGSTOP)
        try:
            log(f"idle: operator frozen, background for {baseline_seconds:.0f} s")
            background = await window(cluster, op, db, beats, baseline_seconds)
        finally:
            os.kill(op.proc.pid, signal.SIGCONT)
    finally:
        await db.close()
    return {"measured": measured, "background": background, "series": series}


async def mass_scale_down(cluster: Any, api: Api, op: OperatorProcess, ns: str, url: str,
                          names: list[str], pending: int, replicas: int) -> dict[str, Any]:
    """`names` to 5 (Ready), `pending` tasks on each of -2..-4, then all to 2 at once."""
    for name in names:
        await api.scale(ns, name, 5)
    t_up = time.monotonic()
    await wait_ready(api, ns, set(names), 5, 1800, t_up)
    log(f"{len(names)} at 5 after {time.monotonic() - t_up:.1f} s; seeding")
    await seed_pending(url, [f"{n}-{k}" for n in names for k in (2, 3, 4)], pending)
    conn = await asyncpg.connect(url)
    try:
        departing = {n: [f"{n}-{k}" for k in (2, 3, 4)] for n in names}
        t0 = time.monotonic()
        await asyncio.gather(*(api.scale(ns, n, 2) for n in names))
        requested = time.monotonic() - t0
        shrunk: dict[str, float] = {}
        while len(shrunk) < len(names) and time.monotonic() - t0 < 1800:
            sts = {s.metadata.name: int(s.spec.replicas) for s in (await asyncio.to_thread(
                api.apps.list_namespaced_stateful_set, ns)).items}
            left = dict(await conn.fetch(
                "SELECT split_part(agent_occurrence_id, '-', 1) || '-' || "
                "split_part(agent_occurrence_id, '-', 2) AS agd, count(*) FROM tasks "
                "WHERE agent_occurrence_id = ANY($1::text[]) AND status IN ('pending', 'active')"
                " GROUP BY 1", [i for n in names if n not in shrunk for i in departing[n]]))
            now = time.monotonic() - t0
            for name in names:
                if name not in shrunk and sts.get(name) == 2 and not left.get(name):
                    shrunk[name] = now
            await asyncio.sleep(0.5)
        survivors = [f"{n}-{k}" for n in names for k in (0, 1)]
        moved = int(await conn.fetchval(
            "SELECT count(*) FROM tasks WHERE agent_occurrence_id = ANY($1::text[]) "
            "AND status = 'pending'", survivors))
        stranded = int(await conn.fetchval(
            "SELECT count(*) FROM tasks WHERE agent_occurrence_id = ANY($1::text[])",
            [i for n in names for i in departing[n]]))
    finally:
        await conn.close()
    if len(shrunk) < len(names):
        raise TimeoutError(f"only {len(shrunk)}/{len(names)} shrunk with all work moved")
    times = sorted(shrunk.values())
    log(f"scale-down of {len(names)}: all at 2 with work moved after {times[-1]:.1f} s")
    return {"count": len(names), "pending": pending, "requested": requested, "times": times,
            "all": times[-1], "median": median(times), "moved": moved, "stranded": stranded}


@contextlib.asynccontextmanager
async def operator_in_namespace(cluster: Any, prefix: str
                                ) -> AsyncIterator[tuple[str, str, OperatorProcess]]:
    """A new namespace whose `db` Secret names a new, migrated database on a throwaway
    PostgreSQL, and the operator watching it (`--namespace`, default resync 300 s). Yields
    (namespace, database URL, operator); the operator is stopped and the namespace dropped
    after."""
    ns = cluster.create_namespace(f"{prefix}-{uuid.uuid4().hex[:5]}")
    with postgres_server() as pg, tempfile.TemporaryDirectory() as tmp:
        url = await new_database(pg)
        await (await Store.open(url, migrate=True)).close()
        create_db_secret(cluster, ns, url)
        op = OperatorProcess(cluster, [ns], Path(tmp) / "operator.log",
                             env={"OCCURRENCE_OPERATOR_RESYNC_SECONDS": "300"}).start()
        try:
            yield ns, url, op
        finally:
            op.stop()
            drop_namespace(cluster, ns)


async def main_async(args: argparse.Namespace) -> None:
    # kwok nodes take 110 pods each: enough of them for every pod and the scale-up to 5
    pods = args.count * args.replicas + args.scale_down * (5 - args.replicas)
    os.environ.setdefault("OCCURRENCE_KWOK_NODES", str(max(2, -(-pods // 100))))
    cluster = localcluster.start()
    try:
        install_crd(cluster)
        api = Api(cluster)
        async with operator_in_namespace(cluster, "bench-idle") as (ns, url, op):
            async with Heartbeats(url) as beats:
                rollout = await roll_out(cluster, api, op, ns, args.count, args.replicas)
                rollout["settle"] = await settle(cluster)
                quiet = await idle(cluster, op, url, beats, args.idle, args.baseline)
                drained = None
                if args.scale_down:
                    drained = await mass_scale_down(
                        cluster, api, op, ns, url, rollout["names"][:args.scale_down],
                        args.pending, args.replicas)
            errors = op.errors()
        result = {"rollout": {k: v for k, v in rollout.items() if k != "names"},
                  "idle": quiet, "drained": drained, "errors": errors[:5]}
        print(json.dumps({k: v for k, v in result.items() if k != "idle"}, indent=1))
        if not args.no_results:
            report(result, args)
            plot(quiet, args)
    finally:
        cluster.stop()


def per_agd_5min(count: float, seconds: float, agds: int) -> float:
    return count / agds / (seconds / 300)


def tail_text(counts: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.0f}" for k, v in sorted(counts.items())) or "none"


def report(result: dict[str, Any], args: argparse.Namespace) -> None:
    quiet, roll = result["idle"], result["rollout"]
    m, b = quiet["measured"], quiet["background"]
    n = args.count
    verbs = sorted(set(m["api"]) | set(b["api"]))
    rows = []
    for verb in verbs:
        rate_m, rate_b = m["api"].get(verb, 0) / m["seconds"], b["api"].get(verb, 0) / b["seconds"]
        own = max(0.0, rate_m - rate_b)
        rows.append(f"| {verb} | {rate_m:.3f} | {rate_b:.3f} | {own:.3f} | "
                    f"{own * 300 / n:.3f} |")
    total_own = sum(max(0.0, m["api"].get(v, 0) / m["seconds"] - b["api"].get(v, 0) / b["seconds"])
                    for v in verbs)
    writes_own = sum(max(0.0, m["api"].get(v, 0) / m["seconds"] - b["api"].get(v, 0)
                         / b["seconds"]) for v in verbs if v not in ("GET", "LIST", "WATCH"))
    op = m["op"]
    settled = roll["settle"]
    body = [
        f"`.venv/bin/python -m benchmarks.operator_idle --count {n} --replicas {args.replicas} "
        f"--idle {args.idle:.0f}`: the operator (`--namespace`, default resync 300 s) on the "
        "local control plane (kube-apiserver built from source, kwok nodes), one PostgreSQL "
        "database shared by all, migrations disabled, a stand-in heartbeating every "
        "occurrence every 10 s.",
        "",
        f"**Rollout:** {n} AgentDeployments x {args.replicas} replicas ({n * args.replicas} "
        f"pods) applied in {roll['applied']:.1f} s; all Ready after **{roll['all_ready']:.1f} "
        f"s** (p50 {roll['p50']:.1f} s, p90 {roll['p90']:.1f} s); operator CPU "
        f"{roll['cpu']:.1f} s. Idle measured once nobody had written the operator's "
        f"resources for 60 s ({settled['seconds']:.0f} s after Ready; the rollout's tail: "
        f"{tail_text(settled['tail'])}).",
        "",
        f"**Idle, {m['seconds']:.0f} s** (API server's `apiserver_request_total` over "
        f"{', '.join(RESOURCES)}; background = the same with the operator frozen for "
        f"{b['seconds']:.0f} s):",
        "",
        "| verb | requests/s | background/s | operator's/s | per AgentDeployment per 5 min |",
        "|---|---|---|---|---|",
        *rows,
        "",
        f"- Operator's requests: **{total_own * 300 / n:.3f} per AgentDeployment per 5 "
        f"minutes** (target ≤ 1); writes **{writes_own:.4f}/s** (target 0). Its own "
        f"counters over the window: {op['api_gets']:.0f} GETs sent, {op['cache_reads']:.0f} "
        f"reads answered from its cache, {op['writes']:.0f} writes, {op['reconciles']:.0f} "
        f"passes ({per_agd_5min(op['reconciles'], m['seconds'], n):.2f} per AgentDeployment "
        f"per 5 min); GETs per AgentDeployment per 5 min: "
        f"{per_agd_5min(op['api_gets'], m['seconds'], n):.3f}. By resource: "
        f"{tail_text(m['detail'])}.",
        f"- Database: {m['xact'] / m['seconds']:.2f} transactions/s with the operator "
        f"running (the heartbeat stand-in's own subtracted), "
        f"{b['xact'] / b['seconds']:.2f}/s frozen: "
        f"**{(m['xact'] / m['seconds'] - b['xact'] / b['seconds']) * 60 / n:.3f} per "
        f"AgentDeployment per minute**.",
        f"- Operator: RSS max **{m['rss']:.0f} MiB** (target ≤ 300), CPU "
        f"{m['cpu']:.1f} s in {m['seconds']:.0f} s ({100 * m['cpu'] / m['seconds']:.1f}% of "
        "one core).",
    ]
    d = result["drained"]
    if d:
        body += [
            "",
            f"**Mass scale-down:** {d['count']} AgentDeployments 5 → 2 at once through "
            f"`/scale`, {d['pending']:,} pending tasks on each departing occurrence "
            f"({3 * d['pending'] * d['count']:,} moved): every StatefulSet at 2 with all its "
            f"departing work moved after **{d['all']:.1f} s** (median {d['median']:.1f} s; "
            f"the slowest is the total). In the database: {d['moved']:,} pending on "
            f"survivors, {d['stranded']} left on departing ids.",
        ]
    if result["errors"]:
        body += ["", f"Operator errors logged: {len(result['errors'])} (first: "
                 f"{result['errors'][0][:200]})"]
    body += ["", "![operator idle traffic](operator_idle.png)"]
    append_results(f"Operator at {n} AgentDeployments: rollout, idle traffic, mass drain "
                   "(benchmarks/operator_idle.py)", "\n".join(body))


def plot(quiet: dict[str, Any], args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = quiet["series"]
    verbs = sorted({v for s in series for v in s["rates"]})
    fig, ax = plt.subplots(figsize=(8, 4))
    for verb in verbs:
        ax.plot([s["t"] for s in series], [s["rates"].get(verb, 0) for s in series],
                marker="o", label=verb)
    b = quiet["background"]
    background = sum(b["api"].values()) / b["seconds"]
    ax.axhline(background, linestyle="--", color="grey",
               label=f"all verbs, operator frozen ({background:.2f}/s)")
    ax.set_xlabel("seconds into the idle window")
    ax.set_ylabel("API requests/s (operator's resources)")
    ax.set_title(f"{args.count} idle AgentDeployments x {args.replicas}: API traffic by verb")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(PNG, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--idle", type=float, default=600)
    parser.add_argument("--baseline", type=float, default=120)
    parser.add_argument("--scale-down", type=int, default=100)
    parser.add_argument("--pending", type=int, default=1000)
    parser.add_argument("--no-results", action="store_true")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
