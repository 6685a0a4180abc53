"""`spec.autoscaling` against a real API server and PostgreSQL: the backlog scales an
AgentDeployment up; an emptied backlog scales it down through the drain (work in flight on a
departing occurrence is not lost); a second autoscaler is a conflict; zero and back.

Agents do not run on kwok nodes: the tests play their part in the database (the backlog is
whatever tasks the occurrences own), and judge the outcome from the database.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from occurrence_store import OccurrenceState, Store, TaskStatus, ThoughtStatus
from testing.operator_support import (
    agd_manifest,
    agd_status,
    condition,
    create_db_secret,
    events,
    get,
    scale_down_phase,
    sts_replicas,
)
from testing.waiting import wait_for

pytestmark = pytest.mark.cluster

TIMEOUT = 120
FAST_DOWN = {"stabilizationWindowSeconds": 3, "cooldownSeconds": 0}


def _autoscaling(**fields: Any) -> dict[str, Any]:
    return {"minReplicas": 1, "maxReplicas": 4, "targetBacklogPerOccurrence": 10,
            "intervalSeconds": 1, **fields}


def _replicas(cluster: Any, ns: str, name: str) -> int:
    return int((get(cluster, "agd", name, ns) or {})["spec"]["replicas"])



def _reasons(cluster: Any, ns: str, name: str) -> list[str]:
    return [e["reason"] for e in events(cluster, ns, name)]


async def _deploy(cluster: Any, ns: str, name: str, pg_url: str, **autoscaling: Any) -> Store:
    store = await Store.open(pg_url, migrate=True)
    create_db_secret(cluster, ns, pg_url)
    cluster.apply(agd_manifest(name, ns, replicas=1, autoscaling=_autoscaling(**autoscaling),
                               drain={"releaseGraceSeconds": 1}))
    wait_for(lambda: agd_status(cluster, ns, name).get("phase") == "Running",
             timeout=TIMEOUT, message=f"{name} Running")
    return store


async def _every_task(store: Store, name: str, upto: int) -> dict[str, tuple[str, str]]:
    """task id -> (owner, status) over `<name>-0..upto-1`; fails on a task owned twice."""
    found: dict[str, tuple[str, str]] = {}
    for k in range(upto):
        for task in await store.scope(f"{name}-{k}").get_all_tasks():
            assert task.task_id not in found, f"task {task.task_id} owned twice"
            found[task.task_id] = (f"{name}-{k}", str(task.status))
    return found


async def test_the_backlog_scales_up_and_its_end_scales_down_through_the_drain(
    kube_cluster: Any, namespace: str, start_operator: Any, pg_url: str
) -> None:
    ns, cluster, name = namespace, kube_cluster, "burst"
    start_operator()
    store = await _deploy(cluster, ns, name, pg_url, scaleDown=FAST_DOWN)
    try:
        burst = await store.scope(f"{name}-0").add_tasks([f"job {i}" for i in range(35)])
        # 35 tasks at 10 per occurrence: 4 (the maximum), in one step (at most 4 per step)
        wait_for(lambda: _replicas(cluster, ns, name) == 4, timeout=TIMEOUT,
                 message="scaled up to 4 on the backlog")
        wait_for(lambda: agd_status(cluster, ns, name).get("readyReplicas") == 4,
                 timeout=TIMEOUT, message="4 occurrences ready")
        scaled = agd_status(cluster, ns, name)["autoscaling"]
        assert scaled["observedBacklog"] == 35 and scaled["recommendedReplicas"] == 4
        assert "lastScaleTime" in scaled
        assert "ScaledUp" in _reasons(cluster, ns, name)

        # the agents 1..3 came up and got work; the task on <name>-3 is running (in flight)
        for k in (1, 2, 3):
            await store.registry.register(f"{name}-{k}", ordinal=k)
        leaving = store.scope(f"{name}-3")
        running = await leaving.add_task("long", status=TaskStatus.ACTIVE)
        await leaving.add_thought(running.task_id, "thinking")
        [in_flight] = await leaving.claim_pending_thoughts(1)
        [queued] = await store.scope(f"{name}-2").add_tasks(["queued"])
        # then all of the burst but 4 is done at once: backlog 4 + 1 + 1 = 6, one occurrence
        survivor = store.scope(f"{name}-0")
        assert await survivor.complete_tasks(burst[4:]) == 31

        wait_for(lambda: _replicas(cluster, ns, name) == 1, timeout=TIMEOUT,
                 message="scaled down to 1 once the backlog fell")
        wait_for(lambda: scale_down_phase(cluster, ns, name)
                 == "Done" and sts_replicas(cluster, ns, name) == 1,
                 timeout=TIMEOUT, message="the drain done and the StatefulSet at 1")
        assert "ScaledDown" in _reasons(cluster, ns, name)

        tasks = await _every_task(store, name, 4)
        assert set(tasks) == {*burst, running.task_id, queued}, "a task was lost or invented"
        assert {owner for owner, _ in tasks.values()} == {f"{name}-0"}
        assert sorted(t for t, (_, st) in tasks.items() if st == "completed") == sorted(
            burst[4:])
        # the task in flight on the departing occurrence is the survivor's, its thought
        # released to pending (it runs again there); the queued one waits there
        assert tasks[running.task_id][1] == "active" and tasks[queued][1] == "pending"
        thoughts = await survivor.get_thoughts_by_task(running.task_id)
        assert [(t.thought_id, t.status) for t in thoughts] == [
            (in_flight.thought_id, ThoughtStatus.PENDING)]
        registry = {o.occurrence_id: o.state for o in await store.registry.list()}
        assert [registry[f"{name}-{k}"] for k in (1, 2, 3)] == [OccurrenceState.RETIRED] * 3
    finally:
        await store.close()


async def test_a_second_autoscaler_is_a_conflict(
    kube_cluster: Any, namespace: str, start_operator: Any, pg_url: str
) -> None:
    ns, cluster, name = namespace, kube_cluster, "contested"
    start_operator()
    store = await _deploy(cluster, ns, name, pg_url)
    hpa = {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "other", "namespace": ns},
        "spec": {"scaleTargetRef": {"apiVersion": "occurrence.dev/v1alpha1",
                                    "kind": "AgentDeployment", "name": name},
                 "minReplicas": 1, "maxReplicas": 2,
                 "metrics": [{"type": "External", "external": {
                     "metric": {"name": "occurrence_operator_backlog_tasks"},
                     "target": {"type": "AverageValue", "averageValue": "20"}}}]},
    }
    try:
        cluster.apply(json.dumps(hpa))
        await store.scope(f"{name}-0").add_tasks([f"job {i}" for i in range(40)])

        def degraded() -> dict[str, Any] | None:
            cond = condition(get(cluster, "agd", name, ns), "Degraded")
            return cond if cond and cond.get("reason") == "AutoscalerConflict" else None

        found = wait_for(degraded, timeout=TIMEOUT, message="Degraded/AutoscalerConflict")
        assert found["status"] == "True"
        assert f"HorizontalPodAutoscaler {ns}/other also scales this AgentDeployment" in (
            found["message"])
        assert "AutoscalerConflict" in _reasons(cluster, ns, name)
        assert agd_status(cluster, ns, name)["autoscaling"]["reason"] == "AutoscalerConflict"
        assert _replicas(cluster, ns, name) == 1, "scaled while another autoscaler targets it"

        cluster.kubectl("-n", ns, "delete", "hpa", "other")
        wait_for(lambda: _replicas(cluster, ns, name) == 4, timeout=TIMEOUT,
                 message="scaled on the backlog once the HPA was gone")
        wait_for(lambda: (condition(get(cluster, "agd", name, ns), "Degraded") or {}).get(
            "status") == "False", timeout=TIMEOUT, message="no longer Degraded")
    finally:
        await store.close()


async def test_scale_to_zero_and_back_on_the_first_task(
    kube_cluster: Any, namespace: str, start_operator: Any, pg_url: str
) -> None:
    ns, cluster, name = namespace, kube_cluster, "sleeper"
    start_operator()
    store = await _deploy(cluster, ns, name, pg_url, minReplicas=0, scaleDown=FAST_DOWN)
    try:
        wait_for(lambda: _replicas(cluster, ns, name) == 0 and sts_replicas(cluster, ns, name)
                 == 0, timeout=TIMEOUT, message="scaled to zero on an empty backlog")
        wait_for(lambda: agd_status(cluster, ns, name).get("phase") == "ScaledToZero",
                 timeout=TIMEOUT, message="phase ScaledToZero")
        [task] = await store.scope(f"{name}-0").add_tasks(["wake up"])  # parked on ordinal 0
        wait_for(lambda: _replicas(cluster, ns, name) == 1, timeout=TIMEOUT,
                 message="back to one on the first task")
        wait_for(lambda: agd_status(cluster, ns, name).get("readyReplicas") == 1,
                 timeout=TIMEOUT, message="one occurrence ready")
        assert await _every_task(store, name, 1) == {task: (f"{name}-0", "pending")}
        reasons = _reasons(cluster, ns, name)
        assert reasons.index("ScaledDown") < len(reasons) - 1 - reasons[::-1].index("ScaledUp")
    finally:
        await store.close()
