"""The Helm chart and the plain manifests against helm and a real API server.

- `helm lint` / `helm template` with every values file in charts/occurrence-operator/ci/;
  bad values fail lint, template and install with the schema's message;
- manifests/base is the chart rendered with fixed values, and manifests/base/rbac.yaml (the
  operator's generator) agrees with the chart's RBAC (hack/render_packaging.py);
- every rendered object and every file under manifests/ and crds/ passes server-side dry-run
  (the API server's own OpenAPI schemas, the CRD's schema, admission);
- every pod spec (operator, example PostgreSQL, the agent StatefulSet and migrations Job the
  operator renders for the example) is admitted by PodSecurity admission enforcing
  `restricted`, and a non-compliant pod is not (the check is real);
- the chart installed with `helm install` (CRD as a template, upgraded by `helm upgrade`, kept
  by `helm uninstall`) runs an operator that, under exactly the chart's RBAC (its
  ServiceAccount's token) and with the chart's arguments, reconciles the bundled example.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import signal
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml

from occurrence_operator.model.owner import Owner
from occurrence_operator.model.spec import AgentDeploymentSpec, refuse_unsafe_pod_shape
from occurrence_operator.render.objects import render as render_agd
from occurrence_store import Store
from testing.localcluster import KubeCluster
from testing.operator_support import condition, get, install_crd
from testing.ports import free_port
from testing.waiting import wait_for
from tests.support.scripts import load_hack_script

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "occurrence-operator"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
SERVICEMONITOR_CRD = "servicemonitors.monitoring.coreos.com"


render = load_hack_script("render_packaging")


# -- helpers ------------------------------------------------------------------------------


def helm(cluster: KubeCluster, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """helm against the test cluster, not raising (the caller asserts)."""
    return subprocess.run(
        [cluster.helm_path, "--kubeconfig", str(cluster.kubeconfig), *args],
        capture_output=True, text=True, timeout=timeout, env=cluster.env(), check=False,
    )


def template(
    cluster: KubeCluster, *args: str, namespace: str = "occurrence-system"
) -> list[dict[str, Any]]:
    done = helm(cluster, "template", "occurrence-operator", str(CHART), "-n", namespace, *args)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def dry_run(cluster: KubeCluster, objects: list[dict[str, Any]]) -> subprocess.CompletedProcess:
    """Server-side dry-run apply of the objects, as one List."""
    body = json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
    return cluster.kubectl(
        "apply", "--dry-run=server", "--server-side", "--force-conflicts",
        "--field-manager=packaging-test", "-f", "-", input=body, check=False,
    )


def in_namespace(objects: list[dict[str, Any]], namespace: str) -> list[dict[str, Any]]:
    """Move namespaced objects into the test namespace (cluster-scoped ones as they are)."""
    out = []
    for obj in objects:
        obj = copy.deepcopy(obj)
        if obj["kind"] not in ("Namespace",) and "namespace" in obj.get("metadata", {}):
            obj["metadata"]["namespace"] = namespace
        out.append(obj)
    return out


def has_crd(cluster: KubeCluster, name: str) -> bool:
    return cluster.kubectl("get", "crd", name, check=False).returncode == 0


def yaml_files(*directories: Path) -> list[Path]:
    return sorted(
        p for d in directories for p in d.rglob("*.yaml")
        if p.name not in ("kustomization.yaml", "kustomizeconfig.yaml")
    )


def load(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.fixture(scope="module")
def crd(kube_cluster: KubeCluster) -> None:
    install_crd(kube_cluster)


@pytest.fixture
def test_namespace(kube_cluster: KubeCluster) -> Iterator[str]:
    name = kube_cluster.create_namespace(f"pkg-{uuid.uuid4().hex[:8]}")
    yield name
    kube_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def restricted_namespace(kube_cluster: KubeCluster) -> Iterator[str]:
    """A namespace whose PodSecurity admission enforces (and warns about) `restricted`."""
    name = kube_cluster.create_namespace(f"pkg-restricted-{uuid.uuid4().hex[:8]}")
    kube_cluster.kubectl(
        "label", "namespace", name,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/enforce-version=latest",
        "pod-security.kubernetes.io/warn=restricted",
    )
    yield name
    kube_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


# -- helm lint / template / schema --------------------------------------------------------


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.stem)
def test_helm_lint(kube_cluster: KubeCluster, values: Path) -> None:
    done = helm(kube_cluster, "lint", str(CHART), "--strict", "-f", str(values))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 chart(s) failed" in done.stdout


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.stem)
def test_helm_template(kube_cluster: KubeCluster, values: Path) -> None:
    objects = template(kube_cluster, "-f", str(values))
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for obj in objects:
        by_kind.setdefault(obj["kind"], []).append(obj)
    (deployment,) = by_kind["Deployment"]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "ghcr.io/occurrence-dev/occurrence-operator:0.1.0"
    assert container["command"] == ["occurrence-operator"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    (crd,) = by_kind["CustomResourceDefinition"]
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    expected_crd = yaml.safe_load(render.CRD_SOURCE.read_text())
    assert crd["spec"] == expected_crd["spec"], "the chart's CRD differs from crds/"
    assert [s["metadata"]["name"] for s in by_kind["Service"]] == ["occurrence-operator-metrics"]
    assert len(by_kind["ServiceAccount"]) == 1

    rules = yaml.safe_load((CHART / "files" / "rbac-rules.yaml").read_text())
    operator_roles = [r for r in by_kind["ClusterRole"]
                      if not r["metadata"]["name"].endswith(("-view", "-edit"))]
    if values.stem == "clusterwide-values":
        assert "--all-namespaces" in container["args"]
        assert "Role" not in by_kind
        (cluster_role,) = operator_roles
        from occurrence_operator import rbac

        assert cluster_role["rules"] == rbac.RULES  # no peering rules without peering
    else:  # the default: the release namespace only (or the namespaces listed)
        watched = (["team-a", "team-b"] if values.stem == "namespaced-values"
                   else ["occurrence-system"])
        assert [a for a in container["args"] if a.startswith("--namespace")] == \
            [f"--namespace={ns}" for ns in watched]
        assert "--all-namespaces" not in container["args"]
        assert sorted(r["metadata"]["namespace"] for r in by_kind["Role"]) == watched
        assert len(by_kind["RoleBinding"]) == len(watched)
        assert by_kind["Role"][0]["rules"] == rules["namespacedRules"]
        # named namespaces: Kopf scans no CRDs or namespaces, so no ClusterRole at all
        # (Secrets, and everything else, only where AgentDeployments live)
        assert operator_roles == [], [r["rules"] for r in operator_roles]
        assert "ClusterRoleBinding" not in by_kind
    assert not any("kopf.dev" in rule["apiGroups"] for role in by_kind.get("Role", []) +
                   operator_roles for rule in role["rules"]), "peering RBAC without peering"
    (policy,) = by_kind["NetworkPolicy"]  # the operator takes ingress on /metrics only
    assert policy["spec"]["podSelector"]["matchLabels"] == \
        deployment["spec"]["selector"]["matchLabels"]
    assert policy["spec"]["ingress"] == [{"ports": [{"protocol": "TCP", "port": 9090}]}]
    aggregated = {r["metadata"]["name"]: r for r in by_kind["ClusterRole"]}
    view, edit = aggregated["occurrence-operator-view"], aggregated["occurrence-operator-edit"]
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert ("AgentDeployment" in by_kind) == (values.stem == "example-values")
    assert ("ServiceMonitor" in by_kind) == (values.stem == "servicemonitor-values")
    monitoring = values.stem == "monitoring-values"
    assert ("OCCURRENCE_OPERATOR_METRICS_ALLOWED_FROM" in json.dumps(container)) == monitoring
    assert ("PrometheusRule" in by_kind) == monitoring
    assert ("PodMonitor" in by_kind) == monitoring
    assert ("ConfigMap" in by_kind) == monitoring  # the dashboard, nothing else
    if monitoring:
        (rule,) = by_kind["PrometheusRule"]
        alerts = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
        assert rule["spec"]["groups"] == alerts["groups"], "the chart's rules differ"
        (dashboard,) = by_kind["ConfigMap"]
        assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert json.loads(dashboard["data"]["occurrence-operator.json"]) == json.loads(
            (CHART / "files" / "dashboard.json").read_text())
        (pods,) = by_kind["PodMonitor"]
        assert pods["spec"]["selector"]["matchLabels"] == {"occurrence.dev/component": "agent"}
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert json.loads(env["OCCURRENCE_OPERATOR_METRICS_ALLOWED_FROM"]) == [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
        assert pods["spec"]["namespaceSelector"] == {"matchNames": ["occurrence-system"]}
    if values.stem == "example-values":
        (agd,) = by_kind["AgentDeployment"]
        AgentDeploymentSpec.model_validate(agd["spec"])
        (secret,) = by_kind["Secret"]
        assert agd["spec"]["database"]["secretRef"]["name"] == secret["metadata"]["name"]


BAD_VALUES = {
    "replicaCount-string": ("replicaCount: two\n", "/replicaCount", "want integer"),
    "replicaCount-float": ("replicaCount: 1.5\n", "/replicaCount", "want integer"),
    "replicaCount-negative": ("replicaCount: -1\n", "/replicaCount", "minimum"),
    "watchNamespaces-string": ("watchNamespaces: team-a\n", "/watchNamespaces", "want array"),
    "watchNamespaces-bad-name": ("watchNamespaces: [Team_A]\n", "/watchNamespaces/0", ""),
    "pullPolicy": ("image: {pullPolicy: Sometimes}\n", "/image/pullPolicy", ""),
    "unknown-key": ("replicas: 2\n", "replicas", "additional properties"),
    "privilege-escalation": (
        "securityContext: {allowPrivilegeEscalation: true, capabilities: {drop: [ALL]}}\n",
        "/securityContext/allowPrivilegeEscalation", "",
    ),
    "metrics-port": ("metrics: {port: 70000}\n", "/metrics/port", "maximum"),
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
@pytest.mark.parametrize("command", ["lint", "template", "install"])
def test_bad_values_fail_with_the_schema_message(
    kube_cluster: KubeCluster, tmp_path: Path, case: str, command: str
) -> None:
    text, where, why = BAD_VALUES[case]
    values = tmp_path / "bad-values.yaml"
    values.write_text(text)
    args = {
        "lint": ["lint", str(CHART), "-f", str(values)],
        "template": ["template", "bad", str(CHART), "-f", str(values)],
        # validation happens before anything reaches the cluster: nothing is installed
        "install": ["install", f"bad-{uuid.uuid4().hex[:6]}", str(CHART), "-n", "default",
                    "-f", str(values)],
    }[command]
    done = helm(kube_cluster, *args)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "values don't meet the specifications of the schema" in output, output
    assert where in output and why in output, output


def test_more_replicas_need_peering(kube_cluster: KubeCluster) -> None:
    done = helm(kube_cluster, "template", "x", str(CHART), "--set", "replicaCount=2")
    assert done.returncode != 0
    assert "replicaCount > 1 needs peering.enabled=true" in done.stderr
    objects = template(
        kube_cluster, "--set", "replicaCount=2", "--set", "peering.enabled=true"
    )
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--peering=occurrence-operator" in args
    # peering RBAC comes with peering: the namespaced KopfPeering where the operator watches
    (role,) = [o for o in objects if o["kind"] == "Role"]
    assert any(r["resources"] == ["kopfpeerings"] for r in role["rules"])


# -- one source of truth ------------------------------------------------------------------


def test_manifests_base_is_rendered_from_the_chart(kube_cluster: KubeCluster) -> None:
    expected = render.expected_outputs(kube_cluster.helm_path)
    stale = render.stale_files(expected)
    assert not stale, "run `.venv/bin/python hack/render_packaging.py`:\n" + "\n".join(stale)


def test_manifests_base_rbac_agrees_with_the_chart(kube_cluster: KubeCluster) -> None:
    assert render.rbac_differences(kube_cluster.helm_path) == []


@pytest.mark.parametrize("directory", ["base", "examples"])
def test_kustomize_builds(kube_cluster: KubeCluster, directory: str) -> None:
    path = REPO / "manifests" / directory
    done = kube_cluster.kubectl("kustomize", str(path))
    built = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
    files = [obj for p in yaml_files(path) for obj in load(p)]

    def key(o: dict[str, Any]) -> tuple[str, str, str]:
        return (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"])

    assert sorted(map(key, built)) == sorted(map(key, files))


def test_an_overlay_of_the_example_sets_the_agent_image_too(
    kube_cluster: KubeCluster, tmp_path: Path
) -> None:
    """kustomize `images:` reaches AgentDeployment.spec.image too (the example's
    kustomizeconfig.yaml): an overlay pins agents and PostgreSQL in one place."""
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    base = os.path.relpath(REPO / "manifests" / "examples", overlay)
    (overlay / "kustomization.yaml").write_text(
        f"resources: [{base}]\n"
        "images:\n"
        "- {name: ghcr.io/occurrence-dev/occurrence-operator,"
        " newName: registry.example/agent, newTag: v9}\n"
        "- {name: postgres, newName: registry.example/pg, newTag: '15'}\n"
    )
    out = kube_cluster.kubectl("kustomize", str(overlay)).stdout
    built = [doc for doc in yaml.safe_load_all(out) if doc]
    agd = next(o for o in built if o["kind"] == "AgentDeployment")
    pg = next(o for o in built if o["kind"] == "Deployment" and o["metadata"]["name"] == "postgres")
    assert agd["spec"]["image"] == "registry.example/agent:v9"
    assert pg["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/pg:15"


# -- server-side dry-run ------------------------------------------------------------------


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.stem)
def test_rendered_chart_passes_server_side_dry_run(
    kube_cluster: KubeCluster, crd: None, test_namespace: str, values: Path
) -> None:
    ns = test_namespace
    args = ["-f", str(values)]
    if values.stem == "namespaced-values":
        # the Roles go into namespaces that exist
        other = kube_cluster.create_namespace(f"{ns}-b")
        args += ["--set", f"watchNamespaces={{{ns},{other}}}"]
    objects = template(kube_cluster, *args, namespace=ns)
    if not has_crd(kube_cluster, SERVICEMONITOR_CRD):
        # prometheus-operator is not installed: everything else is still checked
        objects = [o for o in objects if not o["apiVersion"].startswith("monitoring.coreos.com/")]
    done = dry_run(kube_cluster, objects)
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr, done.stderr
    if values.stem == "namespaced-values":
        kube_cluster.kubectl("delete", "namespace", f"{ns}-b", "--wait=false", check=False)


@pytest.mark.parametrize(
    "path",
    yaml_files(REPO / "crds", REPO / "manifests"),
    ids=lambda p: str(p.relative_to(REPO)),
)
def test_every_file_passes_server_side_dry_run(
    kube_cluster: KubeCluster, crd: None, test_namespace: str, path: Path
) -> None:
    everything = load(path)
    assert everything, f"{path} holds no object"
    # other projects' kinds (KEDA, CloudNativePG examples): no CRD of theirs here; ours in
    # the same file are still checked
    foreign = [o for o in everything if o["apiVersion"] in THIRD_PARTY]
    assert all(THIRD_PARTY[o["apiVersion"]] == o["kind"] for o in foreign), foreign
    objects = in_namespace([o for o in everything if o not in foreign], test_namespace)
    if not objects:
        return
    done = dry_run(kube_cluster, objects)
    assert done.returncode == 0, done.stderr


THIRD_PARTY = {"keda.sh/v1alpha1": "ScaledObject", "postgresql.cnpg.io/v1": "Cluster"}
"""The other projects' kinds the examples use, by apiVersion."""


# -- restricted Pod Security Standard, enforced by the API server --------------------------


def _pod(name: str, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": copy.deepcopy(spec),
    }


def _pod_specs() -> dict[str, dict[str, Any]]:
    """Every pod spec the packaging produces, from the committed files and the chart's
    default values, plus the agent pods the operator renders for the example."""
    specs: dict[str, dict[str, Any]] = {}
    for path in yaml_files(REPO / "manifests"):
        for obj in load(path):
            if obj["kind"] in ("Deployment", "StatefulSet", "Job"):
                specs[f"{path.relative_to(REPO)}:{obj['metadata']['name']}"] = obj["spec"][
                    "template"
                ]["spec"]
    example = next(
        o for o in load(REPO / "manifests" / "examples" / "agentdeployment.yaml")
        if o["kind"] == "AgentDeployment"
    )
    spec = AgentDeploymentSpec.model_validate(example["spec"])
    owner = Owner(name=example["metadata"]["name"], namespace="agents", uid=str(uuid.uuid4()))
    rendered = render_agd(spec, owner, spec.replicas)
    specs["example agent StatefulSet"] = rendered.statefulset["spec"]["template"]["spec"]
    assert rendered.migration_job is not None
    specs["example migrations Job"] = rendered.migration_job["spec"]["template"]["spec"]
    shaped = AgentDeploymentSpec.model_validate({**example["spec"], **SHAPED})
    refuse_unsafe_pod_shape(shaped)
    rendered = render_agd(shaped, owner, shaped.replicas)
    specs["shaped agent StatefulSet"] = rendered.statefulset["spec"]["template"]["spec"]
    assert rendered.migration_job is not None
    specs["shaped migrations Job"] = rendered.migration_job["spec"]["template"]["spec"]
    return specs


SHAPED: dict[str, Any] = {
    "podMetadata": {"labels": {"team": "research"},
                    "annotations": {"sidecar.istio.io/inject": "false"}},
    "volumes": [{"name": "prompts", "configMap": {"name": "prompts"}},
                {"name": "cache", "emptyDir": {"sizeLimit": "1Gi"}},
                {"name": "info", "downwardAPI": {"items": [
                    {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
                {"name": "creds", "projected": {"sources": [{"secret": {"name": "creds"}}]}}],
    "volumeMounts": [{"name": "prompts", "mountPath": "/etc/prompts", "readOnly": True},
                     {"name": "cache", "mountPath": "/var/cache/agent"},
                     {"name": "info", "mountPath": "/etc/podinfo"},
                     {"name": "creds", "mountPath": "/var/run/creds", "readOnly": True}],
    "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                                   "whenUnsatisfiable": "ScheduleAnyway"}],
    "podDisruptionBudget": {"maxUnavailable": "50%"},
    "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
    "migrations": {"resources": {"requests": {"cpu": "10m"}, "limits": {"memory": "64Mi"}}},
    "containerSecurityContext": {"capabilities": {"add": ["NET_BIND_SERVICE"]}},
    "sidecars": [{"name": "shipper", "image": "registry.example/shipper:1",
                  "volumeMounts": [{"name": "cache", "mountPath": "/var/log/agent"}]}],
    "initContainers": [{"name": "warm", "image": "registry.example/warm:1",
                        "securityContext": {"readOnlyRootFilesystem": False}},
                       {"name": "proxy", "image": "registry.example/proxy:1",
                        "restartPolicy": "Always"}],
    "podSecurityContext": {"userFromPlatform": True},
}
"""Every pod-shaping field at once (but priorityClassName, which needs a PriorityClass):
what it renders must still pass the restricted Pod Security Standard."""


def test_every_pod_shaping_field_is_accepted_by_the_api_server(
    kube_cluster: KubeCluster, crd: None, test_namespace: str
) -> None:
    body = {"apiVersion": "occurrence.dev/v1alpha1", "kind": "AgentDeployment",
            "metadata": {"name": "shaped", "namespace": test_namespace},
            "spec": {"replicas": 2, "image": "registry.example/agent:1",
                     "database": {"secretRef": {"name": "db"}},
                     "priorityClassName": "agents-high", **SHAPED}}
    done = kube_cluster.kubectl("create", "--dry-run=server", "-f", "-",
                                input=json.dumps(body), check=False)
    assert done.returncode == 0, done.stderr
    for bad, message in (("101%", "maxUnavailable must be a count from 0 to 1000"),
                         (-1, "maxUnavailable must be a count from 0 to 1000")):
        body["spec"]["podDisruptionBudget"] = {"maxUnavailable": bad}
        refused = kube_cluster.kubectl("create", "--dry-run=server", "-f", "-",
                                       input=json.dumps(body), check=False)
        assert refused.returncode != 0 and message in refused.stderr, refused.stderr


POD_SPECS = _pod_specs()


@pytest.mark.parametrize("name", sorted(POD_SPECS))
def test_pod_spec_is_admitted_under_restricted(
    kube_cluster: KubeCluster, restricted_namespace: str, name: str
) -> None:
    ns = restricted_namespace
    spec = POD_SPECS[name]
    sa = spec.get("serviceAccountName")
    if sa and sa != "default":
        kube_cluster.kubectl("-n", ns, "create", "serviceaccount", sa, check=False)
    pod = _pod("pss-check", ns, spec)
    done = kube_cluster.kubectl(
        "create", "--dry-run=server", "-f", "-", input=json.dumps(pod), check=False
    )
    assert done.returncode == 0, f"{name}: {done.stderr}"
    assert "PodSecurity" not in done.stderr, done.stderr


def test_restricted_is_really_enforced(
    kube_cluster: KubeCluster, restricted_namespace: str
) -> None:
    """The negative control: the same check rejects a pod that is not restricted."""
    spec = copy.deepcopy(POD_SPECS["manifests/base/deployment.yaml:occurrence-operator"])
    spec["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    spec.pop("serviceAccountName", None)
    pod = _pod("pss-negative", restricted_namespace, spec)
    done = kube_cluster.kubectl(
        "create", "--dry-run=server", "-f", "-", input=json.dumps(pod), check=False
    )
    assert done.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in done.stderr
    assert "allowPrivilegeEscalation" in done.stderr


def test_deployments_raise_no_pod_security_warning(
    kube_cluster: KubeCluster, crd: None, restricted_namespace: str
) -> None:
    """PodSecurity checks workload templates too (warn mode): the chart's and the examples'
    Deployments get no warning."""
    objects = template(kube_cluster, namespace=restricted_namespace)
    objects += load(REPO / "manifests" / "examples" / "postgres.yaml")
    objects = in_namespace(
        [o for o in objects if o["kind"] in ("Deployment", "ServiceAccount", "Secret")],
        restricted_namespace,
    )
    done = dry_run(kube_cluster, objects)
    assert done.returncode == 0, done.stderr
    assert "would violate PodSecurity" not in done.stderr, done.stderr


# -- helm install → operator under the chart's RBAC reconciles the example -----------------


def _token_kubeconfig(cluster: KubeCluster, namespace: str, sa: str, path: Path) -> Path:
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    token = cluster.kubectl(
        "-n", namespace, "create", "token", sa, "--duration=1h"
    ).stdout.strip()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": admin["clusters"],
        "users": [{"name": sa, "user": {"token": token}}],
        "contexts": [
            {"name": sa, "context": {"cluster": admin["clusters"][0]["name"], "user": sa}}
        ],
        "current-context": sa,
    }
    path.write_text(yaml.safe_dump(config))
    return path


def _operator_argv(container: dict[str, Any], health: int, metrics: int) -> list[str]:
    """The Deployment's command and args, with the listen addresses moved to free local ports
    (the pod would have its own network namespace)."""
    args = []
    for arg in container["args"]:
        if arg.startswith("--liveness="):
            arg = f"--liveness=http://127.0.0.1:{health}/healthz"
        elif arg.startswith("--metrics-address="):
            arg = f"--metrics-address=127.0.0.1:{metrics}"
        args.append(arg)
    (command,) = container["command"]
    script = Path(sys.executable).with_name(command)
    if script.exists():
        return [str(script), *args]
    assert command == "occurrence-operator"
    return [sys.executable, "-m", "occurrence_operator.cli", *args]


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


async def _create_database(server_url: str) -> str:
    name = f"pkg_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    # kwok runs no containers, so the example's migrations Job migrates nothing: do what it
    # would (the operator claims occurrence ids in the registry before creating pods)
    base = server_url.rsplit("/", 1)[0]
    await (await Store.open(f"{base}/{name}", migrate=True)).close()
    return name


def test_helm_install_upgrade_and_the_chart_operator_reconciles_the_example(
    kube_cluster: KubeCluster, crd: None, pg_server: Any, tmp_path: Path
) -> None:
    cluster = kube_cluster
    suffix = uuid.uuid4().hex[:6]
    op_ns = cluster.create_namespace(f"pkg-operator-{suffix}")
    app_ns = cluster.create_namespace(f"pkg-agents-{suffix}")
    cluster.kubectl("label", "namespace", op_ns, "pod-security.kubernetes.io/enforce=restricted")
    db_url = pg_server.url(asyncio.run(_create_database(pg_server.url())))
    release = f"occ-{suffix}"
    values = tmp_path / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "watchNamespaces": [app_ns],
                "example": {
                    "enabled": True,
                    "namespace": app_ns,
                    "replicas": 2,
                    "image": "registry.invalid/occurrence/agent:test",
                    "database": {"secretName": "example-db", "url": db_url},
                },
            }
        )
    )
    log_path = tmp_path / "operator.log"
    proc: subprocess.Popen[bytes] | None = None
    try:
        # --take-ownership: the CRD may already exist (installed by other tests with kubectl)
        done = helm(
            cluster, "install", release, str(CHART), "-n", op_ns, "-f", str(values),
            "--take-ownership",
        )
        assert done.returncode == 0, done.stderr
        done = helm(
            cluster, "upgrade", release, str(CHART), "-n", op_ns, "-f", str(values),
            "--set", "metrics.serviceMonitor.enabled=false",
        )
        assert done.returncode == 0, done.stderr
        assert "REVISION: 2" in done.stdout
        crd_obj = cluster.kubectl_json("get", "crd", "agentdeployments.occurrence.dev")
        assert crd_obj["metadata"]["annotations"]["meta.helm.sh/release-name"] == release
        assert crd_obj["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"

        deployment = cluster.kubectl_json(
            "-n", op_ns, "get", "deployment", f"{release}-occurrence-operator"
        )
        pod_spec = deployment["spec"]["template"]["spec"]
        container = pod_spec["containers"][0]
        assert container["args"][0] == f"--namespace={app_ns}"
        sa = pod_spec["serviceAccountName"]
        kubeconfig = _token_kubeconfig(cluster, op_ns, sa, tmp_path / "sa.kubeconfig")
        # the ServiceAccount can do what the operator needs, and no more
        def can(verb: str, resource: str, namespace: str | None = None) -> bool:
            args = ["--kubeconfig", str(kubeconfig), "auth", "can-i", verb, resource]
            args += ["-n", namespace] if namespace else ["--all-namespaces"]
            done = subprocess.run(
                [cluster.kubectl_path, *args], capture_output=True, text=True,
                env=cluster.env(), timeout=30, check=False,
            )
            return done.stdout.strip() == "yes"

        assert can("create", "statefulsets.apps", app_ns)
        assert can("get", "secrets", app_ns)
        assert not can("list", "secrets", app_ns)
        assert not can("create", "statefulsets.apps", "default")
        assert not can("delete", "namespaces")

        health, metrics = free_port(), free_port()
        env = cluster.env()
        env["KUBECONFIG"] = str(kubeconfig)
        env["PYTHONPATH"] = str(REPO / "operator")
        env["OCCURRENCE_OPERATOR_RESYNC_SECONDS"] = "2"
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                _operator_argv(container, health, metrics),
                env=env, stdout=log, stderr=subprocess.STDOUT,
            )

        def healthy() -> bool:
            assert proc is not None
            if proc.poll() is not None:
                raise AssertionError(f"operator exited:\n{log_path.read_text()[-4000:]}")
            return _healthy(health)

        wait_for(healthy, timeout=60, message="operator liveness endpoint")

        def ready() -> dict[str, Any] | None:
            agd = get(cluster, "agd", "example-agent", app_ns)
            cond = condition(agd, "Ready")
            if agd and cond and cond["status"] == "True":
                return agd
            return None

        agd = wait_for(ready, timeout=180, message="example AgentDeployment Ready")
        assert agd["status"]["readyReplicas"] == 2
        sts = get(cluster, "sts", "example-agent", app_ns)
        assert sts is not None and sts["spec"]["replicas"] == 2
        assert condition(agd, "MigrationsComplete")["status"] == "True"
        logs = log_path.read_text(errors="replace")
        assert "forbidden" not in logs.lower(), logs[-4000:]
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if log_path.exists():
            print("--- operator log (tail) ---\n" + "\n".join(
                log_path.read_text(errors="replace").splitlines()[-40:]))
        cluster.kubectl(
            "-n", app_ns, "patch", "agd", "example-agent", "--type=merge",
            "-p", '{"metadata":{"finalizers":null}}', check=False,
        )
        uninstall = helm(cluster, "uninstall", release, "-n", op_ns, "--wait")
        for ns in (op_ns, app_ns):
            cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
    assert uninstall.returncode == 0, uninstall.stderr
    # helm.sh/resource-policy: keep — uninstalling the chart does not delete the CRD
    # (which would delete every AgentDeployment in the cluster)
    assert has_crd(cluster, "agentdeployments.occurrence.dev")


def test_helm_binary_is_the_pinned_one(kube_cluster: KubeCluster) -> None:
    done = helm(kube_cluster, "version", "--short")
    assert done.returncode == 0
    pinned = next(
        line.split("=", 1)[1]
        for line in (REPO / "hack" / "k8s-versions.env").read_text().splitlines()
        if line.startswith("HELM_VERSION=")
    )
    if kube_cluster.bin_dir is not None and (kube_cluster.bin_dir / "helm").exists():
        assert done.stdout.startswith(pinned), done.stdout

