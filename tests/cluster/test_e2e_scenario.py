"""The `make e2e` scenario on the local control plane: apply, scale 3 -> 5 -> 2, check.

On kind (`make e2e-kind`, hack/e2e-kind.sh) the agents really run; on kwok nodes they do
not, so this test plays them in the database: each pod's occurrence registers as its
runtime would, and work is submitted to the occurrences that will depart.
"""

from __future__ import annotations

from typing import Any

import pytest

from occurrence_store import OccurrenceState, Store, TaskStatus
from testing.operator_support import (
    agd_manifest,
    agd_status,
    create_db_secret,
    get,
    running_with,
    scale_down_phase,
)
from testing.waiting import wait_for

pytestmark = pytest.mark.cluster

TIMEOUT = 120


async def test_scale_three_five_two(
    kube_cluster: Any, namespace: str, start_operator: Any, pg_url: str
) -> None:
    ns, cluster, name = namespace, kube_cluster, "demo-agent"
    start_operator()
    store = await Store.open(pg_url, migrate=True)
    try:
        create_db_secret(cluster, ns, pg_url)
        cluster.apply(agd_manifest(name, ns, replicas=3))
        wait_for(lambda: running_with(cluster, ns, name, 3), timeout=TIMEOUT,
                 message="3 occurrences Running")
        for k in range(3):
            await store.registry.register(f"{name}-{k}", ordinal=k)

        cluster.kubectl("-n", ns, "scale", "agd", name, "--replicas=5")
        wait_for(lambda: running_with(cluster, ns, name, 5), timeout=TIMEOUT,
                 message="5 occurrences Running")
        pods = cluster.kubectl_json("-n", ns, "get", "pods", "-l",
                                    agd_status(cluster, ns, name)["selector"])["items"]
        indexes = sorted(int(p["metadata"]["labels"]["apps.kubernetes.io/pod-index"])
                         for p in pods)
        assert indexes == [0, 1, 2, 3, 4]
        ids = [f"{name}-{k}" for k in range(5)]
        submitted: set[str] = set()
        for k in range(5):
            await store.registry.register(ids[k], ordinal=k)
            submitted |= set(await store.scope(ids[k]).add_tasks([f"job {k}"] * 50))

        cluster.kubectl("-n", ns, "scale", "agd", name, "--replicas=2")
        wait_for(
            lambda: scale_down_phase(cluster, ns, name) == "Done"
            and running_with(cluster, ns, name, 2),
            timeout=TIMEOUT, message="drain Done and 2 occurrences Running",
        )
        sts = get(cluster, "sts", name, ns)
        assert sts is not None and sts["spec"]["replicas"] == 2

        owners: dict[str, str] = {}
        for occ in ids:
            for task in await store.scope(occ).get_all_tasks():
                assert task.task_id not in owners, "a task owned twice"
                owners[task.task_id] = occ
        assert set(owners) == submitted, "tasks lost"
        assert set(owners.values()) <= set(ids[:2])
        for occ in ids[2:]:
            assert (await store.registry.get(occ)).state == OccurrenceState.RETIRED
            assert await store.scope(occ).count_tasks(TaskStatus.PENDING) == 0
        assert await store.transfers.count_transfers() == 150
        occurrences = {row["id"]: row for row in agd_status(cluster, ns, name)["occurrences"]}
        assert set(occurrences) >= set(ids[:2])
    finally:
        await store.close()
