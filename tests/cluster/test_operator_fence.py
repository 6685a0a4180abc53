"""`spec.fencedOccurrences` on a real API server and a real PostgreSQL: a middle ordinal is
taken out of work while every pod keeps running — fenced in the registry, its pending work
moved to the others (counted in the database, each task once) — it stays fenced across its
pod's restart, and removing it from the spec gives it back. An id that is not one of the
AgentDeployment's is refused with the row of docs/bad-inputs.md."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from occurrence_store import OccurrenceState, Store, TaskStatus
from testing.operator_support import (
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


async def _owner_of_each(store: Store, name: str, n: int) -> dict[str, str]:
    owners: dict[str, str] = {}
    for k in range(n):
        occ = f"{name}-{k}"
        for status in (TaskStatus.PENDING, TaskStatus.ACTIVE):
            for task in await store.scope(occ).list_tasks(status=status, limit=1000):
                assert task.task_id not in owners, f"{task.task_id} owned twice"
                owners[task.task_id] = occ
    return owners


async def _state(store: Store, occ: str) -> OccurrenceState | None:
    row = await store.registry.get(occ)
    return None if row is None else row.state


async def test_a_middle_occurrence_is_fenced_emptied_and_given_back(
    kube_cluster: Any, namespace: str, start_operator: Any, pg_url: str
) -> None:
    ns, cluster, name = namespace, kube_cluster, "fence"
    store = await Store.open(pg_url, migrate=True)
    try:
        create_db_secret(cluster, ns, pg_url)
        start_operator()
        cluster.apply(agd_manifest(name, ns, replicas=3, migrations={"enabled": False}))
        wait_for(lambda: running_with(cluster, ns, name, 3), timeout=TIMEOUT,
                 message="Running 3")
        for k in range(3):  # the agents' registration (kwok runs no agent)
            await store.registry.register(f"{name}-{k}", ordinal=k, agent_id=f"{ns}/{name}")
        submitted = {task for k in range(3) for task in await store.scope(
            f"{name}-{k}").add_tasks([f"t{k}.{i}" for i in range(20)])}
        pods_before = {k: (get(cluster, "pod", f"{name}-{k}", ns) or {})["metadata"]["uid"]
                       for k in range(3)}

        # an id of another AgentDeployment: refused, nothing fenced
        patch = {"spec": {"fencedOccurrences": ["other-1"]}}
        cluster.kubectl("-n", ns, "patch", "agd", name, "--type=merge", "-p", json.dumps(patch))
        refused = wait_for(
            lambda: (c := condition({"status": agd_status(cluster, ns, name)}, "Degraded"))
            and c["reason"] == "InvalidSpec" and c, timeout=TIMEOUT, message="InvalidSpec")
        assert refused["message"] == (
            "spec.fencedOccurrences: 'other-1' is not an occurrence of 'fence' (fence-<ordinal>)")
        assert await _state(store, f"{name}-1") == OccurrenceState.ACTIVE

        patch = {"spec": {"fencedOccurrences": [f"{name}-1"]}}
        cluster.kubectl("-n", ns, "patch", "agd", name, "--type=merge", "-p", json.dumps(patch))
        wait_for(lambda: agd_status(cluster, ns, name).get("fencedReplicas") == 1,
                 timeout=TIMEOUT, message="status.fencedReplicas 1")
        owners = await _emptied(store, name)
        assert set(owners) == submitted  # every task still there, each owned once
        assert f"{name}-1" not in owners.values()
        assert await _state(store, f"{name}-1") == OccurrenceState.DRAINING
        # the pods were not touched: same pods, same size
        assert sts_replicas(cluster, ns, name) == 3
        assert {k: get(cluster, "pod", f"{name}-{k}", ns)["metadata"]["uid"]  # type: ignore[index]
                for k in range(3)} == pods_before
        status = agd_status(cluster, ns, name)
        assert (condition({"status": status}, "Degraded") or {}).get("status") == "False"
        rows = {o["id"]: o["state"] for o in status.get("occurrences") or []}
        assert rows.get(f"{name}-1") == "draining", rows

        # its pod restarts: still fenced, and work submitted to it meanwhile moves on
        cluster.kubectl("-n", ns, "delete", "pod", f"{name}-1", "--wait=false")
        await store.scope(f"{name}-1").add_tasks(["late"])
        await store.registry.register(f"{name}-1", ordinal=1, agent_id=f"{ns}/{name}")
        owners = await _emptied(store, name)
        assert len(owners) == len(submitted) + 1
        assert await _state(store, f"{name}-1") == OccurrenceState.DRAINING

        cluster.kubectl("-n", ns, "patch", "agd", name, "--type=json", "-p",
                        '[{"op":"remove","path":"/spec/fencedOccurrences"}]')
        wait_for(lambda: "fencedReplicas" not in agd_status(cluster, ns, name),
                 timeout=TIMEOUT, message="status.fencedReplicas removed")
        for _ in range(TIMEOUT * 5):
            if await _state(store, f"{name}-1") == OccurrenceState.ACTIVE:
                break
            await asyncio.sleep(0.2)
        assert await _state(store, f"{name}-1") == OccurrenceState.ACTIVE
        reasons = [e["reason"] for e in events(cluster, ns, name)]
        assert "OccurrencesFenced" in reasons and "FencedWorkMoved" in reasons, reasons
        assert "OccurrencesUnfenced" in reasons, reasons
    finally:
        await store.close()


async def _emptied(store: Store, name: str) -> dict[str, str]:
    """The owners of the work once `<name>-1` holds none."""
    for _ in range(TIMEOUT * 5):
        owners = await _owner_of_each(store, name, 3)
        if f"{name}-1" not in owners.values():
            return owners
        await asyncio.sleep(0.2)
    raise AssertionError(f"{name}-1 still holds work")
