"""The operator works under exactly the generated least-privilege RBAC (manifests/base/rbac.yaml).

A ServiceAccount bound to the generated ClusterRole, a token from the TokenRequest API, a
kubeconfig with only that token: the operator must roll out, drain and report with it.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from occurrence_store import OccurrenceState, Store
from testing.operator_support import CHART, RBAC_FILE, agd_manifest, create_db_secret, events, get
from testing.waiting import wait_for

pytestmark = pytest.mark.cluster


def _install_rbac(cluster: Any, ns: str) -> None:
    docs = list(yaml.safe_load_all(RBAC_FILE.read_text()))
    for doc in docs:
        if doc["kind"] == "ServiceAccount":
            doc["metadata"]["namespace"] = ns
        if doc["kind"] == "ClusterRoleBinding":
            doc["metadata"]["name"] = f"occurrence-operator-{ns}"[:63]
            for subject in doc["subjects"]:
                subject["namespace"] = ns
    cluster.apply(yaml.safe_dump_all(docs))


def _token_kubeconfig(cluster: Any, ns: str, path: Path) -> Path:
    admin = cluster.kubectl_json("config", "view", "--raw", "--minify")
    token = cluster.kubectl(
        "-n", ns, "create", "token", "occurrence-operator", "--duration=1h"
    ).stdout.strip()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": admin["clusters"][0]["cluster"]}],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "local", "user": "operator"}}],
        "current-context": "operator",
    }
    path.write_text(json.dumps(config))
    return path


def _install_chart_default_rbac(cluster: Any, ns: str) -> None:
    """The RBAC `helm install` makes by default, released into ``ns``: a Role there and
    nothing cluster-wide."""
    done = subprocess.run(
        [cluster.helm_path, "template", "occurrence-operator", str(CHART), "-n", ns],
        capture_output=True, text=True, timeout=120, env=cluster.env(), check=True)
    kinds = {"ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}
    docs = [d for d in yaml.safe_load_all(done.stdout) if d and d["kind"] in kinds
            and not d["metadata"]["name"].endswith(("-view", "-edit"))]
    assert {d["kind"] for d in docs} == {"ServiceAccount", "Role", "RoleBinding"}, \
        "the default is namespaced: a Role, nothing cluster-wide"
    cluster.apply(yaml.safe_dump_all(docs))


async def test_operator_runs_under_the_generated_rbac(
    kube_cluster: Any, namespace: str, start_operator: Any, pg_url: str, tmp_path: Path
) -> None:
    _install_rbac(kube_cluster, namespace)
    await _rolls_out_and_drains(kube_cluster, namespace, start_operator, pg_url, tmp_path)


async def test_operator_runs_under_the_charts_default_namespaced_rbac(
    kube_cluster: Any, namespace: str, start_operator: Any, pg_url: str, tmp_path: Path
) -> None:
    _install_chart_default_rbac(kube_cluster, namespace)
    await _rolls_out_and_drains(kube_cluster, namespace, start_operator, pg_url, tmp_path)
    kubeconfig = tmp_path / "operator.kubeconfig"
    # namespaced: nothing elsewhere, not even a list of another namespace's pods
    for what in (("get", "pods", "-n", "default"), ("get", "secrets", "-A")):
        denied = kube_cluster.kubectl("--kubeconfig", str(kubeconfig), *what, check=False)
        assert denied.returncode != 0 and "forbidden" in denied.stderr.lower(), what


async def _rolls_out_and_drains(
    kube_cluster: Any, namespace: str, start_operator: Any, pg_url: str, tmp_path: Path
) -> None:
    ns, cluster, name = namespace, kube_cluster, "least"
    kubeconfig = _token_kubeconfig(cluster, ns, tmp_path / "operator.kubeconfig")
    # The token really is restricted: it cannot list secrets or touch deployments.
    denied = cluster.kubectl(
        "--kubeconfig", str(kubeconfig), "-n", ns, "get", "secrets", check=False
    )
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower()

    store = await Store.open(pg_url, migrate=True)
    try:
        for k in range(3):
            await store.registry.register(f"{name}-{k}", ordinal=k)
        await store.scope(f"{name}-2").add_tasks([f"t{i}" for i in range(100)])
        create_db_secret(cluster, ns, pg_url)
        op = start_operator(kubeconfig=kubeconfig)
        cluster.apply(agd_manifest(name, ns, replicas=3))

        def status() -> dict[str, Any]:
            return (get(cluster, "agd", name, ns) or {}).get("status") or {}

        wait_for(
            lambda: status().get("phase") == "Running" and status().get("readyReplicas") == 3,
            timeout=120,
            message="Running under RBAC",
        )
        cluster.kubectl("-n", ns, "scale", "agd", name, "--replicas=2")
        wait_for(
            lambda: (status().get("scaleDown") or {}).get("phase") == "Done",
            timeout=120,
            message="drain Done under RBAC",
        )
        assert await store.scope(f"{name}-2").count_tasks() == 0
        assert (await store.registry.get(f"{name}-2")).state == OccurrenceState.RETIRED
        assert get(cluster, "sts", name, ns)["spec"]["replicas"] == 2
        assert {"StatefulSetCreated", "DrainComplete"} <= {
            e["reason"] for e in events(cluster, ns, name)
        }
        logs = op.logs().lower()
        assert "forbidden" not in logs and " 403" not in logs, op.logs()[-3000:]
        assert "not enough permissions" not in logs, op.logs()[-3000:]  # Kopf's scanning
        assert op.alive() and not op.errors()
    finally:
        await store.close()
