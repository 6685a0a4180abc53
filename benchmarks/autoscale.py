"""Autoscaling on the backlog with real agents: a burst of tasks, up to the maximum and back.

On the local control plane (kwok nodes: testing/localcluster.py), a throwaway
PostgreSQL, `occurrence-operator` as a subprocess, and *real agent processes*
(`occurrence-agent`, the runtime the image runs): a follower starts one for every agent pod
the StatefulSet has (with the identity the pod template gives it) and sends it SIGTERM when
its pod goes, as a kubelet would. Three AgentDeployments, one after another in the same run:

- `autoscaled`: `spec.autoscaling` {minReplicas 1, maxReplicas 6, targetBacklogPerOccurrence
  --target}, scale-down window --down-window s, `rebalanceOnScaleUp` (the burst arrives on the
  one occurrence there is, as through its Service);
- `fixed-6`: 6 replicas all along, the burst spread over them (the latency floor);
- `fixed-1`: 1 replica (what not scaling costs).

Each gets a burst of --tasks tasks (each thought --work-ms of simulated work). Reported: time
to reach 6 replicas, time to finish the burst, time back to minReplicas (scale-down drained);
from the database and the agents' journals: every task completed, each exactly once.

    .venv/bin/python -m benchmarks.autoscale [--tasks 10000] [--work-ms 100]

Appends to benchmarks/RESULTS.md and writes benchmarks/autoscale.png.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import re
import signal
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg

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

PNG = Path(__file__).with_name("autoscale.png")
MAX = 6


class PodFollower:
    """One agent process per agent pod of the AgentDeployment, stopped when its pod goes."""

    def __init__(self, cluster: Any, ns: str, name: str, url: str, workdir: Path,
                 work_ms: int) -> None:
        self.cluster, self.ns, self.name, self.url = cluster, ns, name, url
        self.workdir, self.work_ms = workdir, work_ms
        self.agents: dict[str, Agent] = {}
        self.retired: list[Agent] = []

    def _pods(self) -> dict[str, bool]:
        listed = self.cluster.kubectl_json(
            "-n", self.ns, "get", "pods", "-l", f"occurrence.dev/agentdeployment={self.name}")
        return {p["metadata"]["name"]: not p["metadata"].get("deletionTimestamp")
                for p in listed["items"]}

    def _options(self) -> dict[str, str]:
        sts = self.cluster.kubectl_json("-n", self.ns, "get", "sts", self.name)
        [container] = sts["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
        return {"--agent-id": env["AGENT_ID"],
                "--in-flight-recovery": env["AGENT_IN_FLIGHT_RECOVERY"],
                "--simulated-work-ms": str(self.work_ms)}

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            pods = await asyncio.to_thread(self._pods)
            for pod, alive in pods.items():
                if alive and pod not in self.agents:
                    options = await asyncio.to_thread(self._options)
                    self.agents[pod] = Agent(pod, self.url, self.workdir, options).start()
            for pod in [p for p in self.agents if not pods.get(p)]:
                agent = self.agents.pop(pod)
                agent.signal(signal.SIGTERM)
                self.retired.append(agent)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)

    async def close(self) -> None:
        await stop_agents([*self.agents.values(), *self.retired], 20)

    def finished_per_task(self) -> collections.Counter[str]:
        """How many times the agents' journals say each task was finished."""
        counts: collections.Counter[str] = collections.Counter()
        for journal in self.workdir.glob("*.journal"):
            for line in journal.read_text().splitlines():
                entry = json.loads(line)
                if entry.get("event") == "task_finished":
                    counts[entry["task_id"]] += 1
        return counts


async def _database_counts(url: str, prefix: str) -> tuple[int, int]:
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow(
            "SELECT count(*) FILTER (WHERE status IN ('pending', 'active')) AS backlog, "
            "count(*) FILTER (WHERE status = 'completed') AS done FROM tasks "
            "WHERE description LIKE $1", f"{prefix}%")
        return int(row["backlog"]), int(row["done"])
    finally:
        await conn.close()


async def scenario(cluster: Any, api: Api, pg: Any, label: str, replicas: int,
                   spread: int, args: argparse.Namespace, extra: dict[str, Any]) -> dict[str, Any]:
    ns = cluster.create_namespace(f"bench-as-{label}-{uuid.uuid4().hex[:4]}")
    name, url = "burst", await new_database(pg)
    store = await Store.open(url, migrate=True)
    with tempfile.TemporaryDirectory() as tmp:
        op = OperatorProcess(cluster, [ns], Path(tmp) / "operator.log").start()
        follower = PodFollower(cluster, ns, name, url, Path(tmp), args.work_ms)
        stop = asyncio.Event()
        following = asyncio.create_task(follower.run(stop))
        try:
            create_db_secret(cluster, ns, url)
            cluster.apply(agd_manifest(name, ns, replicas=replicas,
                                       migrations={"enabled": False}, **extra))
            await wait_for_async(lambda: agd_ready(api, ns, name, replicas), 120,
                                 f"{label} ready", interval=0.05)
            await wait_for_async(lambda: _registered(store, name, spread), 60,
                                 f"{label} agents up", interval=0.05)
            prefix = f"burst-{label}"
            per = -(-args.tasks // spread)
            ids: list[str] = []
            for k in range(spread):
                batch = [f"{prefix} {i}" for i in range(k * per, min(args.tasks, (k + 1) * per))]
                ids += await store.scope(f"{name}-{k}").add_tasks(batch)
            started = time.monotonic()
            samples: list[tuple[float, int, int, int]] = []
            reached = finished = back = None
            deadline = started + args.timeout
            while time.monotonic() < deadline:
                agd = await api.agd(ns, name)
                desired = int(agd["spec"]["replicas"])
                ready = int((agd.get("status") or {}).get("readyReplicas") or 0)
                backlog, done = await _database_counts(url, prefix)
                now = time.monotonic() - started
                samples.append((now, desired, ready, backlog))
                if reached is None and ready >= MAX:
                    reached = now
                if finished is None and done >= args.tasks:
                    finished = now
                    log(f"{label}: burst done in {now:.1f}s")
                drained = ((agd.get("status") or {}).get("scaleDown") or {}).get("phase") in (
                    None, "Done")
                if finished is not None and (not extra.get("autoscaling") or (
                        desired == 1 and ready == 1 and drained)):
                    back = now if extra.get("autoscaling") else None
                    break
                await asyncio.sleep(1.0)
            backlog, done = await _database_counts(url, prefix)
            await asyncio.sleep(2)  # the last journal lines
            finishes = follower.finished_per_task()
            twice = sum(1 for t in ids if finishes[t] > 1)
            never = sum(1 for t in ids if finishes[t] == 0)
            scales = re.findall(r"autoscaled (\d+) -> (\d+)", op.logs())
            return {"label": label, "samples": samples, "reached": reached,
                    "finished": finished, "back": back, "completed": done, "left": backlog,
                    "finished_twice": twice, "never_finished": never,
                    "scales": [f"{a}->{b}" for a, b in scales], "errors": op.errors()}
        finally:
            stop.set()
            await following
            await follower.close()
            op.stop()
            await store.close()
            drop_namespace(cluster, ns)


async def agd_ready(api: Api, ns: str, name: str, replicas: int) -> bool:
    status = (await api.agd(ns, name)).get("status") or {}
    return status.get("readyReplicas") == replicas and status.get("phase") == "Running"


async def _registered(store: Store, name: str, count: int) -> bool:
    rows = await store.registry.list()
    live = {o.occurrence_id for o in rows if o.state == "active" and not o.lease_expired()}
    return all(f"{name}-{k}" in live for k in range(count))


def plot(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True)
    colors = {"autoscaled": "#2680c2", "fixed-6": "#3ebd93", "fixed-1": "#d64545"}
    for r in results:
        t = [s[0] for s in r["samples"]]
        top.step(t, [s[1] for s in r["samples"]], where="post", color=colors[r["label"]],
                 label=f"{r['label']} desired")
        top.plot(t, [s[2] for s in r["samples"]], ":", color=colors[r["label"]])
        bottom.plot(t, [s[3] for s in r["samples"]], color=colors[r["label"]], label=r["label"])
    top.set_ylabel("replicas (dotted: ready)")
    top.legend(fontsize=8)
    top.set_title(f"Burst of {args.tasks:,} tasks ({args.work_ms} ms each), target "
                  f"{args.target}/occurrence, max {MAX}")
    bottom.set_ylabel("backlog (pending + active)")
    bottom.set_xlabel("seconds since the burst")
    bottom.legend(fontsize=8)
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(PNG, dpi=110)
    log(f"wrote {PNG}")


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    def secs(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"

    by = {r["label"]: r for r in results}
    rows = [
        f"| {r['label']} | {secs(r['reached'])} | {secs(r['finished'])} | {secs(r['back'])} | "
        f"{r['completed']:,} | {r['left']} | {r['finished_twice']} | {r['never_finished']} |"
        for r in results]
    ratio = ""
    if by["autoscaled"]["finished"] and by["fixed-6"]["finished"] and by["fixed-1"]["finished"]:
        ratio = (f"\nBurst time, autoscaled / fixed-6: "
                 f"{by['autoscaled']['finished'] / by['fixed-6']['finished']:.2f}x (the latency "
                 f"the autoscaler costs); fixed-1 / autoscaled: "
                 f"{by['fixed-1']['finished'] / by['autoscaled']['finished']:.2f}x.\n")
    body = f"""`python -m benchmarks.autoscale --tasks {args.tasks} --work-ms {args.work_ms} \
--target {args.target} --down-window {args.down_window}`: real agent processes (one per kwok
pod, started and SIGTERMed by a follower), the operator as a subprocess, PostgreSQL 15.
Autoscaling: minReplicas 1, maxReplicas {MAX}, targetBacklogPerOccurrence {args.target},
intervalSeconds 2, scaleDown window {args.down_window} s / cooldown 0, rebalanceOnScaleUp.
Times in seconds since the burst was written; "twice"/"never": tasks the agents' journals
finished more than once / not at all.

| AgentDeployment | at {MAX} ready | burst done | back to 1 | completed | left | twice | never |
|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}
{ratio}
Autoscaler decisions: {', '.join(by['autoscaled']['scales'])}. Operator errors logged: \
{sum(len(r['errors']) for r in results)}.

![autoscale](autoscale.png)
"""
    append_results("Autoscaling on the backlog (benchmarks/autoscale.py)", body)


async def main_async(args: argparse.Namespace) -> None:
    cluster = localcluster.start()
    try:
        install_crd(cluster)
        api = Api(cluster)
        autoscaling = {"autoscaling": {
            "minReplicas": 1, "maxReplicas": MAX, "targetBacklogPerOccurrence": args.target,
            "intervalSeconds": 2,
            "scaleDown": {"stabilizationWindowSeconds": args.down_window, "cooldownSeconds": 0}},
            "drain": {"rebalanceOnScaleUp": True}}
        with postgres_server() as pg:
            results = [
                await scenario(cluster, api, pg, "autoscaled", 1, 1, args, autoscaling),
                await scenario(cluster, api, pg, "fixed-6", MAX, MAX, args, {}),
                await scenario(cluster, api, pg, "fixed-1", 1, 1, args, {}),
            ]
        for r in results:
            log(f"{r['label']}: reached {r['reached']} finished {r['finished']} back "
                f"{r['back']} completed {r['completed']} twice {r['finished_twice']} "
                f"never {r['never_finished']}")
        if not args.no_results:
            report(results, args)
            plot(results, args)
    finally:
        cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--work-ms", type=int, default=100)
    parser.add_argument("--target", type=int, default=500)
    parser.add_argument("--down-window", type=int, default=30)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--no-results", action="store_true")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
