"""The operator on a real API server: scale-down drain time, no-op writes, reconcile throughput.

On the local control plane (testing/localcluster.py: reuses a running one, honours
OCCURRENCE_CLUSTER_DIR and OCCURRENCE_TEST_KUBECONFIG, else starts one and stops it at
the end), a throwaway PostgreSQL, and `occurrence-operator` as a subprocess (resync 2 s):

(a) scale-down 5 -> 2 with 10,000 pending tasks on each departing occurrence (30,000 in
    all): time from the scale request (a PATCH of the scale subresource) to StatefulSet
    replicas = 2 with every departing task transferred, median of `--repeat` runs (target
    under 10 s); phases from the operator's drain-step log lines; then until the drain is
    `Done` (kwok deleted the pods, swept, retired);
(b) API writes per no-op reconcile: `occurrence_operator_api_writes_total` over several
    resync periods with every AgentDeployment steady and its agents heartbeating (target 0);
(c) `--many` (200) AgentDeployments of 1 replica created at once (migrations disabled:
    this measures the operator, not the Job controller): time until each is Ready, and
    reconciles per second.

    .venv/bin/python -m benchmarks.operator_scale [--repeat 3] [--tasks 10000] [--many 200]

Appends to benchmarks/RESULTS.md and writes benchmarks/operator_scale.png.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg

from benchmarks.common import append_results, median, percentile
from occurrence_store import Store
from testing import localcluster
from testing.operator_support import (
    RESYNC_SECONDS,
    OperatorProcess,
    agd_manifest,
    create_db_secret,
    drop_namespace,
    install_crd,
)
from testing.postgres import create_database, postgres_server
from testing.waiting import wait_for_async

PNG = Path(__file__).with_name("operator_scale.png")
GROUP, VERSION, PLURAL = "occurrence.dev", "v1alpha1", "agentdeployments"
TARGET_SECONDS = 10.0
STEP = re.compile(r"^(?P<name>[a-z0-9-]+): (?P<action>[A-Z][A-Za-z]+) .*\((?P<why>[^)]*)\)$")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


class Api:
    def __init__(self, cluster: Any) -> None:
        from kubernetes import client

        self.api_client = cluster.api_client()
        self.custom = client.CustomObjectsApi(self.api_client)
        self.apps = client.AppsV1Api(self.api_client)

    async def agd(self, ns: str, name: str) -> dict[str, Any]:
        return await asyncio.to_thread(
            self.custom.get_namespaced_custom_object, GROUP, VERSION, ns, PLURAL, name
        )

    async def agds(self, ns: str) -> list[dict[str, Any]]:
        listed = await asyncio.to_thread(
            self.custom.list_namespaced_custom_object, GROUP, VERSION, ns, PLURAL
        )
        return list(listed["items"])

    async def scale(self, ns: str, name: str, replicas: int) -> None:
        await asyncio.to_thread(
            self.custom.patch_namespaced_custom_object_scale,
            GROUP,
            VERSION,
            ns,
            PLURAL,
            name,
            {"spec": {"replicas": replicas}},
        )

    async def sts_replicas(self, ns: str, name: str) -> int:
        sts = await asyncio.to_thread(self.apps.read_namespaced_stateful_set, name, ns)
        return int(sts.spec.replicas)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ready(agd: dict[str, Any], replicas: int) -> bool:
    status = agd.get("status") or {}
    conds = {c["type"]: c for c in status.get("conditions") or []}
    return (
        conds.get("Ready", {}).get("status") == "True"
        and status.get("readyReplicas") == replicas
        and status.get("observedGeneration") == agd["metadata"].get("generation")
    )


async def new_database(pg: Any) -> str:
    """The URL of a new, empty database on `pg`."""
    return str(pg.url(await create_database(pg)))


async def seed_pending(url: str, owners: str | list[str], n: int) -> None:
    """n pending tasks owned by each of `owners`, in one COPY (seeding is not what is
    measured)."""
    now = datetime.now().astimezone()
    tag = uuid.uuid4().hex[:6]
    rows = [(f"{owner}-{tag}-{i}", owner, "", "bench", "pending", 0, now, now)
            for owner in ([owners] if isinstance(owners, str) else owners) for i in range(n)]
    conn = await asyncpg.connect(url)
    try:
        await conn.copy_records_to_table(
            "tasks", records=rows,
            columns=["task_id", "agent_occurrence_id", "channel_id", "description", "status",
                     "priority", "created_at", "updated_at"])
        await conn.execute("ANALYZE tasks")
    finally:
        await conn.close()


async def departing_work(conn: asyncpg.Connection, ids: list[str]) -> int:
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM tasks WHERE agent_occurrence_id = ANY($1::text[]) "
            "AND status IN ('pending', 'active')",
            ids,
        )
    )


# -- (a) scale-down ----------------------------------------------------------------------


async def scale_down_once(
    cluster: Any, api: Api, op: OperatorProcess, ns: str, pg: Any, run: int, tasks: int
) -> dict[str, Any]:
    name = f"drain-{run}"
    url = await new_database(pg)
    store = await Store.open(url, migrate=True)
    conn = await asyncpg.connect(url)
    try:
        ids = [f"{name}-{k}" for k in range(5)]
        for k, occ in enumerate(ids):
            await store.registry.register(occ, ordinal=k)
        secret = f"db-{run}"
        create_db_secret(cluster, ns, url, name=secret)
        cluster.apply(
            agd_manifest(name, ns, replicas=5, secret=secret, migrations={"enabled": False})
        )

        async def running() -> bool:
            return ready(await api.agd(ns, name), 5)

        await wait_for_async(running, 180, f"{name} Ready with 5", interval=0.5)
        for occ in ids[2:]:
            await seed_pending(url, occ, tasks)
        for occ in ids[:2]:
            await seed_pending(url, occ, 100)
        total = 3 * tasks

        t0_wall, t0 = time.time(), time.monotonic()
        await api.scale(ns, name, 2)
        shrunk_at: float | None = None
        violations = 0
        while time.monotonic() - t0 < 300:
            replicas = await api.sts_replicas(ns, name)
            work = await departing_work(conn, ids[2:])
            if replicas < 5 and work > 0:
                violations += 1
            if replicas == 2 and work == 0:
                shrunk_at = time.monotonic() - t0
                break
            await asyncio.sleep(0.02)
        if shrunk_at is None:
            raise TimeoutError(f"{name}: no shrink with all work moved within 300 s")

        async def done() -> bool:
            sd = ((await api.agd(ns, name)).get("status") or {}).get("scaleDown") or {}
            return sd.get("phase") == "Done"

        await wait_for_async(done, 300, f"{name} drain Done", interval=0.1)
        done_at = time.monotonic() - t0
        transfers = await store.transfers.count_transfers()
        if transfers != total:
            raise AssertionError(f"{name}: {transfers} transfer records for {total} tasks")
        steps = []
        for record in op.log_records():
            m = STEP.match(str(record.get("message", "")))
            if m and m["name"] == name:
                at = datetime.fromisoformat(record["timestamp"]).timestamp() - t0_wall
                if at >= 0:
                    steps.append((at, m["action"], m["why"]))
        log(
            f"{name}: StatefulSet at 2 with {total} tasks moved after {shrunk_at:.2f}s, "
            f"drain Done after {done_at:.2f}s; steps {[(round(a, 2), s) for a, s, _ in steps]}"
        )
        return {
            "shrunk": shrunk_at,
            "done": done_at,
            "steps": steps,
            "violations": violations,
            "name": name,
            "url": url,
        }
    finally:
        await conn.close()
        await store.close()


def phases(result: dict[str, Any]) -> list[tuple[str, float]]:
    """Consecutive phases of one scale-down, in seconds, from its drain-step log lines."""
    steps = result["steps"]

    def at(action: str, why: str = "") -> float | None:
        for t, a, w in steps:
            if a == action and why in w:
                return t
        return None

    marks = [
        ("noticed (watch -> first step)", at("Advance", "scale-down requested")),
        ("fence + in-flight check", at("Transfer")),
        ("transfer 30k tasks", at("Shrink")),
        ("shrink -> StatefulSet at 2", result["shrunk"]),
        ("pods gone, sweep, retire", result["done"]),
    ]
    out, previous = [], 0.0
    for label, t in marks:
        if t is None:
            continue
        out.append((label, max(0.0, t - previous)))
        previous = max(previous, t)
    return out


# -- (b) no-op writes ----------------------------------------------------------------------


async def noop_writes(op: OperatorProcess, urls: list[str], periods: int) -> dict[str, float]:
    stores = [await Store.open(url) for url in urls]
    try:

        async def heartbeat() -> None:  # the agents of the surviving occurrences
            for store in stores:
                for occ in await store.registry.list():
                    if str(occ.state) == "active":
                        await store.registry.heartbeat(occ.occurrence_id)

        await heartbeat()
        await asyncio.sleep(2 * RESYNC_SECONDS)  # let the last status writes land
        writes, reconciles = op.api_writes(), op.reconciles()
        for _ in range(periods):
            await asyncio.sleep(RESYNC_SECONDS)
            await heartbeat()
        d_writes, d_reconciles = op.api_writes() - writes, op.reconciles() - reconciles
        return {
            "writes": d_writes,
            "reconciles": d_reconciles,
            "per_reconcile": d_writes / max(1, d_reconciles),
            "seconds": periods * RESYNC_SECONDS,
        }
    finally:
        for store in stores:
            await store.close()


# -- (c) many at once ---------------------------------------------------------------------


async def many_at_once(
    cluster: Any, api: Api, op: OperatorProcess, ns: str, pg: Any, count: int
) -> dict[str, Any]:
    url = await new_database(pg)
    await (await Store.open(url, migrate=True)).close()
    create_db_secret(cluster, ns, url, name="db-many")
    docs = [
        agd_manifest(
            f"many-{i:03d}", ns, replicas=1, secret="db-many", migrations={"enabled": False}
        )
        for i in range(count)
    ]
    reconciles0 = op.reconciles()
    assert op.proc is not None
    cpu0 = cpu_seconds(op.proc.pid)
    t0_wall, t0 = time.time(), time.monotonic()
    applying = asyncio.create_task(
        asyncio.to_thread(
            cluster.kubectl, "apply", "-f", "-", input="---\n".join(docs), timeout=300
        )
    )
    applied: float | None = None
    ready_at: dict[str, float] = {}
    while len(ready_at) < count and time.monotonic() - t0 < 900:
        if applied is None and applying.done():
            applying.result()
            applied = time.monotonic() - t0
        for agd in await api.agds(ns):
            name = agd["metadata"]["name"]
            if name.startswith("many-") and name not in ready_at and ready(agd, 1):
                ready_at[name] = time.monotonic() - t0
        await asyncio.sleep(0.25)
    elapsed = time.monotonic() - t0
    cpu = cpu_seconds(op.proc.pid) - cpu0
    reconciles = op.reconciles() - reconciles0
    await applying
    if len(ready_at) < count:
        raise TimeoutError(f"only {len(ready_at)}/{count} Ready after {elapsed:.0f}s")
    times = sorted(ready_at.values())
    created = sorted(  # when the operator created each StatefulSet (its drain-driver log)
        datetime.fromisoformat(r["timestamp"]).timestamp() - t0_wall
        for r in op.log_records()
        if re.match(r"^many-\d+: Scale 1 \(create StatefulSet\)", str(r.get("message", "")))
    )
    log(
        f"{count} AgentDeployments Ready after {times[-1]:.1f}s ({reconciles} reconciles); "
        f"operator created the last StatefulSet after {created[-1] if created else -1:.1f}s, "
        f"used {cpu:.1f}s CPU"
    )
    return {
        "times": times,
        "created": created,
        "cpu": cpu,
        "elapsed": elapsed,
        "applied": applied if applied is not None else elapsed,
        "all_ready": times[-1],
        "reconciles": reconciles,
        "reconciles_per_s": reconciles / times[-1],
    }


# -- report --------------------------------------------------------------------------------


def plot(runs: list[dict[str, Any]], many: dict[str, Any] | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2 if many else 1, figsize=(13 if many else 8, 4.2))
    ax = axes[0] if many else axes
    colors = ["#9aa5b1", "#f0b429", "#2680c2", "#3ebd93", "#cbd2d9"]
    for row, result in enumerate(runs):
        left = 0.0
        for k, (label, seconds) in enumerate(phases(result)):
            ax.barh(
                row,
                seconds,
                left=left,
                color=colors[k % len(colors)],
                label=label if row == 0 else None,
            )
            left += seconds
    ax.axvline(TARGET_SECONDS, color="#d64545", linestyle="--", label="target (10 s, to shrink)")
    ax.set_yticks(range(len(runs)), [f"run {i + 1}" for i in range(len(runs))])
    ax.set_xlabel("seconds since the scale request")
    ax.set_title("Scale-down 5 -> 2, 3 x 10,000 pending tasks")
    ax.legend(fontsize=7, loc="lower right")
    if many:
        ax2 = axes[1]
        times = many["times"]
        created = many["created"]
        if created:
            ax2.step(
                created,
                [(i + 1) / len(created) for i in range(len(created))],
                where="post",
                label="operator created the StatefulSet",
            )
        ax2.step(
            times,
            [(i + 1) / len(times) for i in range(len(times))],
            where="post",
            label="AgentDeployment Ready (pod Running via kwok)",
        )
        ax2.legend(fontsize=7, loc="lower right")
        ax2.set_xlabel("seconds since the start of `kubectl apply` of all")
        ax2.set_ylabel("fraction Ready")
        ax2.set_title(f"{len(times)} AgentDeployments created at once: time to Ready")
        ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(PNG, dpi=110)
    log(f"wrote {PNG}")


async def main_async(args: argparse.Namespace) -> None:
    cluster = localcluster.start()
    try:
        install_crd(cluster)
        api = Api(cluster)
        ns = cluster.create_namespace(f"bench-opscale-{uuid.uuid4().hex[:5]}")
        with postgres_server() as pg, tempfile.TemporaryDirectory() as tmp:
            op = OperatorProcess(cluster, [ns], Path(tmp) / "operator.log").start()
            try:
                runs = []
                for run in range(1, args.repeat + 1):
                    runs.append(await scale_down_once(cluster, api, op, ns, pg, run, args.tasks))
                noop = await noop_writes(op, [r["url"] for r in runs], args.periods)
                log(f"no-op: {noop}")
                many = None
                if args.many:
                    names = [r["name"] for r in runs]
                    cluster.kubectl("-n", ns, "delete", "agd", *names, timeout=300)
                    many = await many_at_once(cluster, api, op, ns, pg, args.many)
                errors = op.errors()
            finally:
                op.stop()
                drop_namespace(cluster, ns)
        if args.no_results:
            print(json.dumps({"shrunk": [r["shrunk"] for r in runs], "noop": noop}, indent=1))
        else:
            report(runs, noop, many, args, errors)
            plot(runs, many)
    finally:
        cluster.stop()


def report(
    runs: list[dict[str, Any]],
    noop: dict[str, float],
    many: dict[str, Any] | None,
    args: argparse.Namespace,
    errors: list[str],
) -> None:
    shrunk = [r["shrunk"] for r in runs]
    done = [r["done"] for r in runs]
    verdict = "meets" if median(shrunk) < TARGET_SECONDS else "MISSES"
    lines = [
        "Operator (`occurrence-operator` subprocess, resync "
        f"{RESYNC_SECONDS} s) on the local control plane (kube-apiserver built from source, "
        "kwok nodes) and a throwaway PostgreSQL. `.venv/bin/python -m "
        "benchmarks.operator_scale`.",
        "",
        f"**(a) Scale-down 5 → 2, {args.tasks:,} pending tasks on each departing occurrence "
        f"({3 * args.tasks:,} moved), {len(runs)} runs.** Scale request (PATCH of the scale "
        "subresource) → StatefulSet replicas = 2 with every departing task transferred: "
        f"median **{median(shrunk):.2f} s** (runs: {', '.join(f'{s:.2f}' for s in shrunk)}; "
        f"{verdict} the 10 s target). Until the drain is `Done` (kwok deleted the pods, "
        f"final sweep, retired): median {median(done):.2f} s. Transfer records = tasks in "
        f"every run; StatefulSet never below 5 while departing work remained "
        f"(violations: {sum(r['violations'] for r in runs)}).",
        "",
        "| phase (median of runs) | seconds |",
        "|---|---|",
    ]
    labels = [label for label, _ in phases(runs[0])]
    for label in labels:
        values = [dict(phases(r)).get(label, 0.0) for r in runs]
        lines.append(f"| {label} | {median(values):.2f} |")
    lines += [
        "",
        f"**(b) API writes per no-op reconcile:** {noop['writes']:.0f} writes over "
        f"{noop['reconciles']:.0f} reconciles in {noop['seconds']:.0f} s of steady state "
        f"({len(runs)} AgentDeployments, agents heartbeating) = "
        f"**{noop['per_reconcile']:.2f}** per reconcile (target 0).",
    ]
    if many:
        times = many["times"]
        lines += [
            "",
            f"**(c) {len(times)} AgentDeployments (1 replica each, migrations disabled) "
            "created by one `kubectl apply`** (it took "
            f"{many['applied']:.1f} s to create them one after the other; times from its "
            f"start): all Ready "
            f"after **{many['all_ready']:.1f} s** (p50 {percentile(times, 50):.1f} s, p90 "
            f"{percentile(times, 90):.1f} s); {many['reconciles']} reconciles in that time = "
            f"**{many['reconciles_per_s']:.1f} reconciles/s**.",
        ]
        created = many["created"]
        if created:
            lines[-1] += (
                f" The operator had created their StatefulSets after p50 "
                f"{percentile(created, 50):.1f} s, all {len(created)} after {created[-1]:.1f} s."
            )
        lines[-1] += (
            f" The operator process used {many['cpu']:.1f} s of CPU in those "
            f"{many['elapsed']:.1f} s ({100 * many['cpu'] / many['elapsed']:.0f}% of one core)."
        )
    if errors:
        lines += ["", f"Operator logged {len(errors)} error lines; first: `{errors[0][:200]}`"]
    lines += ["", f"![operator scale]({PNG.name})"]
    append_results("Operator: scale-down drain, no-op writes, 200 at once", "\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3, help="scale-down runs (median)")
    parser.add_argument("--tasks", type=int, default=10_000, help="per departing occurrence")
    parser.add_argument("--periods", type=int, default=10, help="resync periods for (b)")
    parser.add_argument("--many", type=int, default=200, help="(c): 0 skips it")
    parser.add_argument(
        "--no-results", action="store_true", help="smoke run: print, record nothing"
    )
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
