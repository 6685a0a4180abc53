"""The blast radius of a bad agent version: Canary rollout vs plain RollingUpdate.

On the local control plane (kwok nodes), a throwaway PostgreSQL, the operator as a
subprocess, and *real agent processes*: a follower runs one `occurrence-agent` per agent pod,
with what the pod was created from — its revision (`--revision`, the pod's
controller-revision-hash, as `AGENT_REVISION` gives it in a real pod) and the pod's
`AGENT_SIMULATED_FAILURE_RATIO` — and replaces it (SIGTERM, then the new one) when its pod is
recreated, as a kubelet would.

Per strategy, one AgentDeployment of --replicas occurrences under steady load (--rate tasks/s
spread over the occurrences, each --work-ms of simulated work): after --settle s on the stable
template, the template changes to a bad version (AGENT_SIMULATED_FAILURE_RATIO --bad-ratio);
the load goes on for --window s; then the load stops and the backlog is worked off. With
RollingUpdate nobody rolls back (what a readiness-gated update does: the bad version is Ready).
Measured from the database, after everything finished:

- the share of the tasks finished after the bad template was applied that the bad revision
  touched (finished them, or failed them and gave them back);
- the tasks left failed at the end;
- seconds from the first canary Ready (the wave started baking) to the rollback decision.

Target (issue "nothing lost to a bad version"): the bad revision touches <= 15 % of the tasks
and leaves 0 failed with Canary; RollingUpdate's figures beside it.

    .venv/bin/python -m benchmarks.rollout [--replicas 10] [--rate 10] [--window 90]

Appends to benchmarks/RESULTS.md and writes benchmarks/rollout.png.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg

from benchmarks.autoscale import agd_ready
from benchmarks.common import append_results
from benchmarks.operator_scale import Api, log, new_database
from occurrence_store import Store
from testing import localcluster
from testing.agentproc import Agent, stop_agents
from testing.operator_support import (
    OperatorProcess,
    agd_manifest,
    create_db_secret,
    drop_namespace,
    install_crd,
)
from testing.postgres import postgres_server
from testing.waiting import wait_for_async

PNG = Path(__file__).with_name("rollout.png")
STABLE_IMAGE, BAD_IMAGE = "registry.example/agent:1", "registry.example/agent:2"
CANARY = {
    "strategy": "Canary", "analysisIntervalSeconds": 5, "failureLimit": 2,
    "waves": [
        {"name": "explorer", "occurrences": 1, "bakeSeconds": 60, "maxBakeSeconds": 180,
         "gates": [{"metric": "taskFailureRatio", "maxIncreaseOverStable": 0.1,
                    "minSamples": 10}]},
        {"name": "early", "percent": 25, "bakeSeconds": 60,
         "gates": [{"metric": "taskFailureRatio", "maxIncreaseOverStable": 0.1,
                    "minSamples": 20}]},
        {"name": "general", "percent": 100, "bakeSeconds": 0}]}


class RevisionFollower:
    """One agent process per live agent pod, run as the pod was created: its revision and
    its failure ratio; replaced when the pod is (a new uid)."""

    def __init__(self, cluster: Any, ns: str, name: str, url: str, workdir: Path,
                 work_ms: int) -> None:
        self.cluster, self.ns, self.name, self.url = cluster, ns, name, url
        self.workdir, self.work_ms = workdir, work_ms
        self.agents: dict[str, tuple[str, Agent]] = {}
        self.retired: list[Agent] = []

    def _pods(self) -> dict[str, dict[str, Any]]:
        listed = self.cluster.kubectl_json(
            "-n", self.ns, "get", "pods", "-l",
            f"occurrence.dev/agentdeployment={self.name},occurrence.dev/component=agent")
        return {p["metadata"]["name"]: p for p in listed["items"]
                if not p["metadata"].get("deletionTimestamp")}

    def _options(self, pod: dict[str, Any]) -> dict[str, str]:
        [container] = pod["spec"]["containers"]
        env = {e["name"]: e["value"] for e in container.get("env") or [] if "value" in e}
        return {"--agent-id": env["AGENT_ID"],
                "--in-flight-recovery": env["AGENT_IN_FLIGHT_RECOVERY"],
                "--revision": pod["metadata"]["labels"]["controller-revision-hash"],
                "--simulated-failure-ratio": env.get("AGENT_SIMULATED_FAILURE_RATIO", "0"),
                "--simulated-work-ms": str(self.work_ms),
                "--poll-interval": "0.2", "--heartbeat-interval": "1"}

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            pods = await asyncio.to_thread(self._pods)
            for name, (uid, agent) in list(self.agents.items()):
                pod = pods.get(name)
                if pod is None or pod["metadata"]["uid"] != uid:
                    del self.agents[name]
                    agent.signal(signal.SIGTERM)  # the pod went: its agent stops first
                    with contextlib.suppress(AssertionError):
                        await agent.wait_exit(20)
                    agent.kill()
                    self.retired.append(agent)
            for name, pod in pods.items():
                if name not in self.agents:
                    self.agents[name] = (pod["metadata"]["uid"],
                                         Agent(name, self.url, self.workdir,
                                               self._options(pod)).start())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)

    async def close(self) -> None:
        await stop_agents([*(a for _, a in self.agents.values()), *self.retired], 20)


async def load(store: Store, name: str, replicas: int, rate: float, prefix: str,
               stop: asyncio.Event) -> int:
    """`rate` tasks a second, round robin over the occurrences, until `stop`."""
    sent, started = 0, time.monotonic()
    while not stop.is_set():
        due = int((time.monotonic() - started) * rate)
        while sent < due:
            await store.scope(f"{name}-{sent % replicas}").add_task(f"{prefix} {sent}")
            sent += 1
        await asyncio.sleep(0.05)
    return sent


async def _counts(url: str, prefix: str, bad: str | None, since: datetime) -> dict[str, int]:
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow(
            "SELECT count(*) FILTER (WHERE t.status IN ('pending', 'active')) AS backlog, "
            "count(*) FILTER (WHERE t.status = 'completed') AS completed, "
            "count(*) FILTER (WHERE t.status = 'failed') AS failed, "
            "count(*) FILTER (WHERE t.updated_at >= $3) AS after, "
            "count(*) FILTER (WHERE t.updated_at >= $3 AND (t.revision = $2 OR EXISTS ("
            "  SELECT 1 FROM task_requeues r WHERE r.task_id = t.task_id "
            "  AND r.revision = $2))) AS touched, "
            "(SELECT count(*) FROM task_requeues) AS requeued "
            "FROM tasks t WHERE t.description LIKE $1", f"{prefix}%", bad or "", since)
        return {k: int(v) for k, v in dict(row).items()}
    finally:
        await conn.close()


async def scenario(cluster: Any, api: Api, pg: Any, strategy: str,
                   args: argparse.Namespace) -> dict[str, Any]:
    ns = cluster.create_namespace(f"bench-ro-{strategy.lower()}-{uuid.uuid4().hex[:4]}")
    name, url = "fleet", await new_database(pg)
    store = await Store.open(url, migrate=True)
    rollout = CANARY if strategy == "Canary" else {"strategy": "RollingUpdate"}
    prefix = f"load-{strategy}"
    with tempfile.TemporaryDirectory() as tmp:
        op = OperatorProcess(cluster, [ns], Path(tmp) / "operator.log").start()
        follower = RevisionFollower(cluster, ns, name, url, Path(tmp), args.work_ms)
        stop_following, stop_load = asyncio.Event(), asyncio.Event()
        following = asyncio.create_task(follower.run(stop_following))
        loading: asyncio.Task[int] | None = None
        try:
            create_db_secret(cluster, ns, url)
            manifest = {"replicas": args.replicas, "migrations": {"enabled": False},
                        "rollout": rollout}
            cluster.apply(agd_manifest(name, ns, image=STABLE_IMAGE, **manifest))
            await wait_for_async(lambda: agd_ready(api, ns, name, args.replicas), 180,
                                 f"{strategy} ready", interval=0.05)
            sts = await asyncio.to_thread(cluster.kubectl_json, "-n", ns, "get", "sts", name)
            stable = sts["status"]["currentRevision"]
            loading = asyncio.create_task(
                load(store, name, args.replicas, args.rate, prefix, stop_load))
            await asyncio.sleep(args.settle)
            applied = datetime.now().astimezone()
            started = time.monotonic()
            cluster.apply(agd_manifest(name, ns, image=BAD_IMAGE, env=[
                {"name": "AGENT_SIMULATED_FAILURE_RATIO", "value": str(args.bad_ratio)}],
                **manifest))
            samples: list[tuple[float, int, int]] = []
            bad: str | None = None
            decided: float | None = None
            first_bake: datetime | None = None
            ready_to_decision: float | None = None
            record: dict[str, Any] = {}
            while time.monotonic() - started < args.window:
                sts = await asyncio.to_thread(cluster.kubectl_json, "-n", ns, "get", "sts",
                                              name)
                status = sts.get("status") or {}
                if bad is None and status.get("updateRevision") not in (None, stable):
                    bad = status["updateRevision"]
                record = ((await api.agd(ns, name)).get("status") or {}).get("rollout") or {}
                if first_bake is None and record.get("bakeStartedAt"):
                    first_bake = datetime.fromisoformat(record["bakeStartedAt"])
                if decided is None and record.get("phase") == "RolledBack":
                    decided = time.monotonic() - started
                    if first_bake is not None and record.get("completedAt"):
                        ready_to_decision = (datetime.fromisoformat(record["completedAt"])
                                             - first_bake).total_seconds()
                    log(f"{strategy}: rolled back {decided:.0f}s after the bad template, "
                        f"{ready_to_decision}s after the first canary was Ready")
                on_bad = int(status.get("updatedReplicas") or 0) if bad and (
                    status.get("updateRevision") == bad) else 0
                counts = await _counts(url, prefix, bad, applied)
                samples.append((time.monotonic() - started, on_bad, counts["failed"]))
                await asyncio.sleep(2)
            stop_load.set()
            submitted = await loading
            loading = None
            with contextlib.suppress(TimeoutError):
                await wait_for_async(lambda: _settled(url, prefix, submitted), args.drain,
                                     f"{strategy}: every task finished", interval=1)
            counts = await _counts(url, prefix, bad, applied)
            record = ((await api.agd(ns, name)).get("status") or {}).get("rollout") or {}
            return {"strategy": strategy, "samples": samples, "submitted": submitted,
                    "decided": decided, "ready_to_decision": ready_to_decision,
                    "phase": record.get("phase"),
                    "requeued": (record.get("failedWork") or {}).get("requeued", 0),
                    "errors": op.errors(), **counts}
        finally:
            stop_load.set()
            if loading is not None:
                await loading
            stop_following.set()
            await following
            await follower.close()
            op.stop()
            await store.close()
            drop_namespace(cluster, ns)


async def _settled(url: str, prefix: str, submitted: int) -> bool:
    conn = await asyncpg.connect(url)
    try:
        unfinished = await conn.fetchval(
            "SELECT count(*) FROM tasks WHERE description LIKE $1 "
            "AND status IN ('pending', 'active')", f"{prefix}%")
        total = await conn.fetchval("SELECT count(*) FROM tasks WHERE description LIKE $1",
                                    f"{prefix}%")
        return bool(unfinished == 0 and total == submitted)
    finally:
        await conn.close()


def plot(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    colors = {"Canary": "#2680c2", "RollingUpdate": "#d64545"}
    for r in results:
        t = [s[0] for s in r["samples"]]
        top.step(t, [s[1] for s in r["samples"]], where="post", color=colors[r["strategy"]],
                 label=r["strategy"])
        bottom.plot(t, [s[2] for s in r["samples"]], color=colors[r["strategy"]],
                    label=r["strategy"])
    top.set_ylabel("occurrences on the bad revision")
    top.set_title(f"A bad version (fails {args.bad_ratio:.0%} of tasks) on {args.replicas} "
                  f"occurrences under {args.rate:g} tasks/s")
    bottom.set_ylabel("tasks failed (now)")
    bottom.set_xlabel("seconds since the bad template was applied")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(PNG, dpi=110)
    log(f"wrote {PNG}")


HEADER = "| " + " | ".join((
    "strategy", "tasks", "finished after the change", "touched by the bad revision", "share",
    "left failed", "given back", "s from the change to rollback",
    "s from first canary Ready to rollback", "phase")) + " |\n" + "|---" * 10 + "|"


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    def share(r: dict[str, Any]) -> str:
        return f"{r['touched'] / r['after']:.1%}" if r["after"] else "-"

    def secs(value: float | None) -> str:
        return "never" if value is None else f"{value:.0f}"

    rows = [
        f"| {r['strategy']} | {r['submitted']:,} | {r['after']:,} | {r['touched']:,} | "
        f"{share(r)} | {r['failed']} | {r['requeued']} | {secs(r['decided'])} | "
        f"{secs(r['ready_to_decision'])} | {r['phase'] or '-'} |"
        for r in results]
    body = f"""`python -m benchmarks.rollout --replicas {args.replicas} --rate {args.rate:g} \
--work-ms {args.work_ms} --bad-ratio {args.bad_ratio} --settle {args.settle} --window \
{args.window}`: real agent processes (one per kwok pod, run with the pod's revision and
failure ratio, replaced when the pod is), the operator as a subprocess, PostgreSQL 15. The
bad template fails {args.bad_ratio:.0%} of its tasks; the load goes on {args.window} s after it
is applied, then every task is worked off. Canary: explorer (1 occurrence, gate
taskFailureRatio at most stable + 0.1 over >= 10 tasks, every 5 s, 2 failures roll back),
early (25 %), general. "touched": tasks finished after the bad template was applied that the
bad revision finished or failed and gave back; "left failed": at the end, from the database.

{HEADER}
{chr(10).join(rows)}

Operator errors logged: {sum(len(r['errors']) for r in results)}.

![rollout](rollout.png)
"""
    append_results("The blast radius of a bad version (benchmarks/rollout.py)", body)


async def main_async(args: argparse.Namespace) -> None:
    cluster = localcluster.start()
    try:
        install_crd(cluster)
        api = Api(cluster)
        with postgres_server() as pg:
            results = [await scenario(cluster, api, pg, strategy, args)
                       for strategy in ("Canary", "RollingUpdate")]
        for r in results:
            log(f"{r['strategy']}: submitted {r['submitted']} after {r['after']} touched "
                f"{r['touched']} failed {r['failed']} requeued {r['requeued']} decided "
                f"{r['decided']} phase {r['phase']}")
        if not args.no_results:
            report(results, args)
            plot(results, args)
    finally:
        cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, default=10)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--work-ms", type=int, default=50)
    parser.add_argument("--bad-ratio", type=float, default=0.5)
    parser.add_argument("--settle", type=float, default=15)
    parser.add_argument("--window", type=float, default=90)
    parser.add_argument("--drain", type=float, default=180)
    parser.add_argument("--no-results", action="store_true")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
