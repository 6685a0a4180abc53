"""The scale-down drain against a real API server and PostgreSQL.

Agents do not really run on kwok nodes, so the tests play their part in the database:
they register occurrences `<name>-0..N-1` and seed tasks, as running agents would have.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from occurrence_store import OccurrenceState, Store, TaskStatus, Thought, ThoughtStatus
from testing.operator_support import (
    RESYNC_SECONDS,
    agd_manifest,
    agd_status,
    condition,
    create_db_secret,
    events,
    get,
    scale_down_phase,
    sts_replicas,
)
from testing.postgres import describe_activity
from testing.waiting import WaitTimeout, wait_for

pytestmark = pytest.mark.cluster

TIMEOUT = 120
SKIP_DRAIN = "occurrence.dev/skip-drain"



async def _deploy(
    cluster: Any, ns: str, name: str, replicas: int, pg_url: str, **spec: Any
) -> Store:
    store = await Store.open(pg_url, migrate=True)
    for k in range(replicas):
        await store.registry.register(f"{name}-{k}", ordinal=k)
    create_db_secret(cluster, ns, pg_url)
    cluster.apply(agd_manifest(name, ns, replicas=replicas, **spec))
    wait_for(
        lambda: (
            agd_status(cluster, ns, name).get("readyReplicas") == replicas
            and agd_status(cluster, ns, name).get("phase") == "Running"
        ),
        timeout=TIMEOUT,
        message=f"{name} Running with {replicas}",
    )
    return store


async def _in_flight(store: Store, occ: str) -> Thought:
    """An ACTIVE task of `occ` with a PROCESSING thought, as its agent would be running it."""
    task = await store.scope(occ).add_task("long", status=TaskStatus.ACTIVE)
    await store.scope(occ).add_thought(task.task_id, "thinking")
    [thought] = await store.scope(occ).claim_pending_thoughts(1)
    return thought


async def _all_tasks(store: Store, ids: list[str]) -> dict[str, str]:
    """task id -> owner, over the given occurrences; fails on a task owned twice."""
    owners: dict[str, str] = {}
    for occ in ids:
        for task in await store.scope(occ).get_all_tasks():
            assert task.task_id not in owners, f"task {task.task_id} owned twice"
            owners[task.task_id] = occ
    return owners


async def _resumed_drain_done(cluster: Any, ns: str, name: str, pg_url: str) -> None:
    """Until the restarted operator reports the drain Done; on a timeout, first print what
    every database session is doing (a slow statement, a lock wait), then fail."""
    try:
        wait_for(lambda: scale_down_phase(cluster, ns, name) == "Done", timeout=TIMEOUT,
                 message="resumed drain Done")
    except WaitTimeout:
        print(f"database sessions at the timeout:\n{await describe_activity(pg_url)}")
        raise


async def test_scale_down_moves_work_to_survivors_before_shrinking(
    kube_cluster: Any, namespace: str, start_operator: Any, pg_url: str
) -> None:
    """5 -> 2 with 10,000 pending tasks on each departing occurrence."""
    ns, cluster, name = namespace, kube_cluster, "drainer"
    per_departing = 10_000
    start_operator()
    store = await _deploy(cluster, ns, name, 5, pg_url)
    try:
        ids = [f"{name}-{k}" for k in range(5)]
        seeded: set[str] = set()
        for k in range(5):
            count = per_departing if k >= 2 else 100
            seeded |= set(await store.scope(ids[k]).add_tasks([f"t{k}-{i}" for i in range(count)]))

        from kubernetes import client

        apps = client.AppsV1Api(cluster.api_client())
        samples: list[tuple[float, int, int]] = []  # (t, sts replicas, departing work)

        async def departing_work() -> int:
            total = 0
            for occ in ids[2:]:
                total += await store.scope(occ).count_tasks(TaskStatus.PENDING)
                total += await store.scope(occ).count_tasks(TaskStatus.ACTIVE)
            return total

        t0 = time.monotonic()
        cluster.kubectl("-n", ns, "scale", "agd", name, "--replicas=2")
        shrunk_at = None
        while time.monotonic() - t0 < TIMEOUT:
            # replicas first, then work: a shrink seen with work still left is a violation
            sts = await asyncio.to_thread(apps.read_namespaced_stateful_set, name, ns)
            replicas = int(sts.spec.replicas)
            work = await departing_work()
            samples.append((time.monotonic() - t0, replicas, work))
            if replicas == 2 and work == 0:
                shrunk_at = time.monotonic() - t0
                break
            await asyncio.sleep(0.05)
        assert shrunk_at is not None, f"no shrink within {TIMEOUT}s: {samples[-3:]}"
        violations = [s for s in samples if s[1] < 5 and s[2] > 0]
        assert not violations, f"StatefulSet shrank while departing work remained: {violations}"
        print(
            f"\nscale-down 5->2 with {3 * per_departing} departing tasks: "
            f"StatefulSet at 2 with all work moved after {shrunk_at:.2f}s"
        )

        wait_for(
            lambda: scale_down_phase(cluster, ns, name) == "Done",
            timeout=TIMEOUT,
            message="drain Done",
        )
        done_at = time.monotonic() - t0
        print(f"drain Done (departing pods gone, swept, retired) after {done_at:.2f}s")
        status = agd_status(cluster, ns, name)
        assert status["scaleDown"]["transferred"] == 3 * per_departing
        assert status["drainingReplicas"] == 0
        assert condition(get(cluster, "agd", name, ns), "Draining")["reason"] == "DrainDone"

        # Every seeded task exists exactly once, owned by a survivor, balanced.
        owners = await _all_tasks(store, ids)
        assert set(owners) == seeded
        assert set(owners.values()) <= {ids[0], ids[1]}
        per_survivor = [sum(1 for o in owners.values() if o == s) for s in ids[:2]]
        assert abs(per_survivor[0] - per_survivor[1]) <= 1, per_survivor
        assert await store.transfers.count_transfers() == 3 * per_departing
        for occ in ids[2:]:
            row = await store.registry.get(occ)
            assert row is not None and row.state == OccurrenceState.RETIRED
        # (event timestamps have second precision: the order is asserted by the samples above)
        reasons = {e["reason"] for e in events(cluster, ns, name)}
        assert {"DrainStarted", "TasksTransferred", "ScalingDown", "DrainComplete"} <= reasons
    finally:
        await store.close()


async def test_operator_killed_mid_drain_resumes_without_losing_or_duplicating(
    kube_cluster: Any, namespace: str, start_operator: Any, pg_url: str
) -> None:
    ns, cluster, name = namespace, kube_cluster, "phoenix"
    op = start_operator()
    store = await _deploy(
        cluster, ns, name, 4, pg_url, drain={"inFlight": "wait", "timeoutSeconds": 600}
    )
    try:
        ids = [f"{name}-{k}" for k in range(4)]
        seeded: set[str] = set()
        for k in range(4):
            seeded |= set(await store.scope(ids[k]).add_tasks([f"t{k}-{i}" for i in range(500)]))
        # Occurrence 3 is processing a thought: the drain must wait for it (inFlight: wait).
        busy = ids[3]
        thought = await _in_flight(store, busy)
        task_id = thought.source_task_id
        seeded.add(task_id)
        claimed = [thought]
        assert len(claimed) == 1

        cluster.kubectl("-n", ns, "scale", "agd", name, "--replicas=2")
        wait_for(
            lambda: (
                scale_down_phase(cluster, ns, name)
                == "WaitingInFlight"
            ),
            timeout=TIMEOUT,
            message="drain waiting for in-flight work",
        )
        assert (await store.registry.get(ids[2])).state == OccurrenceState.DRAINING
        assert (await store.registry.get(ids[3])).state == OccurrenceState.DRAINING
        assert sts_replicas(cluster, ns, name) == 4
        assert condition(get(cluster, "agd", name, ns), "Draining")["status"] == "True"

        op.kill()  # SIGKILL mid-drain
        # While no operator runs, the agent finishes its in-flight thought.
        await store.scope(busy).update_thought_status(
            claimed[0].thought_id, ThoughtStatus.COMPLETED
        )
        assert sts_replicas(cluster, ns, name) == 4  # nobody shrank it

        op2 = start_operator()
        await _resumed_drain_done(cluster, ns, name, pg_url)
        assert sts_replicas(cluster, ns, name) == 2
        owners = await _all_tasks(store, ids)
        assert set(owners) == seeded, "tasks lost"
        assert set(owners.values()) <= set(ids[:2])
        thoughts = await store.scope(owners[task_id]).get_thoughts_by_task(task_id)
        assert [t.status for t in thoughts] == [ThoughtStatus.COMPLETED]
        assert op2.alive() and not op2.errors()
    finally:
        await store.close()


async def test_operator_killed_during_transfer_resumes(
    kube_cluster: Any, namespace: str, start_operator: Any, pg_url: str
) -> None:
    """SIGKILL at an arbitrary moment of a large transfer, restart: nothing lost or doubled."""
    ns, cluster, name = namespace, kube_cluster, "crash"
    op = start_operator()
    store = await _deploy(cluster, ns, name, 3, pg_url)
    try:
        ids = [f"{name}-{k}" for k in range(3)]
        seeded: set[str] = set()
        for k in (1, 2):
            seeded |= set(await store.scope(ids[k]).add_tasks([f"t{k}-{i}" for i in range(20_000)]))
        cluster.kubectl("-n", ns, "scale", "agd", name, "--replicas=1")
        deadline = time.monotonic() + TIMEOUT
        while await store.transfers.count_transfers() == 0:  # the transfer has begun
            assert time.monotonic() < deadline, "transfer never started"
            await asyncio.sleep(0.005)
        op.kill()
        phase_at_kill = agd_status(cluster, ns, name)["scaleDown"]["phase"]
        moved_at_kill = await store.transfers.count_transfers()
        print(f"\nkilled in phase {phase_at_kill} after {moved_at_kill} of 40000 transfers")
        op2 = start_operator()
        await _resumed_drain_done(cluster, ns, name, pg_url)
        owners = await _all_tasks(store, ids)
        assert set(owners) == seeded
        assert set(owners.values()) == {ids[0]}
        assert await store.transfers.count_transfers() == len(seeded)  # each moved once
        assert sts_replicas(cluster, ns, name) == 1
        assert op2.alive() and not op2.errors()
    finally:
        await store.close()


async def test_scale_to_zero_parks_work_on_ordinal_zero(
    kube_cluster: Any, namespace: str, start_operator: Any, pg_url: str
) -> None:
    ns, cluster, name = namespace, kube_cluster, "sleepy"
    start_operator()
    store = await _deploy(cluster, ns, name, 3, pg_url)
    try:
        ids = [f"{name}-{k}" for k in range(3)]
        seeded: set[str] = set()
        for occ in ids:
            seeded |= set(await store.scope(occ).add_tasks(["a", "b", "c"]))
        cluster.kubectl("-n", ns, "scale", "agd", name, "--replicas=0")
        wait_for(
            lambda: agd_status(cluster, ns, name).get("phase") == "ScaledToZero",
            timeout=TIMEOUT,
            message="ScaledToZero",
        )
        assert sts_replicas(cluster, ns, name) == 0
        owners = await _all_tasks(store, ids)
        assert set(owners) == seeded and set(owners.values()) == {ids[0]}

        # Coming back: ordinal 0 returns first and finds the work.
        cluster.kubectl("-n", ns, "scale", "agd", name, "--replicas=1")
        wait_for(
            lambda: agd_status(cluster, ns, name).get("readyReplicas") == 1,
            timeout=TIMEOUT,
            message="back to 1",
        )
    finally:
        await store.close()


async def test_scale_up_during_drain_cancels_and_unfences(
    kube_cluster: Any, namespace: str, start_operator: Any, pg_url: str
) -> None:
    ns, cluster, name = namespace, kube_cluster, "fickle"
    start_operator()
    store = await _deploy(
        cluster, ns, name, 3, pg_url, drain={"inFlight": "wait", "timeoutSeconds": 600}
    )
    try:
        busy = f"{name}-2"
        await _in_flight(store, busy)
        cluster.kubectl("-n", ns, "scale", "agd", name, "--replicas=2")
        wait_for(
            lambda: (
                scale_down_phase(cluster, ns, name)
                == "WaitingInFlight"
            ),
            timeout=TIMEOUT,
            message="waiting drain",
        )
        assert (await store.registry.get(busy)).state == OccurrenceState.DRAINING
        cluster.kubectl("-n", ns, "scale", "agd", name, "--replicas=3")
        wait_for(
            lambda: scale_down_phase(cluster, ns, name)
            == "Cancelled",
            timeout=TIMEOUT,
            message="drain cancelled",
        )
        assert (await store.registry.get(busy)).state == OccurrenceState.ACTIVE
        assert sts_replicas(cluster, ns, name) == 3
        assert await store.scope(busy).count_tasks() == 1  # its work stayed with it
    finally:
        await store.close()


async def test_drain_that_cannot_finish_holds_size_until_bypassed(
    kube_cluster: Any, namespace: str, start_operator: Any, pg_url: str
) -> None:
    ns, cluster, name = namespace, kube_cluster, "stuck"
    op = start_operator()
    store = await _deploy(
        cluster, ns, name, 3, pg_url, drain={"inFlight": "wait", "timeoutSeconds": 600}
    )
    try:
        busy = f"{name}-2"
        await _in_flight(store, busy)
        cluster.kubectl("-n", ns, "scale", "agd", name, "--replicas=2")
        wait_for(
            lambda: (
                scale_down_phase(cluster, ns, name)
                == "WaitingInFlight"
            ),
            timeout=TIMEOUT,
            message="waiting drain",
        )
        # The database becomes unreachable: the drain cannot finish.
        create_db_secret(cluster, ns, "postgresql://nobody@127.0.0.1:1/none")

        def degraded() -> dict[str, Any] | None:
            agd = get(cluster, "agd", name, ns)
            cond = condition(agd, "Degraded")
            return agd if cond and cond["reason"] == "DatabaseUnavailable" else None

        wait_for(degraded, timeout=TIMEOUT, message="Degraded DatabaseUnavailable")
        await asyncio.sleep(3)
        assert sts_replicas(cluster, ns, name) == 3, "shrank without draining"
        assert condition(get(cluster, "agd", name, ns), "Draining")["status"] == "True"
        assert "DatabaseUnavailable" in [
            e["reason"] for e in events(cluster, ns, name) if e["type"] == "Warning"
        ]
        cluster.kubectl("-n", ns, "annotate", "agd", name, "occurrence.dev/skip-drain=true")
        wait_for(
            lambda: (
                sts_replicas(cluster, ns, name) == 2
                and scale_down_phase(cluster, ns, name) == "Done"
            ),
            timeout=TIMEOUT,
            message="bypassed drain",
        )
        assert "DrainBypassed" in [e["reason"] for e in events(cluster, ns, name)]
        assert await store.scope(busy).count_tasks() == 1  # its work waits in the database
        # one-shot: the annotation is gone once used
        wait_for(lambda: SKIP_DRAIN not in _annotations(cluster, ns, name), timeout=TIMEOUT,
                 message="skip-drain annotation removed after use")
        assert (await store.registry.get(busy)).state == OccurrenceState.DRAINING

        # The database is back; the next scale-up lifts the fence the bypass left behind, so
        # the returning occurrence is not unready forever.
        create_db_secret(cluster, ns, pg_url)
        cluster.kubectl("-n", ns, "scale", "agd", name, "--replicas=3")
        wait_for(lambda: sts_replicas(cluster, ns, name) == 3, timeout=TIMEOUT,
                 message="scaled back up")
        assert (await store.registry.get(busy)).state == OccurrenceState.ACTIVE
        assert await store.scope(busy).count_tasks() == 1
        assert op.alive()
    finally:
        await store.close()


async def test_skip_drain_applies_only_to_a_drain_that_cannot_reach_the_database(
    kube_cluster: Any, namespace: str, start_operator: Any, pg_url: str
) -> None:
    """Set with no drain in progress, or for a drain that is merely waiting: never used."""
    ns, cluster, name = namespace, kube_cluster, "narrow"
    op = start_operator()
    store = await _deploy(
        cluster, ns, name, 3, pg_url, drain={"inFlight": "wait", "timeoutSeconds": 600}
    )
    try:
        cluster.kubectl("-n", ns, "annotate", "agd", name, f"{SKIP_DRAIN}=true")
        wait_for(lambda: SKIP_DRAIN not in _annotations(cluster, ns, name), timeout=TIMEOUT,
                 message="an annotation set outside a drain is removed")
        assert "SkipDrainIgnored" in [e["reason"] for e in events(cluster, ns, name)
                                      if e["type"] == "Warning"]
        busy = f"{name}-2"
        thought = await _in_flight(store, busy)
        cluster.kubectl("-n", ns, "scale", "agd", name, "--replicas=2")
        wait_for(lambda: scale_down_phase(cluster, ns, name)
                 == "WaitingInFlight", timeout=TIMEOUT, message="waiting drain")
        cluster.kubectl("-n", ns, "annotate", "agd", name, f"{SKIP_DRAIN}=true")
        await asyncio.sleep(3 * RESYNC_SECONDS)  # several reconciles see it
        assert sts_replicas(cluster, ns, name) == 3, "a reachable database was bypassed"
        assert SKIP_DRAIN in _annotations(cluster, ns, name)  # it is this drain's
        assert await store.scope(busy).update_thought_status(
            thought.thought_id, ThoughtStatus.COMPLETED, expected_status=ThoughtStatus.PROCESSING)
        wait_for(lambda: scale_down_phase(cluster, ns, name)
                 == "Done", timeout=TIMEOUT, message="the drain finishes normally")
        assert "DrainBypassed" not in [e["reason"] for e in events(cluster, ns, name)]
        wait_for(lambda: SKIP_DRAIN not in _annotations(cluster, ns, name), timeout=TIMEOUT,
                 message="the annotation goes with the drain it was set for")
        assert await store.scope(busy).count_tasks() == 0  # moved, not left behind
        assert op.alive() and not op.errors()
    finally:
        await store.close()


def _annotations(cluster: Any, ns: str, name: str) -> dict[str, str]:
    return ((get(cluster, "agd", name, ns) or {}).get("metadata") or {}).get("annotations") or {}
