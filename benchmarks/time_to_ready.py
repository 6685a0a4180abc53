"""Time to Ready against its bound, and one user's create while many AgentDeployments exist.

On the local control plane (kube-apiserver, kwok nodes; testing/localcluster.py), in
one run:

1. **The bound.** No operator: for each of `--count` names, the objects the operator itself
   renders (`occurrence_operator.render.objects`: token Secret, Service, PodDisruptionBudget,
   NetworkPolicy, StatefulSet; migrations disabled, no ownerReferences) applied by a bare
   client (server-side apply, the operator's own `Kube` calls) with the operator's
   concurrency (`--concurrency`, its 10 pass slots), until every StatefulSet has all its
   replicas Ready. Then that namespace is deleted and waited for.
2. **One AgentDeployment on an empty cluster**, with the operator running: created, and
   timed until Ready (`--singles` of them, one after another; median).
3. **The operator's rollout:** `--count` AgentDeployments applied at once, timed until all
   are Ready (status Ready, readyReplicas, observedGeneration).
4. **One more while `--count` exist:** once nobody has written for 30 s, `--singles` new
   AgentDeployments one after another, each timed until Ready (median): a user's create
   must not wait behind a resync of all the others.

    .venv/bin/python -m benchmarks.time_to_ready --count 300 [--replicas 1]

Appends to benchmarks/RESULTS.md and redraws benchmarks/time_to_ready.png from every block
there. Targets (issue 28): the rollout ≤ 2x the bound at 1,000, and one create among 1,000
≤ 2x its time on an empty cluster.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import append_results, median
from benchmarks.operator_idle import log, operator_in_namespace, roll_out, settle
from benchmarks.operator_scale import Api, cpu_seconds, ready
from occurrence_operator.kube.client import Kube
from occurrence_operator.model.owner import Owner
from occurrence_operator.model.spec import AgentDeploymentSpec
from occurrence_operator.render.agent_token import build_token_secret, new_tokens
from occurrence_operator.render.objects import render
from testing import localcluster
from testing.operator_support import (
    agd_manifest,
    install_crd,
)

POLL_SECONDS = 0.25
RESULTS = Path(__file__).with_name("RESULTS.md")
PNG = Path(__file__).with_name("time_to_ready.png")
_BLOCK = re.compile(
    r"## Time to Ready against its bound, (\d+) AgentDeployments x (\d+).*?"
    r"until every StatefulSet is Ready \| ([\d.]+).*?"
    r"until all are Ready \| ([\d.]+).*?"
    r"on an empty cluster \(median of \d+\) \| ([\d.]+).*?"
    r"while \d+ exist \(median of \d+\) \| ([\d.]+)", re.S)


def rendered_objects(name: str, ns: str, replicas: int) -> list[dict[str, Any]]:
    """What the operator applies for a new AgentDeployment `name`, without owner references
    (there is no owner: the garbage collector would delete the objects)."""
    doc = yaml.safe_load(agd_manifest(name, ns, replicas=replicas,
                                      migrations={"enabled": False}))
    spec = AgentDeploymentSpec.model_validate(doc["spec"])
    owner = Owner(name=name, namespace=ns, uid=str(uuid.uuid4()))
    objects = [build_token_secret(owner, new_tokens()),
               *render(spec, owner, replicas=replicas).objects()]
    for obj in objects:
        obj["metadata"].pop("ownerReferences", None)
    return objects


async def bound(cluster: Any, count: int, replicas: int, concurrency: int) -> dict[str, Any]:
    """Apply every AgentDeployment's rendered objects with `concurrency` workers, no
    operator; the time until every StatefulSet has `replicas` Ready."""
    ns = cluster.create_namespace(f"bench-bound-{uuid.uuid4().hex[:5]}")
    kube = Kube(cluster.api_client())
    api = Api(cluster)
    names = [f"agd-{i:04d}" for i in range(count)]
    queue: asyncio.Queue[str] = asyncio.Queue()
    for name in names:
        queue.put_nowait(name)

    async def worker() -> None:
        while not queue.empty():
            name = queue.get_nowait()
            for obj in rendered_objects(name, ns, replicas):
                await kube.apply(obj)

    t0 = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    applied = time.monotonic() - t0
    log(f"bound: applied {count} AgentDeployments' objects in {applied:.1f} s")
    while True:
        listed = await asyncio.to_thread(api.apps.list_namespaced_stateful_set, ns)
        ready_count = sum(1 for s in listed.items if (s.status.ready_replicas or 0) == replicas)
        if ready_count == count:
            break
        if time.monotonic() - t0 > 3600:
            raise TimeoutError(f"bound: only {ready_count}/{count} StatefulSets Ready")
        await asyncio.sleep(1)
    all_ready = time.monotonic() - t0
    log(f"bound: all {count} StatefulSets Ready after {all_ready:.1f} s; deleting {ns}")
    t1 = time.monotonic()
    await asyncio.to_thread(cluster.kubectl, "delete", "namespace", ns, "--wait=true",
                            "--timeout=1200s", timeout=1300)
    log(f"bound: namespace gone after {time.monotonic() - t1:.0f} s")
    kube.close()
    return {"applied": applied, "all_ready": all_ready}


async def one_create(cluster: Any, api: Api, ns: str, name: str, replicas: int) -> float:
    """Create one AgentDeployment and poll it until Ready: the seconds a user waits."""
    doc = agd_manifest(name, ns, replicas=replicas, migrations={"enabled": False})
    t0 = time.monotonic()
    await asyncio.to_thread(cluster.kubectl, "apply", "-f", "-", input=doc, timeout=120)
    while True:
        with_status = await api.agd(ns, name)
        if ready(with_status, replicas):
            return time.monotonic() - t0
        if time.monotonic() - t0 > 600:
            raise TimeoutError(f"{name} not Ready after 600 s")
        await asyncio.sleep(POLL_SECONDS)


async def singles(cluster: Any, api: Api, ns: str, prefix: str, n: int,
                  replicas: int) -> list[float]:
    times = []
    for i in range(n):
        seconds = await one_create(cluster, api, ns, f"{prefix}-{i}", replicas)
        log(f"{prefix}-{i} Ready after {seconds:.2f} s")
        times.append(seconds)
    return times


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    pods = (args.count + 2 * args.singles) * args.replicas
    os.environ.setdefault("OCCURRENCE_KWOK_NODES", str(max(2, -(-pods // 100))))
    cluster = localcluster.start()
    try:
        install_crd(cluster)
        api = Api(cluster)
        result: dict[str, Any] = {
            "bound": await bound(cluster, args.count, args.replicas, args.concurrency)}
        async with operator_in_namespace(cluster, "bench-ready") as (ns, _, op):
            result["empty"] = await singles(cluster, api, ns, "first", args.singles,
                                            args.replicas)
            rollout = await roll_out(cluster, api, op, ns, args.count, args.replicas)
            result["rollout"] = {k: v for k, v in rollout.items() if k != "names"}
            result["settle"] = await settle(cluster, quiet_seconds=30)
            assert op.proc is not None
            cpu0 = cpu_seconds(op.proc.pid)
            result["loaded"] = await singles(cluster, api, ns, "new", args.singles,
                                             args.replicas)
            result["loaded_cpu"] = cpu_seconds(op.proc.pid) - cpu0
            result["errors"] = op.errors()[:5]
        return result
    finally:
        cluster.stop()


def report(result: dict[str, Any], args: argparse.Namespace) -> None:
    b, r = result["bound"], result["rollout"]
    empty, loaded = median(result["empty"]), median(result["loaded"])
    n = args.count
    ratio = r["all_ready"] / b["all_ready"]
    body = [
        f"`.venv/bin/python -m benchmarks.time_to_ready --count {n} --replicas "
        f"{args.replicas} --concurrency {args.concurrency} --singles {args.singles}`: the "
        "local control plane (kube-apiserver built from source, kwok nodes), migrations "
        "disabled, one PostgreSQL database shared by all.",
        "",
        "| what | seconds | against |",
        "|---|---:|---|",
        f"| bound: the operator's rendered objects for {n} AgentDeployments applied by a "
        f"bare client ({args.concurrency} at a time), until every StatefulSet is Ready | "
        f"{b['all_ready']:.1f} (applied in {b['applied']:.1f}) | — |",
        f"| the operator: {n} AgentDeployments applied at once, until all are Ready | "
        f"{r['all_ready']:.1f} (p50 {r['p50']:.1f}) | **{ratio:.2f}x the bound** "
        "(target ≤ 2x) |",
        f"| one new AgentDeployment on an empty cluster (median of {len(result['empty'])}) | "
        f"{empty:.2f} ({', '.join(f'{t:.2f}' for t in result['empty'])}) | — |",
        f"| one new AgentDeployment while {n} exist (median of {len(result['loaded'])}) | "
        f"{loaded:.2f} ({', '.join(f'{t:.2f}' for t in result['loaded'])}) | "
        f"**{loaded / empty:.2f}x empty** (target ≤ 2x) |",
        "",
        f"Operator CPU during the rollout {r['cpu']:.1f} s; while the single creates ran "
        f"{result['loaded_cpu']:.1f} s. The rollout's tail settled after "
        f"{result['settle']['seconds']:.0f} s. Operator errors logged: "
        f"{len(result['errors'])}.",
    ]
    append_results(f"Time to Ready against its bound, {n} AgentDeployments x {args.replicas} "
                   "(benchmarks/time_to_ready.py)", "\n".join(body))


def plot() -> None:
    """Time to Ready against the number of AgentDeployments, from every time_to_ready block
    in RESULTS.md (the newest per count): the bound, the operator, and one new create."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps: dict[int, tuple[float, ...]] = {}
    for match in _BLOCK.finditer(RESULTS.read_text()):
        count = int(match.group(1))
        steps[count] = tuple(float(match.group(i)) for i in range(3, 7))
    if not steps:
        return
    counts = sorted(steps)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(counts, [steps[c][0] for c in counts], "o--", label="bound: bare client, no operator")
    left.plot(counts, [steps[c][1] for c in counts], "o-", label="the operator")
    left.set(xlabel="AgentDeployments created at once", ylabel="seconds until all Ready",
             title="Time to Ready against its bound")
    left.legend()
    right.plot(counts, [steps[c][2] for c in counts], "o--", label="on an empty cluster")
    right.plot(counts, [steps[c][3] for c in counts], "o-", label="while N others exist")
    right.set(xlabel="N (AgentDeployments already there)", ylabel="seconds until Ready",
              title="One new AgentDeployment", ylim=(0, None))
    right.legend()
    fig.tight_layout()
    fig.savefig(PNG, dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=10,
                        help="the bare client's workers: the operator's pass slots")
    parser.add_argument("--singles", type=int, default=3)
    parser.add_argument("--no-results", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(main_async(args))
    print(json.dumps(result, indent=1, default=str))
    if not args.no_results:
        report(result, args)
        plot()


if __name__ == "__main__":
    main()
