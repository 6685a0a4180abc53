"""The operator with real agent processes: one owner per occurrence id, one decision per
agent, and what a drain does to work that is in flight.

Pods run on kwok nodes, so the agents run as local processes with the identity the
StatefulSet gives each pod (its name, and AGENT_ID from the rendered pod template), against
the same PostgreSQL as the operator.
"""

from __future__ import annotations

import asyncio
import collections
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from occurrence_store import OccurrenceState, Store, TaskStatus, ThoughtStatus
from testing.agentproc import Agent, running_agents
from testing.operator_support import (
    OperatorProcess,
    agd_manifest,
    agd_status,
    condition,
    create_db_secret,
    drop_namespace,
    events,
    get,
    running_with,
)
from testing.waiting import wait_for, wait_for_async

pytestmark = pytest.mark.cluster

TIMEOUT = 120
HTTP = aiohttp.ClientTimeout(total=30)


def _pod_env(cluster: Any, ns: str, name: str) -> dict[str, str]:
    """The literal environment the operator rendered for the agent pods."""
    sts = get(cluster, "sts", name, ns)
    assert sts is not None, f"no StatefulSet {ns}/{name}"
    [container] = sts["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def _occurrence_agents(cluster: Any, ns: str, name: str) -> dict[str, str]:
    """The agent options of a pod of this AgentDeployment."""
    env = _pod_env(cluster, ns, name)
    return {"--agent-id": env["AGENT_ID"],
            "--in-flight-recovery": env["AGENT_IN_FLIGHT_RECOVERY"]}


async def test_two_agentdeployments_with_one_name_in_two_namespaces_on_one_database(
    kube_cluster: Any, namespace: str, pg_url: str, tmp_path: Path
) -> None:
    """The second is refused and the first untouched; a shutdown of one agent leaves
    another on the same database running."""
    cluster, first_ns = kube_cluster, namespace
    second_ns = f"{first_ns}-b"
    cluster.create_namespace(second_ns)
    op = OperatorProcess(cluster, [first_ns, second_ns], tmp_path / "operator.log").start()
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
    store = await Store.open(pg_url, migrate=True)
    try:
        for ns in (first_ns, second_ns):
            create_db_secret(cluster, ns, pg_url)
        cluster.apply(agd_manifest("dup", first_ns, replicas=2))
        wait_for(lambda: running_with(cluster, first_ns, "dup", 2), timeout=TIMEOUT,
                 message="the first dup Running")
        first_uid = get(cluster, "agd", "dup", first_ns)["metadata"]["uid"]
        owned = {o.occurrence_id: o for o in await store.registry.list()}
        assert {owned[f"dup-{k}"].agent_id for k in range(2)} == {f"{first_ns}/dup"}
        assert {owned[f"dup-{k}"].owner_uid for k in range(2)} == {first_uid}
        work = set(await store.scope("dup-1").add_tasks(["a", "b", "c"]))

        cluster.apply(agd_manifest("dup", second_ns, replicas=3))

        def refused() -> dict[str, Any] | None:
            agd = get(cluster, "agd", "dup", second_ns)
            cond = condition(agd, "Degraded")
            return agd if cond and cond["reason"] == "OccurrenceIdConflict" else None

        agd = wait_for(refused, timeout=TIMEOUT, message="the second dup refused")
        assert f"belong to agent {first_ns}/dup" in condition(agd, "Degraded")["message"]
        assert condition(agd, "Ready")["reason"] == "OccurrenceIdConflict"
        assert "OccurrenceIdConflict" in [e["reason"] for e in events(cluster, second_ns, "dup")
                                          if e["type"] == "Warning"]
        assert get(cluster, "sts", "dup", second_ns) is None  # no pods under the same ids
        assert not (agd.get("status") or {}).get("occurrences")

        # the refused one is scaled down and deleted: nothing of the first is fenced
        cluster.kubectl("-n", second_ns, "scale", "agd", "dup", "--replicas=1")
        await asyncio.sleep(3)
        cluster.kubectl("-n", second_ns, "delete", "agd", "dup", "--wait=true")
        rows = {o.occurrence_id: o for o in await store.registry.list()}
        assert {rows[f"dup-{k}"].state for k in range(2)} == {OccurrenceState.ACTIVE}
        assert {rows[f"dup-{k}"].agent_id for k in range(2)} == {f"{first_ns}/dup"}
        assert "dup-2" not in rows  # not even the id the first does not use yet was taken
        assert set(t.task_id for t in await store.scope("dup-1").get_all_tasks()) == work
        assert running_with(cluster, first_ns, "dup", 2)
        assert get(cluster, "sts", "dup", first_ns)["spec"]["replicas"] == 2

        # A shutdown decided by one agent does not stop another agent on the database.
        cluster.apply(agd_manifest("other", second_ns, replicas=1))
        wait_for(lambda: running_with(cluster, second_ns, "other", 1), timeout=TIMEOUT,
                 message="other Running")
        first_opts = _occurrence_agents(cluster, first_ns, "dup")
        other_opts = _occurrence_agents(cluster, second_ns, "other")
        assert first_opts["--agent-id"] != other_opts["--agent-id"]
        async with running_agents(["dup-0", "dup-1"], pg_url, tmp_path / "a",
                                  **first_opts) as first, \
                running_agents(["other-0"], pg_url, tmp_path / "b", **other_opts) as (other,), \
                aiohttp.ClientSession(timeout=HTTP) as http:
            await asyncio.gather(*(a.wait_ready(http) for a in (*first, other)))
            async with http.post(f"{first[0].base}/shutdown", json={"reason": "first only"}) \
                    as resp:
                decision = await resp.json()
            assert resp.status == 200 and decision["accept"], decision
            assert decision["task_id"].endswith(f"@{first_ns}/dup")
            for agent in first:
                assert await agent.wait_exit(30) == 0
            await asyncio.sleep(2)  # many of other-0's heartbeats and shutdown polls
            assert other.proc.poll() is None
            assert (await other.get(http, "/readyz"))[0] == 200
            status, task = await other.submit(http, "still working")
            assert status == 201

            async def done() -> bool:
                got = await store.scope("other-0").get_task(task["task_id"])
                return got is not None and got.status == TaskStatus.COMPLETED

            await wait_for_async(done, 30, "other-0 to complete its task")
        assert op.alive() and not op.errors()
    finally:
        await store.close()
        op.stop()
        drop_namespace(cluster, second_ns)


@pytest.mark.parametrize("mode", ["release", "wait"])
async def test_drain_with_in_flight_work_no_thought_arrives_processing(
    kube_cluster: Any, namespace: str, start_operator: Any, pg_url: str, tmp_path: Path,
    mode: str,
) -> None:
    """3 -> 2 while the departing agent runs long thoughts. No thought reaches a survivor
    PROCESSING; with `wait` none runs twice, with `release` exactly those the grace cut off
    run again (the count is printed)."""
    cluster, ns, name = kube_cluster, namespace, f"inflight-{mode}"
    start_operator()
    store = await Store.open(pg_url, migrate=True)
    try:
        create_db_secret(cluster, ns, pg_url)
        drain = {"inFlight": mode, "releaseGraceSeconds": 2, "timeoutSeconds": 60}
        cluster.apply(agd_manifest(name, ns, replicas=3, drain=drain))
        wait_for(lambda: running_with(cluster, ns, name, 3), timeout=TIMEOUT,
                 message=f"{name} Running")
        opts = {**_occurrence_agents(cluster, ns, name), "--thought-concurrency": "4",
                "--drain-timeout": "30"}
        survivors = [f"{name}-0", f"{name}-1"]
        for k, occ in enumerate(survivors):  # registered, but nobody works them yet
            await store.registry.register(occ, ordinal=k, lease_seconds=600,
                                          agent_id=opts["--agent-id"])
        leaving_id = f"{name}-2"
        for sub in ("leaving", "survivors"):
            (tmp_path / sub).mkdir()
        async with running_agents([leaving_id], pg_url, tmp_path / "leaving", **opts) \
                as (leaving,), aiohttp.ClientSession(timeout=HTTP) as http:
            await leaving.wait_ready(http)
            ids = await leaving.submit_all(http, 8, "long", context={"work_ms": 4000})
            scoped = store.scope(leaving_id)

            async def four_in_flight() -> bool:
                return await scoped.count_thoughts(ThoughtStatus.PROCESSING) == 4

            await wait_for_async(four_in_flight, 30, "4 thoughts in flight on the departing one")
            cluster.kubectl("-n", ns, "scale", "agd", name, "--replicas=2")
            wait_for(lambda: (agd_status(cluster, ns, name).get("scaleDown") or {})
                     .get("phase") == "Done", timeout=TIMEOUT, message="drain Done")
            for occ in survivors:
                assert await store.scope(occ).count_thoughts(ThoughtStatus.PROCESSING) == 0
            assert await scoped.count_tasks(TaskStatus.PENDING) == 0
            assert await scoped.count_tasks(TaskStatus.ACTIVE) == 0
            released = sum(e.get("released", 0) for e in leaving.events()
                           if e.get("event") == "worker.quiesced")
            leaving.signal(signal.SIGTERM)
            assert await leaving.wait_exit(30) == 0

        async with running_agents(survivors, pg_url, tmp_path / "survivors", **opts):

            async def all_done() -> bool:
                tasks = [await store.unscoped.find_task(t) for t in ids]
                return all(r is not None and r.task.status == TaskStatus.COMPLETED
                           for r in tasks)

            await wait_for_async(all_done, 60, "every task completed")
        agents = [Agent(i, pg_url, tmp_path / d) for i, d in
                  ((leaving_id, "leaving"), *((s, "survivors") for s in survivors))]
        journal = [e for a in agents for e in a.journal_events()]
        completed = collections.Counter(e["thought_id"] for e in journal
                                        if e["event"] == "thought_completed")
        started = collections.Counter(e["thought_id"] for e in journal
                                      if e["event"] == "thought_started")
        assert len(completed) == len(ids) and set(completed.values()) == {1}
        twice = sum(1 for n in started.values() if n > 1)
        print(f"\ninFlight={mode}: {twice} of {len(started)} thoughts ran twice "
              f"({released} released by the departing agent at its grace)")
        if mode == "wait":
            assert twice == 0 and released == 0
        else:
            assert twice == released  # exactly those cut off at the grace
    finally:
        await store.close()
