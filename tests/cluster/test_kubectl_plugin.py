"""`kubectl occurrence` (the console script `kubectl-occurrence`) against a real API server,
with the operator running and the registry in a real PostgreSQL: what a user at a laptop
sees and changes, and the one-line errors."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from occurrence_store import OccurrenceState, Store, TaskStatus
from testing.operator_support import (
    agd_manifest,
    agd_status,
    condition,
    create_db_secret,
    events,
    running_with,
)
from testing.waiting import wait_for

pytestmark = pytest.mark.cluster

TIMEOUT = 90
PLUGIN = Path(sys.executable).parent / "kubectl-occurrence"


def plugin(cluster: Any, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
    return subprocess.run([str(PLUGIN), *args], capture_output=True, text=True, timeout=60,
                          env=env)


def ok(cluster: Any, *args: str) -> str:
    done = plugin(cluster, *args)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return done.stdout


async def test_status_fence_pause_and_rollout_from_a_laptop(
    kube_cluster: Any, namespace: str, start_operator: Any, pg_url: str
) -> None:
    ns, cluster, name = namespace, kube_cluster, "fleet"
    store = await Store.open(pg_url, migrate=True)
    try:
        create_db_secret(cluster, ns, pg_url)
        start_operator()
        cluster.apply(agd_manifest(name, ns, replicas=3, migrations={"enabled": False}))
        wait_for(lambda: running_with(cluster, ns, name, 3), timeout=TIMEOUT,
                 message="Running 3")
        for k in range(3):  # what the agents would register (kwok runs none)
            await store.registry.register(f"{name}-{k}", ordinal=k, agent_id=f"{ns}/{name}")
        await store.scope(f"{name}-2").add_tasks(["a", "b", "c"])
        wait_for(lambda: agd_status(cluster, ns, name).get("backlog") == 3, timeout=TIMEOUT,
                 message="the backlog in status")

        text = ok(cluster, "status", name, "-n", ns)
        assert f"AgentDeployment  {ns}/{name}" in text
        assert "Occurrences      desired 3, ready 3, draining 0, fenced 0" in text
        assert "Backlog          3 pending or active tasks" in text
        assert [line.split()[:3] for line in text.splitlines()
                if line.startswith(f"{name}-")] == [
            [f"{name}-{k}", str(k), "active"] for k in range(3)]
        # -o before the command, -n after it
        summary = json.loads(ok(cluster, "-o", "json", "status", name, "-n", ns))
        assert summary["replicas"]["desired"] == 3 and summary["backlog"] == 3
        assert summary["paused"] is False and summary["rollout"] is None

        # tasks/task ask the agents through a port-forward; kwok pods run none, so each
        # occurrence is one warning naming it, the exit is 1 and nothing is made up
        done = plugin(cluster, "-n", ns, "tasks", name)
        assert done.returncode == 1 and done.stdout == "no tasks\n", done
        warned = done.stderr.splitlines()
        assert [line.split(": ")[2:3] for line in warned] == [
            [f"{name}-{k}"] for k in range(3)], done.stderr
        assert all(line.startswith("kubectl occurrence: warning: ") for line in warned)
        missing = plugin(cluster, "-n", ns, "task", name, "t-1", "--occurrence", "7")
        assert missing.returncode == 1
        assert missing.stderr == f"kubectl occurrence: error: {name}-7: no such pod\n"

        # fence by ordinal: the operator takes it out of work, its pod stays
        fenced = yaml.safe_load(ok(cluster, "-n", ns, "fence", name, "2", "-o", "yaml"))
        assert fenced == {"fencedOccurrences": [f"{name}-2"], "changed": True}
        wait_for(lambda: agd_status(cluster, ns, name).get("fencedReplicas") == 1,
                 timeout=TIMEOUT, message="fencedReplicas 1")
        row = await store.registry.get(f"{name}-2")
        assert row is not None and row.state == OccurrenceState.DRAINING
        again = json.loads(ok(cluster, "-n", ns, "-o", "json", "fence", name, f"{name}-2"))
        assert again["changed"] is False
        summary = json.loads(ok(cluster, "-n", ns, "-o", "json", "status", name))
        assert [o["id"] for o in summary["occurrences"] if o["fenced"]] == [f"{name}-2"]
        assert ok(cluster, "-n", ns, "unfence", name, f"{name}-2") == f"{ns}/{name}: fenced none\n"
        wait_for(lambda: "fencedReplicas" not in agd_status(cluster, ns, name),
                 timeout=TIMEOUT, message="un-fenced")

        # drain --from 1: fenced, and the plugin waits until the operator moved its work (a
        # stand-in does what the agent runtime does: seeing draining, it reports quiesced)
        await store.scope(f"{name}-1").add_tasks(["d1", "d2"])
        env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
        proc = await asyncio.create_subprocess_exec(
            str(PLUGIN), "-n", ns, "drain", name, "--from", "1", "--timeout", "90", env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        for _ in range(240):
            row = await store.registry.get(f"{name}-1")
            if row is not None and row.state == OccurrenceState.DRAINING:
                await store.registry.set_quiesced(f"{name}-1", True)
                break
            await asyncio.sleep(0.5)
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, err.decode()
        assert out.decode().startswith(f"{ns}/{name}: {name}-1 fenced and empty"), out
        assert await store.scope(f"{name}-1").count_tasks(TaskStatus.PENDING) == 0
        moved = [t.description for k in (0, 2)
                 for t in await store.scope(f"{name}-{k}").get_all_tasks()]
        assert {"d1", "d2"} <= set(moved), moved
        ok(cluster, "-n", ns, "unfence", name, "1")
        wait_for(lambda: "fencedReplicas" not in agd_status(cluster, ns, name),
                 timeout=TIMEOUT, message="un-fenced after the drain")
        beyond = plugin(cluster, "-n", ns, "drain", name, "--from", "5")
        assert beyond.returncode == 1 and "not one of the 3 occurrences" in beyond.stderr

        ok(cluster, "-n", ns, "pause", name)
        wait_for(lambda: (c := condition({"status": agd_status(cluster, ns, name)}, "Paused"))
                 and c["status"] == "True", timeout=TIMEOUT, message="Paused")
        assert "PAUSED" in ok(cluster, "-n", ns, "status", name)
        ok(cluster, "-n", ns, "resume", name)
        wait_for(lambda: condition({"status": agd_status(cluster, ns, name)}, "Paused") is None,
                 timeout=TIMEOUT, message="resumed")

        assert "no canary rollout" in ok(cluster, "-n", ns, "rollout", "status", name)
        ok(cluster, "-n", ns, "rollout", "promote", name)  # nothing to promote: the operator
        wait_for(lambda: "RolloutCommandIgnored" in [   # says so and drops the annotation
            e["reason"] for e in events(cluster, ns, name)], timeout=TIMEOUT,
            message="RolloutCommandIgnored")
    finally:
        await store.close()


def test_errors_are_one_line_and_change_nothing(kube_cluster: Any, namespace: str) -> None:
    ns, cluster = namespace, kube_cluster
    missing = plugin(cluster, "-n", ns, "status", "nobody")
    assert missing.returncode == 1
    assert missing.stderr == f"kubectl occurrence: error: AgentDeployment {ns}/nobody not found\n"
    foreign = plugin(cluster, "-n", ns, "fence", "fleet", "other-1")
    assert foreign.returncode == 1
    assert foreign.stderr == (
        "kubectl occurrence: error: 'other-1' is not an occurrence of fleet (fleet-K, or K)\n")
    usage = plugin(cluster, "status")
    assert usage.returncode == 2 and "the following arguments are required: name" in usage.stderr
    no_config = subprocess.run([str(PLUGIN), "status", "x"], capture_output=True, text=True,
                               timeout=60, env={**os.environ, "KUBECONFIG": "/nonexistent"})
    assert no_config.returncode == 1
    assert no_config.stderr.startswith("kubectl occurrence: error: cannot load the kubeconfig")
    assert len(no_config.stderr.splitlines()) == 1
