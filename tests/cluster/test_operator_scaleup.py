"""Scale-up: the opt-in backlog rebalance, the scale subresource, and an HPA driving it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from occurrence_store import Store, TaskStatus
from testing.operator_support import (
    agd_manifest,
    agd_status,
    create_db_secret,
    events,
    get,
    running_with,
)
from testing.waiting import wait_for

pytestmark = pytest.mark.cluster

TIMEOUT = 120
HPA_EXAMPLE = (Path(__file__).resolve().parents[2] / "manifests" / "autoscaling"
               / "hpa-on-backlog.yaml")


async def _pending(store: Store, ids: list[str]) -> list[int]:
    return [await store.scope(occ).count_tasks(TaskStatus.PENDING) for occ in ids]


@pytest.mark.parametrize("rebalance", [True, False], ids=["on", "off"])
async def test_scale_up_rebalances_pending_backlog_once_only_when_enabled(
    kube_cluster: Any, namespace: str, start_operator: Any, pg_url: str, rebalance: bool
) -> None:
    ns, cluster, name = namespace, kube_cluster, "grow"
    start_operator()
    store = await Store.open(pg_url, migrate=True)
    try:
        ids = [f"{name}-{k}" for k in range(3)]
        for k, occ in enumerate(ids):  # as their agents will when they start
            await store.registry.register(occ, ordinal=k)
        create_db_secret(cluster, ns, pg_url)
        cluster.apply(agd_manifest(name, ns, replicas=1, drain={"rebalanceOnScaleUp": rebalance}))
        wait_for(lambda: running_with(cluster, ns, name, 1), timeout=TIMEOUT, message="Running 1")
        backlog = 301
        await store.scope(ids[0]).add_tasks([f"p{i}" for i in range(backlog)])
        active = {
            (await store.scope(ids[0]).add_task(f"a{i}", status=TaskStatus.ACTIVE)).task_id
            for i in range(5)
        }

        cluster.kubectl("-n", ns, "scale", "agd", name, "--replicas=3")
        wait_for(lambda: running_with(cluster, ns, name, 3), timeout=TIMEOUT, message="Running 3")
        if rebalance:
            wait_for(
                lambda: (agd_status(cluster, ns, name).get("rebalance") or {}).get("phase")
                == "Done",
                timeout=TIMEOUT,
                message="rebalance Done",
            )
            pending = await _pending(store, ids)
            assert sum(pending) == backlog
            assert max(pending) - min(pending) <= 1, pending
            moved = backlog - pending[0]
            assert await store.transfers.count_transfers() == moved
            record = agd_status(cluster, ns, name)["rebalance"]
            assert (record["fromReplicas"], record["toReplicas"], record["moved"]) == (
                1,
                3,
                moved,
            )
            # active tasks (in an agent's hands) never move
            on_zero = {t.task_id for t in await store.scope(ids[0]).get_all_tasks()}
            assert active <= on_zero
            assert "Rebalanced" in {e["reason"] for e in events(cluster, ns, name)}
        # Several resyncs later: nothing (more) moved, the record is unchanged.
        before = agd_status(cluster, ns, name).get("rebalance")
        transfers = await store.transfers.count_transfers()
        await asyncio.sleep(7)
        assert await store.transfers.count_transfers() == transfers
        assert agd_status(cluster, ns, name).get("rebalance") == before
        if not rebalance:
            assert before is None
            assert transfers == 0
            assert await _pending(store, ids) == [backlog, 0, 0]
            assert "Rebalanced" not in {e["reason"] for e in events(cluster, ns, name)}
    finally:
        await store.close()


async def test_scale_subresource_returns_the_selector(
    kube_cluster: Any, namespace: str, start_operator: Any, pg_url: str
) -> None:
    ns, cluster, name = namespace, kube_cluster, "scaled"
    start_operator()
    create_db_secret(cluster, ns, pg_url)
    await (await Store.open(pg_url, migrate=True)).close()
    cluster.apply(agd_manifest(name, ns, replicas=2))
    wait_for(lambda: running_with(cluster, ns, name, 2), timeout=TIMEOUT, message="Running 2")
    scale = cluster.get_raw(
        f"/apis/occurrence.dev/v1alpha1/namespaces/{ns}/agentdeployments/{name}/scale"
    )
    assert scale["kind"] == "Scale"
    assert scale["spec"]["replicas"] == 2
    assert scale["status"]["replicas"] == 2
    selector = scale["status"]["selector"]
    assert selector and selector == agd_status(cluster, ns, name)["selector"]
    pods = cluster.kubectl_json("-n", ns, "get", "pods", "-l", selector)["items"]
    assert sorted(p["metadata"]["name"] for p in pods) == [f"{name}-0", f"{name}-1"]


async def test_hpa_drives_the_scale_subresource(
    kube_cluster: Any, namespace: str, start_operator: Any, pg_url: str
) -> None:
    """An autoscaling/v2 HPA targeting the AgentDeployment: accepted, resolves /scale and
    the selector (no metrics-server here, so it cannot compute a metric), and enforces
    minReplicas through the scale subresource."""
    ns, cluster, name = namespace, kube_cluster, "auto"
    start_operator()
    create_db_secret(cluster, ns, pg_url)
    await (await Store.open(pg_url, migrate=True)).close()
    cluster.apply(agd_manifest(name, ns, replicas=1))
    wait_for(lambda: running_with(cluster, ns, name, 1), timeout=TIMEOUT, message="Running 1")
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "occurrence.dev/v1alpha1",
                "kind": "AgentDeployment",
                "name": name,
            },
            "minReplicas": 2,
            "maxReplicas": 4,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 70},
                    },
                }
            ],
        },
    }
    cluster.apply(json.dumps(hpa))

    # below minReplicas: the HPA scales the AgentDeployment through /scale, the operator
    # follows with the StatefulSet
    wait_for(
        lambda: (get(cluster, "agd", name, ns) or {}).get("spec", {}).get("replicas") == 2,
        timeout=TIMEOUT,
        message="HPA raised spec.replicas to minReplicas",
    )
    wait_for(lambda: running_with(cluster, ns, name, 2), timeout=TIMEOUT, message="Running 2")

    def conditions() -> dict[str, dict[str, Any]] | None:
        obj = get(cluster, "hpa", name, ns) or {}
        found = {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}
        active = found.get("ScalingActive") or {}
        return found if active.get("reason") == "FailedGetResourceMetric" else None

    found = wait_for(
        conditions, timeout=TIMEOUT, message="HPA condition ScalingActive/FailedGetResourceMetric"
    )
    able = found["AbleToScale"]
    assert able["status"] == "True", able
    assert able["reason"] in ("SucceededGetScale", "ReadyForNewScale", "SucceededRescale"), able
    # It got as far as fetching metrics: /scale answered and its selector parsed.
    assert found["ScalingActive"]["status"] == "False"
    assert found["ScalingActive"]["reason"] not in ("InvalidSelector", "FailedGetScale")
    status = get(cluster, "hpa", name, ns)["status"]
    assert status["currentReplicas"] == 2


async def test_the_documented_backlog_hpa_resolves_the_agentdeployment_scale(
    kube_cluster: Any, namespace: str, start_operator: Any, pg_url: str
) -> None:
    """manifests/autoscaling/hpa-on-backlog.yaml as a user applies it: the API server takes it,
    the HPA controller gets the AgentDeployment's /scale (AbleToScale) and then asks the
    external metrics API for the backlog, which no adapter serves here."""
    ns, cluster = namespace, kube_cluster
    start_operator()
    create_db_secret(cluster, ns, pg_url)
    await (await Store.open(pg_url, migrate=True)).close()
    hpa = yaml.safe_load(HPA_EXAMPLE.read_text())
    name = hpa["spec"]["scaleTargetRef"]["name"]
    cluster.apply(agd_manifest(name, ns, replicas=1))
    wait_for(lambda: running_with(cluster, ns, name, 1), timeout=TIMEOUT, message="Running 1")
    hpa["metadata"]["namespace"] = ns
    cluster.apply(json.dumps(hpa))

    def conditions() -> dict[str, dict[str, Any]] | None:
        obj = get(cluster, "hpa", name, ns) or {}
        found = {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}
        active = found.get("ScalingActive") or {}
        return found if active.get("reason") == "FailedGetExternalMetric" else None

    found = wait_for(conditions, timeout=TIMEOUT,
                     message="HPA condition ScalingActive/FailedGetExternalMetric")
    assert found["AbleToScale"]["status"] == "True", found["AbleToScale"]
    assert "occurrence_operator_backlog_tasks" in found["ScalingActive"]["message"]
    assert (get(cluster, "agd", name, ns) or {})["spec"]["replicas"] == 1  # no metric: no change
