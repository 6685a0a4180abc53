"""The operator against a real API server: rollout, scale subresource, validation, failure
paths, garbage collection, idempotency.

The operator runs as a subprocess (`python -m occurrence_operator.cli --namespace NS`);
agent and Job pods live on kwok nodes (Job pods complete through a kwok stage, or fail when
labelled `kwok.occurrence.dev/outcome: fail`).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from occurrence_store import Store
from testing.localcluster import run_pod_command_locally
from testing.operator_support import agd_manifest, condition, create_db_secret, events, get
from testing.waiting import wait_for

pytestmark = pytest.mark.cluster

READY_TIMEOUT = 90


def _ready(cluster: Any, ns: str, name: str, replicas: int) -> dict[str, Any] | None:
    agd = get(cluster, "agd", name, ns)
    status = (agd or {}).get("status") or {}
    ready = condition(agd, "Ready")
    if (
        ready
        and ready["status"] == "True"
        and status.get("readyReplicas") == replicas
        and status.get("replicas") == replicas
        and status.get("observedGeneration") == agd["metadata"]["generation"]
    ):
        return agd
    return None


async def test_apply_runs_migrations_job_then_statefulset_then_ready(
    kube_cluster: Any, namespace: str, start_operator: Any, pg_url: str
) -> None:
    ns, cluster = namespace, kube_cluster
    create_db_secret(cluster, ns, pg_url)
    op = start_operator()
    cluster.apply(agd_manifest("web", ns, replicas=2))

    job = wait_for(
        lambda: next(iter(cluster.kubectl_json("-n", ns, "get", "jobs")["items"]), None),
        timeout=60,
        message="migrations Job",
    )
    assert job["metadata"]["name"].startswith("web-migrate-")
    assert job["metadata"]["ownerReferences"][0]["kind"] == "AgentDeployment"
    assert get(cluster, "sts", "web", ns) is None or get(
        cluster, "job", job["metadata"]["name"], ns
    )["status"].get("succeeded")

    # The migrations really work: kwok does not run containers, so the Job's exact command
    # and env run locally, DATABASE_URL from the Secret, against the test PostgreSQL.
    pod_spec = job["spec"]["template"]["spec"]
    env = pod_spec["containers"][0]["env"]
    assert [e["name"] for e in env] == ["DATABASE_URL"]
    assert env[0]["valueFrom"]["secretKeyRef"] == {"name": "db", "key": "url"}
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    done = run_pod_command_locally(
        pod_spec, extra_env={"DATABASE_URL": pg_url, "PATH": path}, timeout=120
    )
    assert done.returncode == 0, done.stderr
    store = await Store.open(pg_url)
    try:
        assert await store.migrator.current_version() >= 3, "schema_migrations not written"
        assert await store.registry.list() == []
    finally:
        await store.close()

    agd = wait_for(lambda: _ready(cluster, ns, "web", 2), timeout=READY_TIMEOUT, message="Ready")
    job = get(cluster, "job", job["metadata"]["name"], ns)
    sts = get(cluster, "sts", "web", ns)
    assert job and sts
    # The StatefulSet was created only after the Job had succeeded.
    assert sts["metadata"]["creationTimestamp"] >= job["status"]["completionTime"]
    status = agd["status"]
    assert status["phase"] == "Running"
    assert status["selector"] == "occurrence.dev/agentdeployment=web,occurrence.dev/component=agent"
    assert status["lastMigration"]["jobName"] == job["metadata"]["name"]
    assert condition(agd, "MigrationsComplete")["status"] == "True"
    assert condition(agd, "Degraded")["status"] == "False"
    for cond in status["conditions"]:
        assert cond["observedGeneration"] == agd["metadata"]["generation"]
        assert cond["lastTransitionTime"]
    # Pods carry the ordinal label the runtime reads; env comes from the downward API.
    pods = cluster.kubectl_json("-n", ns, "get", "pods", "-l", status["selector"])["items"]
    assert sorted(p["metadata"]["labels"]["apps.kubernetes.io/pod-index"] for p in pods) == [
        "0",
        "1",
    ]
    reasons = [e["reason"] for e in events(cluster, ns, "web")]
    for expected in ("MigrationsStarted", "MigrationsSucceeded", "StatefulSetCreated", "Ready"):
        assert expected in reasons
    assert op.alive() and not op.errors()


async def test_scale_subresource_up_and_down_and_external_edits_reverted(
    kube_cluster: Any, namespace: str, start_operator: Any, pg_url: str
) -> None:
    ns, cluster = namespace, kube_cluster
    await (await Store.open(pg_url, migrate=True)).close()
    create_db_secret(cluster, ns, pg_url)
    start_operator()
    cluster.apply(agd_manifest("scaly", ns, replicas=1))
    wait_for(lambda: _ready(cluster, ns, "scaly", 1), timeout=READY_TIMEOUT, message="Ready 1")

    scale = cluster.get_raw(
        f"/apis/occurrence.dev/v1alpha1/namespaces/{ns}/agentdeployments/scaly/scale"
    )
    assert scale["kind"] == "Scale" and scale["spec"]["replicas"] == 1
    assert scale["status"]["selector"].startswith("occurrence.dev/agentdeployment=scaly")

    cluster.kubectl("-n", ns, "scale", "agd", "scaly", "--replicas=3")
    wait_for(lambda: _ready(cluster, ns, "scaly", 3), timeout=READY_TIMEOUT, message="Ready 3")
    template_before = get(cluster, "sts", "scaly", ns)["spec"]["template"]

    cluster.kubectl("-n", ns, "scale", "agd", "scaly", "--replicas=2")
    wait_for(lambda: _ready(cluster, ns, "scaly", 2), timeout=READY_TIMEOUT, message="Ready 2")
    agd = get(cluster, "agd", "scaly", ns)
    assert agd["status"]["scaleDown"]["phase"] == "Done"
    assert agd["status"]["scaleDown"]["ordinals"] == [2]
    # Scaling never changed the pod template (no rolling restart).
    assert get(cluster, "sts", "scaly", ns)["spec"]["template"] == template_before

    # Someone scales the StatefulSet directly: reverted to spec.replicas.
    cluster.kubectl("-n", ns, "scale", "sts", "scaly", "--replicas=4")
    wait_for(
        lambda: (
            get(cluster, "sts", "scaly", ns)["spec"]["replicas"] == 2
            and _ready(cluster, ns, "scaly", 2)
        ),
        timeout=READY_TIMEOUT,
        message="StatefulSet scaled back to 2",
    )
    # Someone edits the pod template: reverted too.
    cluster.kubectl(
        "-n",
        ns,
        "patch",
        "sts",
        "scaly",
        "--type=json",
        "-p",
        '[{"op":"replace","path":"/spec/template/spec/containers/0/image",'
        '"value":"evil.example/agent:x"}]',
    )
    wait_for(
        lambda: (
            get(cluster, "sts", "scaly", ns)["spec"]["template"]["spec"]["containers"][0]["image"]
            == "registry.example/agent:1"
        ),
        timeout=60,
        message="template edit reverted",
    )


def test_invalid_resources_are_rejected_by_the_api_server(
    kube_cluster: Any, namespace: str
) -> None:
    ns, cluster = namespace, kube_cluster
    cases = [
        (agd_manifest("neg", ns, replicas=-1), "should be greater than or equal to 0"),
        (
            agd_manifest("envdb", ns, replicas=1, env=[{"name": "DATABASE_URL", "value": "x"}]),
            "env must not set AGENT_OCCURRENCE_ID",
        ),
        (
            agd_manifest("root", ns, replicas=1, containerSecurityContext={"runAsNonRoot": False}),
            "runAsNonRoot cannot be false",
        ),
        (
            agd_manifest("Bad_Name", ns, replicas=1),
            "metadata.name",
        ),
        (
            agd_manifest("x" * 60, ns, replicas=1),
            "at most 52 characters",
        ),
        (
            agd_manifest("inflight", ns, replicas=1, drain={"inFlight": "maybe"}),
            'supported values: "release", "wait"',
        ),
        (
            agd_manifest("emptycmd", ns, replicas=1, command=[]),
            "command must not be empty when set",
        ),
    ]
    for manifest, message in cases:
        done = cluster.kubectl("apply", "-f", "-", input=manifest, check=False)
        assert done.returncode != 0, manifest
        assert message in done.stderr, (message, done.stderr)
    nodb = yaml.safe_load(agd_manifest("nodb", ns, replicas=1))
    del nodb["spec"]["database"]
    nodb = yaml.safe_dump(nodb)
    done = cluster.kubectl("apply", "-f", "-", input=nodb, check=False)
    assert done.returncode != 0
    assert "spec.database: Required value" in done.stderr


async def test_missing_secret_sets_condition_and_recovers(
    kube_cluster: Any, namespace: str, start_operator: Any, pg_url: str
) -> None:
    ns, cluster = namespace, kube_cluster
    op = start_operator()
    cluster.apply(agd_manifest("lonely", ns, replicas=1, database={"secretRef": {"name": "db"}}))

    def degraded(reason: str) -> dict[str, Any] | None:
        agd = get(cluster, "agd", "lonely", ns)
        cond = condition(agd, "Degraded")
        return agd if cond and cond["status"] == "True" and cond["reason"] == reason else None

    agd = wait_for(lambda: degraded("SecretNotFound"), timeout=60, message="SecretNotFound")
    assert "db" in condition(agd, "Degraded")["message"]
    assert agd["status"]["phase"] == "Degraded"
    warnings = [e for e in events(cluster, ns, "lonely") if e["type"] == "Warning"]
    assert [e["reason"] for e in warnings] == ["SecretNotFound"]
    assert cluster.kubectl_json("-n", ns, "get", "jobs,sts")["items"] == []

    # The key is missing: a different reason, still no crash.
    create_db_secret(cluster, ns, pg_url, key="other")
    wait_for(lambda: degraded("SecretKeyMissing"), timeout=60, message="SecretKeyMissing")
    await asyncio.sleep(5)  # several timer periods: the warning is not repeated
    warnings = [e for e in events(cluster, ns, "lonely") if e["type"] == "Warning"]
    assert [e["reason"] for e in warnings] == ["SecretNotFound", "SecretKeyMissing"]
    assert op.alive()

    cluster.kubectl("-n", ns, "delete", "secret", "db")
    # kwok runs no containers: migrate as the migrations Job would (the operator claims the
    # occurrence ids in the registry before it creates the StatefulSet)
    await (await Store.open(pg_url, migrate=True)).close()
    create_db_secret(cluster, ns, pg_url)
    wait_for(lambda: _ready(cluster, ns, "lonely", 1), timeout=READY_TIMEOUT, message="Ready")
    assert condition(get(cluster, "agd", "lonely", ns), "Degraded")["status"] == "False"
    assert "Recovered" in [e["reason"] for e in events(cluster, ns, "lonely")]
    assert op.alive() and not op.errors()


async def test_failed_migrations_job_keeps_running_pods_untouched(
    kube_cluster: Any, namespace: str, start_operator: Any, pg_url: str
) -> None:
    ns, cluster = namespace, kube_cluster
    await (await Store.open(pg_url, migrate=True)).close()  # what the first Job did
    create_db_secret(cluster, ns, pg_url)
    start_operator()
    cluster.apply(agd_manifest("mig", ns, replicas=2))
    wait_for(lambda: _ready(cluster, ns, "mig", 2), timeout=READY_TIMEOUT, message="Ready")
    sts_before = get(cluster, "sts", "mig", ns)

    # A new image whose migrations fail (kwok fails pods labelled outcome=fail).
    cluster.apply(
        agd_manifest(
            "mig",
            ns,
            replicas=2,
            image="registry.example/agent:2",
            migrations={"backoffLimit": 0, "podLabels": {"kwok.occurrence.dev/outcome": "fail"}},
        )
    )

    def failed() -> dict[str, Any] | None:
        agd = get(cluster, "agd", "mig", ns)
        cond = condition(agd, "MigrationsFailed")
        return agd if cond and cond["status"] == "True" else None

    agd = wait_for(failed, timeout=90, message="MigrationsFailed")
    assert condition(agd, "MigrationsFailed")["reason"] == "BackoffLimitExceeded"
    assert condition(agd, "MigrationsComplete")["status"] == "False"
    assert condition(agd, "Degraded")["reason"] == "MigrationsFailed"
    assert agd["status"]["phase"] == "Failed"
    assert "MigrationsFailed" in [
        e["reason"] for e in events(cluster, ns, "mig") if e["type"] == "Warning"
    ]
    await asyncio.sleep(3)
    sts_after = get(cluster, "sts", "mig", ns)
    assert sts_after["spec"]["template"] == sts_before["spec"]["template"]
    assert sts_after["metadata"]["generation"] == sts_before["metadata"]["generation"]
    assert sts_after["spec"]["template"]["spec"]["containers"][0]["image"].endswith("agent:1")


async def test_noop_reconcile_writes_nothing(
    kube_cluster: Any, namespace: str, start_operator: Any, pg_url: str
) -> None:
    ns, cluster = namespace, kube_cluster
    store = await Store.open(pg_url, migrate=True)
    try:
        for k in range(3):  # live agents heartbeating
            await store.registry.register(f"idle-{k}", ordinal=k)
        create_db_secret(cluster, ns, pg_url)
        op = start_operator()
        cluster.apply(agd_manifest("idle", ns, replicas=3))
        wait_for(lambda: _ready(cluster, ns, "idle", 3), timeout=READY_TIMEOUT, message="Ready")
        await asyncio.sleep(3)  # let the last status write land

        def versions() -> dict[str, str]:
            out = {}
            for kind, name in (("agd", "idle"), ("sts", "idle"), ("svc", "idle"), ("pdb", "idle")):
                out[kind] = get(cluster, kind, name, ns)["metadata"]["resourceVersion"]
            return out

        writes, reconciles, before = op.api_writes(), op.reconciles(), versions()
        for _ in range(4):  # agents keep heartbeating; the operator keeps re-checking
            await asyncio.sleep(2)
            for k in range(3):
                await store.registry.heartbeat(f"idle-{k}")
        assert op.reconciles() >= reconciles + 2, "the timer did not reconcile"
        assert op.api_writes() == writes, "a no-op reconcile wrote to the API"
        assert versions() == before
    finally:
        await store.close()


async def test_delete_garbage_collects_owned_objects_and_keeps_work(
    kube_cluster: Any, namespace: str, start_operator: Any, pg_url: str
) -> None:
    ns, cluster = namespace, kube_cluster
    store = await Store.open(pg_url, migrate=True)
    try:
        await store.scope("gone-0").add_tasks(["keep me"])
        create_db_secret(cluster, ns, pg_url)
        start_operator()
        cluster.apply(agd_manifest("gone", ns, replicas=1))
        wait_for(lambda: _ready(cluster, ns, "gone", 1), timeout=READY_TIMEOUT, message="Ready")
        cluster.kubectl("-n", ns, "delete", "agd", "gone", "--wait=true", timeout=60)

        def owned_left() -> list[str]:
            items = cluster.kubectl_json(
                "-n",
                ns,
                "get",
                "sts,svc,pdb,jobs",
                "-l",
                "occurrence.dev/agentdeployment=gone",
            )["items"]
            return [f"{i['kind']}/{i['metadata']['name']}" for i in items]

        wait_for(lambda: not owned_left() or None, timeout=90, message="garbage collection")
        # The work stays in the database, owned by its stable occurrence id.
        assert await store.scope("gone-0").count_tasks() == 1
    finally:
        await store.close()


async def test_a_migration_that_succeeds_removes_the_finished_jobs_before_it(
    kube_cluster: Any, namespace: str, start_operator: Any, pg_url: str
) -> None:
    """v1's migrations Job fails; v2's succeeds and v1's goes (with its pod); v3's succeeds
    and v2's goes. One Job is kept, the last that succeeded. A finished Job wearing the same
    labels that the AgentDeployment does not own is never touched."""
    ns, cluster, name = namespace, kube_cluster, "tidy"
    create_db_secret(cluster, ns, pg_url)
    start_operator()
    selector = f"occurrence.dev/agentdeployment={name},occurrence.dev/component=migrations"
    foreign = {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "not-the-operators", "namespace": ns, "labels": {
            "occurrence.dev/agentdeployment": name, "occurrence.dev/component": "migrations"}},
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "x", "image": "registry.example/x:1"}]}}}}
    cluster.apply(yaml.safe_dump(foreign))

    def jobs() -> dict[str, str]:
        """Job name -> Complete, Failed or running."""
        out = {}
        for job in cluster.kubectl_json("-n", ns, "get", "jobs", "-l", selector)["items"]:
            done = [c["type"] for c in (job.get("status") or {}).get("conditions") or ()
                    if c["status"] == "True" and c["type"] in ("Complete", "Failed")]
            out[job["metadata"]["name"]] = done[0] if done else "running"
        return out

    def last_job() -> str | None:
        agd = get(cluster, "agd", name, ns) or {}
        return ((agd.get("status") or {}).get("lastMigration") or {}).get("jobName")

    failing = {"podLabels": {"kwok.occurrence.dev/outcome": "fail"}, "backoffLimit": 0}
    cluster.apply(agd_manifest(name, ns, replicas=1, image="registry.example/agent:1",
                               migrations=failing))
    first = wait_for(lambda: next((j for j, s in jobs().items()
                                   if s == "Failed" and j != "not-the-operators"), None),
                     timeout=READY_TIMEOUT, message="v1's migrations Job failed")
    wait_for(lambda: jobs().get("not-the-operators") == "Complete", timeout=READY_TIMEOUT,
             message="the foreign Job finished")
    cluster.apply(agd_manifest(name, ns, replicas=1, image="registry.example/agent:2"))
    second = wait_for(lambda: (j := last_job()) and j != first and j, timeout=READY_TIMEOUT,
                      message="v2's migrations succeeded")
    wait_for(lambda: set(jobs()) == {second, "not-the-operators"}, timeout=READY_TIMEOUT,
             message="v1's failed Job deleted")
    wait_for(lambda: not cluster.kubectl_json(
        "-n", ns, "get", "pods", "-l", f"job-name={first}")["items"], timeout=READY_TIMEOUT,
        message="v1's Job pod deleted with it")
    cluster.apply(agd_manifest(name, ns, replicas=1, image="registry.example/agent:3"))
    third = wait_for(lambda: (j := last_job()) and j not in (first, second) and j,
                     timeout=READY_TIMEOUT, message="v3's migrations succeeded")
    wait_for(lambda: jobs() == {third: "Complete", "not-the-operators": "Complete"},
             timeout=READY_TIMEOUT, message="v2's Job deleted, v3's kept, the foreign one kept")


async def test_the_platforms_scrapers_reach_every_agent_network_policy(
    kube_cluster: Any, namespace: str, start_operator: Any, pg_url: str
) -> None:
    """`OCCURRENCE_OPERATOR_METRICS_ALLOWED_FROM` (chart `metrics.allowFrom`): the operator adds
    the platform's Prometheus to the NetworkPolicy of every AgentDeployment, beside the peers
    its own spec names."""
    ns, cluster = namespace, kube_cluster
    prometheus = {"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "monitoring"}}}
    create_db_secret(cluster, ns, pg_url)
    start_operator(env={"OCCURRENCE_OPERATOR_METRICS_ALLOWED_FROM": json.dumps([prometheus])})
    clients = {"podSelector": {"matchLabels": {"role": "client"}}}
    cluster.apply(agd_manifest("plain", ns, replicas=1, migrations={"enabled": False}))
    cluster.apply(agd_manifest("named", ns, replicas=1, migrations={"enabled": False},
                               networkPolicy={"allowedFrom": [clients]}))

    def peers(name: str) -> list[Any] | None:
        policy = get(cluster, "networkpolicy", name, ns)
        return None if policy is None else policy["spec"]["ingress"][0]["from"]

    assert wait_for(lambda: peers("plain"), timeout=READY_TIMEOUT,
                    message="plain's NetworkPolicy") == [{"podSelector": {}}, prometheus]
    assert wait_for(lambda: peers("named"), timeout=READY_TIMEOUT,
                    message="named's NetworkPolicy") == [clients, prometheus]
