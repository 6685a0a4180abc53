"""`occurrence.dev/reconcile: paused` on a real API server: the operator writes nothing for a
paused AgentDeployment (counted by its own write counter, while passes still run), a value
that is not `paused` is reported and ignored, and removing the annotation converges
everything that changed meanwhile."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from occurrence_store import Store
from testing.operator_support import (
    RESYNC_SECONDS,
    agd_manifest,
    agd_status,
    condition,
    create_db_secret,
    events,
    get,
    running_with,
    sts_replicas,
)
from testing.waiting import wait_for

pytestmark = pytest.mark.cluster

TIMEOUT = 90
ANNOTATION = "occurrence.dev/reconcile"


def _paused(cluster: Any, ns: str, name: str) -> dict[str, Any] | None:
    return condition({"status": agd_status(cluster, ns, name)}, "Paused")


def _image(cluster: Any, ns: str, name: str) -> str | None:
    sts = get(cluster, "statefulset", name, ns) or {}
    containers = sts.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
    return containers[0]["image"] if containers else None


async def test_a_paused_object_is_left_alone_until_the_annotation_goes(
    kube_cluster: Any, namespace: str, start_operator: Any, pg_url: str
) -> None:
    ns, cluster, name = namespace, kube_cluster, "frozen"
    await (await Store.open(pg_url, migrate=True)).close()
    create_db_secret(cluster, ns, pg_url)
    op = start_operator()
    cluster.apply(agd_manifest(name, ns, replicas=2, migrations={"enabled": False}))
    wait_for(lambda: running_with(cluster, ns, name, 2), timeout=TIMEOUT, message="Running 2")

    cluster.kubectl("-n", ns, "annotate", "agd", name, f"{ANNOTATION}=paused")
    paused = wait_for(lambda: (c := _paused(cluster, ns, name)) and c["status"] == "True" and c,
                      timeout=TIMEOUT, message="the Paused condition")
    assert paused["reason"] == "ReconcilePaused"
    assert agd_status(cluster, ns, name)["phase"] == "Paused"
    # what the last full pass measured stays in the status
    assert agd_status(cluster, ns, name)["readyReplicas"] == 2
    await asyncio.sleep(RESYNC_SECONDS)  # the pausing pass's Event posted
    writes, passes = op.api_writes(), op.reconciles()

    # Everything a pass would act on: the size, the template, an owned object gone.
    cluster.kubectl("-n", ns, "scale", "agd", name, "--replicas=3")
    cluster.kubectl("-n", ns, "patch", "agd", name, "--type=merge",
                    "-p", '{"spec":{"image":"registry.example/agent:2"}}')
    cluster.kubectl("-n", ns, "delete", "service", name)
    await asyncio.sleep(4 * RESYNC_SECONDS)
    assert op.reconciles() - passes >= 3  # woken and resynced, and chose to do nothing
    assert op.api_writes() - writes == 0
    assert sts_replicas(cluster, ns, name) == 2
    assert _image(cluster, ns, name) == "registry.example/agent:1"
    assert get(cluster, "service", name, ns) is None

    # A value that is not `paused` pauses nothing, and says so.
    cluster.kubectl("-n", ns, "annotate", "--overwrite", "agd", name, f"{ANNOTATION}=Paused")
    wait_for(lambda: running_with(cluster, ns, name, 3), timeout=TIMEOUT, message="Running 3")
    ignored = _paused(cluster, ns, name)
    assert ignored is not None and ignored["status"] == "False"
    assert ignored["reason"] == "UnknownValue"
    # the text of docs/bad-inputs.md's row op-reconcile-annotation-typo
    assert ignored["message"] == (
        "occurrence.dev/reconcile='Paused' is not 'paused': reconciling as usual")
    assert _image(cluster, ns, name) == "registry.example/agent:2"
    assert get(cluster, "service", name, ns) is not None

    cluster.kubectl("-n", ns, "annotate", "agd", name, f"{ANNOTATION}-")
    wait_for(lambda: _paused(cluster, ns, name) is None, timeout=TIMEOUT,
             message="the Paused condition removed")
    reasons = [e["reason"] for e in events(cluster, ns, name)]
    assert reasons.count("ReconcilePaused") == 1, reasons
    assert reasons.count("ReconcileAnnotationIgnored") == 1, reasons
    # resumed from a typo, not from a pause: no ReconcileResumed
    assert "ReconcileResumed" not in reasons, reasons


async def test_resuming_a_paused_object_says_so(
    kube_cluster: Any, namespace: str, start_operator: Any, pg_url: str
) -> None:
    ns, cluster, name = namespace, kube_cluster, "thawed"
    await (await Store.open(pg_url, migrate=True)).close()
    create_db_secret(cluster, ns, pg_url)
    start_operator()
    body = agd_manifest(name, ns, replicas=1, migrations={"enabled": False})
    body = body.replace(f"  name: {name}\n", f"  name: {name}\n  annotations:\n"
                                               f"    {ANNOTATION}: paused\n", 1)
    cluster.apply(body)  # created paused: nothing made at all
    wait_for(lambda: (c := _paused(cluster, ns, name)) and c["status"] == "True",
             timeout=TIMEOUT, message="the Paused condition")
    assert get(cluster, "statefulset", name, ns) is None
    cluster.kubectl("-n", ns, "annotate", "agd", name, f"{ANNOTATION}-")
    wait_for(lambda: running_with(cluster, ns, name, 1), timeout=TIMEOUT, message="Running 1")
    assert _paused(cluster, ns, name) is None
    reasons = [e["reason"] for e in events(cluster, ns, name)]
    assert reasons.count("ReconcilePaused") == 1 and reasons.count("ReconcileResumed") == 1
