"""A life of one AgentDeployment, pass by pass, against `FakeKube` and a SQLite store.

`scenario(run_pass, db_url)` drives creation, readiness, a scale-down drain, a scale-up
with rebalance, an unused skip-drain annotation and the migrations Job, calling
`run_pass(kube, stores, body)` where the worker would run a reconcile, each pass named for
what it is expected to do. It returns the FakeKube, whose write log is what the operator
did, and the named steps that cut that log into passes.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from occurrence_store import Store
from tests.unit.operator.fake_kube import FakeKube

NS, NAME = "team", "w"
AD = f"/apis/occurrence.dev/v1alpha1/namespaces/{NS}/agentdeployments/{NAME}"
STS = f"/apis/apps/v1/namespaces/{NS}/statefulsets/{NAME}"
PODS = f"/api/v1/namespaces/{NS}/pods"
SECRET = f"/api/v1/namespaces/{NS}/secrets/db"
JOBS = f"/apis/batch/v1/namespaces/{NS}/jobs"
UNREACHABLE = "postgresql://operator@127.0.0.1:9/nowhere"
"""A database URL nothing listens on (the discard port)."""

RunPass = Callable[[FakeKube, Any, dict[str, Any]], Awaitable[float | None]]


def _ad(replicas: int, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "occurrence.dev/v1alpha1",
        "kind": "AgentDeployment",
        "metadata": {"name": NAME, "namespace": NS, "uid": "ad-uid", "generation": 1},
        "spec": {"replicas": replicas, "image": "registry.example/agent:1",
                 "database": {"secretRef": {"name": "db"}}, **spec},
    }


def _pods(kube: FakeKube, ordinals: range) -> None:
    for path in [p for p in kube.objects if p.startswith(PODS + "/")]:
        kube.delete_object(path)
    for k in ordinals:
        kube.put(f"{PODS}/{NAME}-{k}", {"metadata": {"name": f"{NAME}-{k}", "labels": {
            "occurrence.dev/agentdeployment": NAME, "occurrence.dev/component": "agent"}}})


def _sts_settled(kube: FakeKube) -> None:
    """The StatefulSet controller caught up: all pods of spec.replicas exist and are ready."""
    sts = kube.objects[STS]
    n = int(sts["spec"]["replicas"])
    sts["status"] = {"replicas": n, "readyReplicas": n, "updatedReplicas": n,
                     "observedGeneration": sts["metadata"]["generation"]}
    _pods(kube, range(n))


def _set_spec(kube: FakeKube, **changes: Any) -> None:
    body = kube.objects[AD]
    body["spec"].update(changes)
    body["metadata"]["generation"] += 1


@dataclass(frozen=True)
class Step:
    """One named pass of the scenario: its writes are ``kube.writes[start:end]``."""

    name: str
    start: int
    end: int


async def scenario(run_pass: RunPass, db_url: str, stores: Any
                   ) -> tuple[FakeKube, list[Step]]:
    kube = FakeKube()
    steps: list[Step] = []
    secret = {"metadata": {"name": "db"}, "data": {"url": base64.b64encode(
        db_url.encode()).decode()}}
    kube.put(SECRET, secret)
    kube.put(AD, _ad(3, migrations={"enabled": False},
                     drain={"rebalanceOnScaleUp": True, "timeoutSeconds": 30}))
    store = await Store.open(db_url, migrate=True)

    async def step(name: str) -> float | None:
        body = await kube.get(AD)
        assert body is not None
        start = len(kube.writes)
        try:
            return await run_pass(kube, stores, body)
        finally:
            steps.append(Step(name, start, len(kube.writes)))

    try:
        await step("created: token Secret, Service, PDB, NetworkPolicy, StatefulSet of 3")
        _sts_settled(kube)
        for k in range(3):
            await store.registry.register(f"{NAME}-{k}", ordinal=k, agent_id=f"{NS}/{NAME}")
        await step("the pods are ready: Ready")
        await step("nothing changed: no writes")
        for k in (1, 2):
            for i in range(3):
                await store.scope(f"{NAME}-{k}").add_task(f"t{k}{i}")
        _set_spec(kube, replicas=1)
        await step("scaled 3 -> 1: drained, Shrinking, waits for the pods")
        _sts_settled(kube)
        await step("scaled 3 -> 1: the pods are gone, Sweeping, Done")
        await step("after Done: no writes")
        _set_spec(kube, replicas=3)
        await step("scaled 1 -> 3: rebalance Pending")
        _sts_settled(kube)
        await step("scaled 1 -> 3: the pods are ready, rebalance Done")
        kube.objects[AD]["metadata"]["annotations"] = {"occurrence.dev/skip-drain": "true"}
        await step("an unused skip-drain annotation: removed, with a warning")
        _set_spec(kube, migrations={"enabled": True})
        await step("migrations enabled: the Job created")
        job = next(p for p in kube.objects if p.startswith(JOBS + "/"))
        kube.objects[job]["status"] = {"conditions": [{"type": "Complete", "status": "True"}],
                                       "completionTime": "2025-01-01T00:00:00Z"}
        await step("the Job succeeded: the template applied")
        # a drain that cannot finish: an agent holds work, then the database goes away
        scoped = store.scope(f"{NAME}-2")
        task = await scoped.add_task("busy")
        await scoped.activate_pending_tasks(10)
        await scoped.add_thought(task.task_id, "thinking")
        await scoped.claim_pending_thoughts(1)
        _set_spec(kube, replicas=2)
        await step("scaled 3 -> 2 with work in flight: fenced, waiting for it")
        kube.objects[SECRET]["data"] = {"url": base64.b64encode(UNREACHABLE.encode()).decode()}
        await step("the database is unreachable: DatabaseUnavailable, still draining")
        kube.objects[AD]["metadata"]["annotations"] = {"occurrence.dev/skip-drain": "true"}
        await step("skip-drain: bypassed, scaled to 2, annotation removed")
        await step("after the bypass")
        kube.objects[SECRET]["data"] = {}
        await step("the database Secret lost its key: Degraded")
    finally:
        await store.close()
    return kube, steps
