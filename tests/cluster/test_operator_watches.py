"""The operator is driven by watches, not by polling, on a real API server.

- With a short resync, the passes of a steady AgentDeployment read the informers' cache:
  no GET of the AgentDeployment, StatefulSet, Service or PDB reaches the API server, and
  nothing is written.
- With the default resync (300 s) every change converges in seconds, so it can only be an
  event that woke the worker: creation to Ready, a deleted Service, a StatefulSet scaled by
  hand, and a scale-down whose drain moves the departing occurrence's work (checked in the
  database) and ends when kwok has deleted the pod.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from occurrence_store import OccurrenceState, Store, TaskStatus
from testing.operator_support import (
    RESYNC_SECONDS,
    agd_manifest,
    agd_status,
    create_db_secret,
    get,
    running_with,
    sts_replicas,
)
from testing.waiting import wait_for

pytestmark = pytest.mark.cluster

TIMEOUT = 90
QUICK = 30.0
"""Well under the 300 s resync: converging within it proves an event woke the worker."""


def _reads(op: Any, source: str) -> dict[str, float]:
    prefix = "occurrence_operator_api_reads_total{"
    reads: dict[str, float] = {}
    for key, value in op.metrics().items():
        if key.startswith(prefix) and f'source="{source}"' in key:
            resource = key.split('resource="', 1)[1].split('"', 1)[0]
            reads[resource] = reads.get(resource, 0.0) + value
    return reads


def _delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0)}


def _drain_done(cluster: Any, ns: str, name: str, *, to: int) -> bool:
    record = agd_status(cluster, ns, name).get("scaleDown") or {}
    return record.get("phase") == "Done" and record.get("toReplicas") == to


async def test_steady_passes_read_the_cache_and_write_nothing(
    kube_cluster: Any, namespace: str, start_operator: Any, pg_url: str
) -> None:
    ns, cluster, name = namespace, kube_cluster, "steady"
    await (await Store.open(pg_url, migrate=True)).close()  # migrations are off below
    create_db_secret(cluster, ns, pg_url)
    op = start_operator()
    cluster.apply(agd_manifest(name, ns, replicas=2, migrations={"enabled": False}))
    wait_for(lambda: running_with(cluster, ns, name, 2), timeout=TIMEOUT, message="Running 2")
    await asyncio.sleep(2 * RESYNC_SECONDS)  # the last events of the rollout handled
    passes, writes = op.reconciles(), op.api_writes()
    api, cache = _reads(op, "api"), _reads(op, "cache")
    await asyncio.sleep(5 * RESYNC_SECONDS)
    passes = op.reconciles() - passes
    api_reads = _delta(_reads(op, "api"), api)
    cache_reads = _delta(_reads(op, "cache"), cache)
    assert passes >= 3, f"only {passes} passes in {5 * RESYNC_SECONDS} s"
    assert op.api_writes() - writes == 0
    # Secrets are read by name, at most once per resync; nothing else reaches the server.
    assert set(api_reads) <= {"secrets"}, api_reads
    assert api_reads.get("secrets", 0) <= 2 * (passes + 1), api_reads
    # every pass reads each of these from the cache; a pass running when the window opened
    # read them before it but counts inside it (seen once in CI: 5 passes, 4 reads each)
    for resource in ("agentdeployments", "statefulsets", "services", "poddisruptionbudgets"):
        assert cache_reads.get(resource, 0) >= passes - 1, (resource, cache_reads, passes)


async def test_with_the_default_resync_events_alone_converge_it(
    kube_cluster: Any, namespace: str, start_operator: Any, pg_url: str
) -> None:
    ns, cluster, name = namespace, kube_cluster, "evented"
    create_db_secret(cluster, ns, pg_url)
    store = await Store.open(pg_url, migrate=True)
    try:
        for k in range(3):
            await store.registry.register(f"{name}-{k}", ordinal=k)
        seeded = set(await store.scope(f"{name}-2").add_tasks([f"t{i}" for i in range(50)]))
        start_operator(env={"OCCURRENCE_OPERATOR_RESYNC_SECONDS": "300"})
        t0 = time.monotonic()
        cluster.apply(agd_manifest(name, ns, replicas=3, migrations={"enabled": False}))
        wait_for(lambda: running_with(cluster, ns, name, 3), timeout=QUICK,
                 message="Running 3 (StatefulSet status events)")
        print(f"\ncreated -> Running 3 in {time.monotonic() - t0:.1f} s")

        service = get(cluster, "service", name, ns)
        assert service is not None
        cluster.kubectl("-n", ns, "delete", "service", name)
        wait_for(lambda: (get(cluster, "service", name, ns) or {}).get("metadata", {}).get(
            "uid") not in (None, service["metadata"]["uid"]), timeout=QUICK,
            message="the deleted Service made again")

        cluster.kubectl("-n", ns, "scale", "sts", name, "--replicas=5")
        wait_for(lambda: sts_replicas(cluster, ns, name) == 3, timeout=QUICK,
                 message="the hand-scaled StatefulSet back at 3")

        t1 = time.monotonic()
        cluster.kubectl("-n", ns, "scale", "agd", name, "--replicas=2")
        wait_for(lambda: _drain_done(cluster, ns, name, to=2), timeout=QUICK,
                 message="drain to 2 Done (pod deletion events)")
        print(f"scale 3 -> 2: drain Done in {time.monotonic() - t1:.1f} s")
        assert sts_replicas(cluster, ns, name) == 2
        assert (await store.registry.get(f"{name}-2")).state == OccurrenceState.RETIRED
        owners: dict[str, str] = {}
        statuses: set[TaskStatus] = set()
        for occ in (f"{name}-0", f"{name}-1", f"{name}-2"):
            for task in await store.scope(occ).get_all_tasks():
                assert task.task_id not in owners, f"task {task.task_id} owned twice"
                owners[task.task_id] = occ
                statuses.add(task.status)
        assert set(owners) == seeded
        assert set(owners.values()) <= {f"{name}-0", f"{name}-1"}
        assert statuses == {TaskStatus.PENDING}
    finally:
        await store.close()
