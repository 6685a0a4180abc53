"""Two operator replicas with Kopf peering (`--peering`): one acts, the other does nothing.

A paused replica must not reconcile or take a drain step, not even from a retry or requeue
it had scheduled before it was paused; killing the active one lets the other take over and
finish a drain in progress, every task moving exactly once.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from occurrence_store import OccurrenceState, Store, TaskStatus, ThoughtStatus
from testing.operator_support import (
    OperatorProcess,
    agd_manifest,
    agd_status,
    create_db_secret,
    get,
    install_peering_crds,
    scale_down_phase,
    sts_replicas,
)
from testing.waiting import wait_for

pytestmark = pytest.mark.cluster

TIMEOUT = 120
PEERING = "occurrence-peering"
LIFETIME = 8  # seconds until a SIGKILLed peer counts as dead
DRAIN_STEP = re.compile(r"^(?P<name>[a-z0-9-]+): (?P<action>[A-Z][A-Za-z]+) ")



def _when(record: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(record["timestamp"])


def _drain_steps(op: OperatorProcess, name: str) -> list[tuple[datetime, str]]:
    """(time, action) of each drain-driver step the operator logged for `name`."""
    steps = []
    for record in op.log_records():
        m = DRAIN_STEP.match(str(record.get("message", "")))
        if m and m["name"] == name:
            steps.append((_when(record), m["action"]))
    return steps


def _logged(op: OperatorProcess, text: str) -> datetime | None:
    for record in op.log_records():
        if text in str(record.get("message", "")):
            return _when(record)
    return None


async def _owners(store: Store, ids: list[str]) -> dict[str, str]:
    owners: dict[str, str] = {}
    for occ in ids:
        for task in await store.scope(occ).get_all_tasks():
            assert task.task_id not in owners, f"task {task.task_id} owned twice"
            owners[task.task_id] = occ
    return owners


async def _busy(store: Store, occ: str) -> tuple[str, str]:
    """An ACTIVE task with a PROCESSING thought on `occ`: a drain with inFlight: wait waits."""
    task_id = (await store.scope(occ).add_task("busy", status=TaskStatus.ACTIVE)).task_id
    await store.scope(occ).add_thought(task_id, "thinking")
    claimed = await store.scope(occ).claim_pending_thoughts(1)
    assert len(claimed) == 1
    return task_id, claimed[0].thought_id


async def test_two_peered_operators_drain_once_and_fail_over(
    kube_cluster: Any, namespace: str, pg_url: str, tmp_path: Path
) -> None:
    ns, cluster, name = namespace, kube_cluster, "peers"
    install_peering_crds(cluster)

    def operator(label: str, priority: int) -> OperatorProcess:
        return OperatorProcess(
            cluster,
            [ns],
            tmp_path / f"operator-{label}.log",
            extra_args=("--peering", PEERING, "--priority", str(priority)),
            env={"OCCURRENCE_OPERATOR_PEERING_LIFETIME": str(LIFETIME)},
        )

    a, b = operator("a", 1), operator("b", 2)
    store = await Store.open(pg_url, migrate=True)
    try:
        a.start()
        # the operator created its KopfPeering object itself
        wait_for(
            lambda: get(cluster, "kopfpeering", PEERING, ns),
            timeout=30,
            message="KopfPeering object",
        )
        ids = [f"{name}-{k}" for k in range(4)]
        for k, occ in enumerate(ids):
            await store.registry.register(occ, ordinal=k)
        create_db_secret(cluster, ns, pg_url)
        cluster.apply(
            agd_manifest(name, ns, replicas=4, drain={"inFlight": "wait", "timeoutSeconds": 600})
        )
        wait_for(
            lambda: agd_status(cluster, ns, name).get("phase") == "Running",
            timeout=TIMEOUT,
            message="Running with 4 (operator A active)",
        )
        seeded: set[str] = set()
        for k, occ in enumerate(ids):
            seeded |= set(await store.scope(occ).add_tasks([f"t{k}-{i}" for i in range(300)]))
        busy_task, busy_thought = await _busy(store, ids[3])
        seeded.add(busy_task)

        # Drain 1 (4 -> 2), started by A: fenced, then waiting for the in-flight thought,
        # requeueing itself every few seconds.
        cluster.kubectl("-n", ns, "scale", "agd", name, "--replicas=2")
        wait_for(
            lambda: scale_down_phase(cluster, ns, name) == "WaitingInFlight",
            timeout=TIMEOUT,
            message="drain 1 waiting for in-flight work (A)",
        )

        # B (higher priority) joins: A pauses, B takes over.
        b.start()
        wait_for(lambda: _logged(a, "Pausing operations"), timeout=60, message="A paused by B")
        wait_for(lambda: b.reconciles() > 0, timeout=60, message="B reconciling")
        await asyncio.sleep(1)  # let a stop that raced with a pass settle
        a_reconciles, a_writes = a.reconciles(), a.api_writes()
        b_reconciles = b.reconciles()
        await asyncio.sleep(12)  # > 2 drain polls (5 s) and several resyncs (2 s)
        assert a.reconciles() == a_reconciles, "a paused replica reconciled (own timers?)"
        assert a.api_writes() == a_writes, "a paused replica wrote to the API"
        assert b.reconciles() > b_reconciles, "the active replica stopped reconciling"
        assert scale_down_phase(cluster, ns, name) == "WaitingInFlight"

        # The agent finishes its thought: B finishes drain 1.
        await store.scope(ids[3]).update_thought_status(busy_thought, ThoughtStatus.COMPLETED)
        wait_for(
            lambda: scale_down_phase(cluster, ns, name) == "Done",
            timeout=TIMEOUT,
            message="drain 1 Done (B)",
        )
        assert sts_replicas(cluster, ns, name) == 2
        drain1 = await store.transfers.count_transfers()
        assert drain1 == 2 * 300 + 1  # every departing task moved once

        # Drain 2 (2 -> 1), started by B; B is killed mid-drain, A takes over after B's
        # peering lifetime and finishes it.
        on_one = {t.task_id for t in await store.scope(ids[1]).get_all_tasks()}
        busy_task2, busy_thought2 = await _busy(store, ids[1])
        on_one.add(busy_task2)
        seeded.add(busy_task2)
        cluster.kubectl("-n", ns, "scale", "agd", name, "--replicas=1")
        wait_for(
            lambda: scale_down_phase(cluster, ns, name) == "WaitingInFlight",
            timeout=TIMEOUT,
            message="drain 2 waiting for in-flight work (B)",
        )
        b.kill()
        killed_at = datetime.now(UTC)
        await store.scope(ids[1]).update_thought_status(busy_thought2, ThoughtStatus.COMPLETED)
        assert sts_replicas(cluster, ns, name) == 2  # nobody shrank it meanwhile
        wait_for(
            lambda: scale_down_phase(cluster, ns, name) == "Done",
            timeout=TIMEOUT,
            message="drain 2 Done (A, after B died)",
        )
        assert sts_replicas(cluster, ns, name) == 1

        # Every task exists once, on the survivor; every move recorded once.
        owners = await _owners(store, ids)
        assert set(owners) == seeded, "tasks lost"
        assert set(owners.values()) == {ids[0]}
        assert await store.transfers.count_transfers() == drain1 + len(on_one)
        for occ in ids[1:]:
            row = await store.registry.get(occ)
            assert row is not None and row.state == OccurrenceState.RETIRED

        # Only one operator took drain steps at a time: A until it paused, B until it was
        # killed, A again after that.
        a_paused = _logged(a, "Pausing operations")
        assert a_paused is not None
        a_steps, b_steps = _drain_steps(a, name), _drain_steps(b, name)
        assert b_steps, "B took no drain step"
        assert any(t > killed_at for t, _ in a_steps), "A did not finish drain 2"
        assert all(t < a_paused or t > killed_at for t, _ in a_steps), (a_paused, a_steps)
        assert all(a_paused < t < killed_at for t, _ in b_steps), (a_paused, b_steps)
        assert {"Transfer", "Shrink", "Sweep"} <= {s for _, s in b_steps}
        assert {"Transfer", "Shrink", "Sweep"} <= {s for t, s in a_steps if t > killed_at}
        assert a.alive() and not a.errors(), a.errors()[:5]
    finally:
        for op in (a, b):
            op.stop()
            tail = "\n".join(op.logs().splitlines()[-30:])
            print(f"--- operator log {op.log_path} (tail) ---\n{tail}")
        await store.close()
