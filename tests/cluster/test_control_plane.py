"""Proof that the local control plane is a real cluster.

CRD schema validation and the scale subresource, the StatefulSet controller with
pod-index labels on kwok nodes, Job pods completing and failing through kwok Stages,
ownerReferences garbage collection, the official Python client, helm. Every wait is
bounded and says what it was waiting for.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testing.localcluster import KubeCluster, container_command, run_pod_command_locally
from testing.waiting import wait_for

pytestmark = pytest.mark.cluster

WAIT = 60  # seconds, for every wait below
# The garbage collector learns about a new CRD's resource through its discovery resync
# (every 30 s), so a dependent of a just-created custom resource can take that long.
GC_WAIT = 90
IMAGE = "registry.invalid/occurrence/agent:test"  # never pulled: kwok does not run containers
GROUP = "test.occurrence.dev"

CRD = f"""
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.{GROUP}
spec:
  group: {GROUP}
  scope: Namespaced
  names: {{plural: widgets, singular: widget, kind: Widget, listKind: WidgetList}}
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {{}}
      scale:
        specReplicasPath: .spec.replicas
        statusReplicasPath: .status.replicas
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [replicas]
            properties:
              replicas: {{type: integer, minimum: 0, maximum: 10}}
              mode: {{type: string, enum: [fast, safe]}}
          status:
            type: object
            properties:
              replicas: {{type: integer}}
"""


def _short(text: str) -> str:
    return f"{text}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def ns(kube_cluster: KubeCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    name = _short(request.node.name.replace("_", "-")[:40].strip("-").lower())
    kube_cluster.create_namespace(name, timeout=WAIT)
    yield name
    kube_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def widget_crd(kube_cluster: KubeCluster) -> Iterator[str]:
    kube_cluster.apply(CRD)
    kube_cluster.kubectl(
        "wait",
        "--for=condition=Established",
        f"crd/widgets.{GROUP}",
        f"--timeout={WAIT}s",
        timeout=WAIT + 10,
    )
    yield f"widgets.{GROUP}"
    kube_cluster.kubectl("delete", "crd", f"widgets.{GROUP}", "--wait=false", check=False)


def pods(cluster: KubeCluster, ns: str, selector: str) -> list[dict[str, Any]]:
    return cluster.kubectl_json("-n", ns, "get", "pods", "-l", selector)["items"]


def describe_pods(cluster: KubeCluster, ns: str) -> str:
    return cluster.kubectl(
        "-n", ns, "get", "pods", "-o", "wide", "--show-labels", check=False
    ).stdout


def job_condition(cluster: KubeCluster, ns: str, name: str, kind: str) -> bool:
    job = cluster.kubectl_json("-n", ns, "get", "job", name)
    return any(
        c["type"] == kind and c["status"] == "True"
        for c in job.get("status", {}).get("conditions", [])
    )


def job_manifest(
    name: str,
    *,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    command: list[str] | None = None,
    env: dict[str, str] | None = None,
    owner: dict[str, Any] | None = None,
) -> str:
    meta: dict[str, Any] = {"name": name}
    if owner:
        meta["ownerReferences"] = [owner]
    container: dict[str, Any] = {
        "name": "main",
        "image": IMAGE,
        "command": command or ["/bin/true"],
    }
    if env:
        container["env"] = [{"name": k, "value": v} for k, v in env.items()]
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {
                    "labels": {"job-under-test": name, **(labels or {})},
                    "annotations": annotations or {},
                },
                "spec": {"restartPolicy": "Never", "containers": [container]},
            },
        },
    }
    return json.dumps(job)


# ---------------------------------------------------------------------------------------


def test_api_server_is_the_pinned_kubernetes(kube_cluster: KubeCluster) -> None:
    assert kube_cluster.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"
    version = kube_cluster.kubectl_json("version")["serverVersion"]
    assert version["major"] == "1"
    assert int(version["minor"].rstrip("+")) >= 30, version
    nodes = kube_cluster.kubectl_json("get", "nodes", "-l", "type=kwok")["items"]
    assert nodes, "no kwok nodes"
    for node in nodes:
        ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"]
        assert ready == "True", node["metadata"]["name"]


def test_official_python_client(kube_cluster: KubeCluster) -> None:
    from kubernetes import client, config

    config.load_kube_config(config_file=str(kube_cluster.kubeconfig))
    names = [n.metadata.name for n in client.CoreV1Api().list_node().items]
    assert any(n.startswith("kwok-node-") for n in names) or kube_cluster.external, names
    with kube_cluster.api_client() as api:
        assert client.VersionApi(api).get_code().major == "1"


def test_crd_scale_subresource(kube_cluster: KubeCluster, widget_crd: str, ns: str) -> None:
    kube_cluster.apply(
        f"""
apiVersion: {GROUP}/v1
kind: Widget
metadata: {{name: w1, namespace: {ns}}}
spec: {{replicas: 1, mode: safe}}
"""
    )
    kube_cluster.kubectl("-n", ns, "scale", f"{widget_crd}/w1", "--replicas=3")
    widget = kube_cluster.kubectl_json("-n", ns, "get", widget_crd, "w1")
    assert widget["spec"]["replicas"] == 3
    scale = kube_cluster.get_raw(f"/apis/{GROUP}/v1/namespaces/{ns}/widgets/w1/scale")
    assert scale["kind"] == "Scale"
    assert scale["spec"]["replicas"] == 3


@pytest.mark.parametrize(
    ("spec", "complaint"),
    [
        ("{replicas: three}", "spec.replicas"),  # wrong type
        ("{replicas: 11}", "spec.replicas"),  # above maximum
        ("{replicas: 1, mode: reckless}", "spec.mode"),  # not in enum
        ("{mode: safe}", "spec.replicas"),  # required field missing
    ],
)
def test_schema_validation_rejects_invalid_objects(
    kube_cluster: KubeCluster, widget_crd: str, ns: str, spec: str, complaint: str
) -> None:
    done = kube_cluster.kubectl(
        "apply",
        "-f",
        "-",
        input=f"apiVersion: {GROUP}/v1\nkind: Widget\n"
        f"metadata: {{name: bad, namespace: {ns}}}\nspec: {spec}\n",
        check=False,
    )
    assert done.returncode != 0, f"accepted an invalid Widget: {done.stdout}"
    assert " is invalid: " in done.stderr, done.stderr
    assert complaint in done.stderr, done.stderr
    # and a built-in type, server-side: a StatefulSet whose selector misses its labels
    done = kube_cluster.kubectl(
        "-n",
        ns,
        "create",
        "--dry-run=server",
        "-f",
        "-",
        input=json.dumps(
            {
                "apiVersion": "apps/v1",
                "kind": "StatefulSet",
                "metadata": {"name": "bad"},
                "spec": {
                    "selector": {"matchLabels": {"app": "x"}},
                    "template": {
                        "metadata": {"labels": {"app": "y"}},
                        "spec": {"containers": [{"name": "c", "image": IMAGE}]},
                    },
                },
            }
        ),
        check=False,
    )
    assert done.returncode != 0 and "selector" in done.stderr, done.stderr


def test_statefulset_pod_index_and_scale_down(kube_cluster: KubeCluster, ns: str) -> None:
    kube_cluster.apply(
        textwrap.dedent(
            f"""
            apiVersion: v1
            kind: Service
            metadata: {{name: agents, namespace: {ns}}}
            spec:
              clusterIP: None
              selector: {{app: agents}}
              ports: [{{port: 80}}]
            ---
            apiVersion: apps/v1
            kind: StatefulSet
            metadata: {{name: agents, namespace: {ns}}}
            spec:
              serviceName: agents
              replicas: 3
              podManagementPolicy: Parallel
              selector: {{matchLabels: {{app: agents}}}}
              template:
                metadata: {{labels: {{app: agents}}}}
                spec:
                  containers: [{{name: agent, image: "{IMAGE}"}}]
            """
        )
    )

    def three_running() -> list[dict[str, Any]] | None:
        items = pods(kube_cluster, ns, "app=agents")
        running = [p for p in items if p["status"].get("phase") == "Running"]
        return running if len(running) == 3 else None

    running = wait_for(
        three_running,
        timeout=WAIT,
        interval=0.5,
        retry_on=(Exception,),  # kubectl and the JSON it prints, until they settle
        message=lambda: f"3 Running StatefulSet pods in {ns}:\n{describe_pods(kube_cluster, ns)}",
    )
    by_name = {p["metadata"]["name"]: p for p in running}
    assert sorted(by_name) == ["agents-0", "agents-1", "agents-2"]
    for name, pod in by_name.items():
        assert pod["metadata"]["labels"]["apps.kubernetes.io/pod-index"] == name[-1]
        assert pod["spec"]["nodeName"].startswith("kwok-node-") or kube_cluster.external
        ready = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
        assert ready.get("Ready") == "True", pod["status"]
    wait_for(
        lambda: (
            kube_cluster.kubectl_json("-n", ns, "get", "statefulset", "agents")["status"].get(
                "readyReplicas"
            )
            == 3
        ),
        timeout=WAIT,
        interval=0.5,
        retry_on=(Exception,),
        message="StatefulSet readyReplicas == 3",
    )

    kube_cluster.kubectl("-n", ns, "scale", "statefulset/agents", "--replicas=1")
    wait_for(
        lambda: (
            [p["metadata"]["name"] for p in pods(kube_cluster, ns, "app=agents")] == ["agents-0"]
        ),
        timeout=WAIT,
        interval=0.5,
        retry_on=(Exception,),
        message=lambda: f"only agents-0 left after scale to 1:\n{describe_pods(kube_cluster, ns)}",
    )


def test_job_pod_completes_through_kwok_stage(kube_cluster: KubeCluster, ns: str) -> None:
    kube_cluster.apply(job_manifest("migrate-ok"), "-n", ns)
    wait_for(
        lambda: job_condition(kube_cluster, ns, "migrate-ok", "Complete"),
        timeout=WAIT,
        interval=0.5,
        retry_on=(Exception,),
        message=lambda: f"Job migrate-ok Complete:\n{describe_pods(kube_cluster, ns)}",
    )
    (pod,) = pods(kube_cluster, ns, "job-under-test=migrate-ok")
    assert pod["status"]["phase"] == "Succeeded"
    (status,) = pod["status"]["containerStatuses"]
    assert status["state"]["terminated"]["exitCode"] == 0
    job = kube_cluster.kubectl_json("-n", ns, "get", "job", "migrate-ok")
    assert job["status"]["succeeded"] == 1


def test_job_pod_fails_through_labelled_kwok_stage(kube_cluster: KubeCluster, ns: str) -> None:
    kube_cluster.apply(
        job_manifest(
            "migrate-bad",
            labels={"kwok.occurrence.dev/outcome": "fail"},
            annotations={"kwok.occurrence.dev/exit-code": "3"},
        ),
        "-n",
        ns,
    )
    wait_for(
        lambda: job_condition(kube_cluster, ns, "migrate-bad", "Failed"),
        timeout=WAIT,
        interval=0.5,
        retry_on=(Exception,),
        message=lambda: f"Job migrate-bad Failed:\n{describe_pods(kube_cluster, ns)}",
    )
    (pod,) = pods(kube_cluster, ns, "job-under-test=migrate-bad")
    assert pod["status"]["phase"] == "Failed"
    (status,) = pod["status"]["containerStatuses"]
    assert status["state"]["terminated"]["exitCode"] == 3
    assert status["state"]["terminated"]["reason"] == "Error"
    job = kube_cluster.kubectl_json("-n", ns, "get", "job", "migrate-bad")
    assert job["status"].get("failed") == 1
    assert not job["status"].get("succeeded")


def test_owner_deletion_garbage_collects_dependents(
    kube_cluster: KubeCluster, widget_crd: str, ns: str
) -> None:
    kube_cluster.apply(
        f"apiVersion: {GROUP}/v1\nkind: Widget\nmetadata: {{name: owner, namespace: {ns}}}\n"
        "spec: {replicas: 1}\n"
    )
    owner = kube_cluster.kubectl_json("-n", ns, "get", widget_crd, "owner")
    ref = {
        "apiVersion": f"{GROUP}/v1",
        "kind": "Widget",
        "name": "owner",
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    kube_cluster.apply(job_manifest("owned", owner=ref), "-n", ns)
    kube_cluster.apply(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "owned", "ownerReferences": [ref]},
                "data": {"k": "v"},
            }
        ),
        "-n",
        ns,
    )
    wait_for(
        lambda: job_condition(kube_cluster, ns, "owned", "Complete"),
        timeout=WAIT,
        interval=0.5,
        retry_on=(Exception,),
        message=lambda: f"Job owned Complete:\n{describe_pods(kube_cluster, ns)}",
    )
    assert pods(kube_cluster, ns, "job-under-test=owned"), "the Job's pod is gone too early"

    kube_cluster.kubectl(
        "-n",
        ns,
        "delete",
        widget_crd,
        "owner",
        "--wait=true",
        f"--timeout={WAIT}s",
        timeout=WAIT + 10,
    )

    def all_gone() -> bool:
        left = kube_cluster.kubectl(
            "-n", ns, "get", "job/owned", "configmap/owned", "--ignore-not-found", "-o", "name"
        ).stdout.strip()
        return not left and not pods(kube_cluster, ns, "job-under-test=owned")

    wait_for(
        all_gone,
        timeout=GC_WAIT,
        interval=0.5,
        retry_on=(Exception,),
        message=lambda: (
            "garbage collection of the Widget's Job, its pod and ConfigMap:\n"
            + kube_cluster.kubectl("-n", ns, "get", "all,configmaps", check=False).stdout
        ),
    )


def test_pod_command_runs_locally(kube_cluster: KubeCluster, ns: str) -> None:
    """kwok does not run containers: take the exact command and env from the pod the Job
    controller rendered, and run it here."""
    script = "import os, sys; print(os.environ['GREETING'], sys.argv[1]); sys.exit(4)"
    kube_cluster.apply(
        job_manifest(
            "local-run",
            labels={"kwok.occurrence.dev/outcome": "run"},  # stays Running on kwok
            command=["python3", "-c", script, "world"],
            env={"GREETING": "hello"},
        ),
        "-n",
        ns,
    )
    pod = wait_for(
        lambda: next(
            (
                p
                for p in pods(kube_cluster, ns, "job-under-test=local-run")
                if p["status"].get("phase") == "Running"
            ),
            None,
        ),
        timeout=WAIT,
        interval=0.5,
        retry_on=(Exception,),
        message="the local-run Job's pod Running",
    )
    argv, env = container_command(pod["spec"])
    assert argv == ["python3", "-c", script, "world"]
    assert env == {"GREETING": "hello"}
    done = run_pod_command_locally(pod["spec"], timeout=WAIT)
    assert done.returncode == 4, done.stderr
    assert done.stdout.strip() == "hello world"


def test_helm_installs_a_chart(kube_cluster: KubeCluster, ns: str, tmp_path: Path) -> None:
    version = kube_cluster.helm("version", "--short").stdout
    assert version.startswith("v3."), version
    chart = tmp_path / "demo"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text(
        "apiVersion: v2\nname: demo\nversion: 0.1.0\nkubeVersion: '>=1.30.0-0'\n"
    )
    (chart / "templates" / "deployment.yaml").write_text(
        textwrap.dedent(
            f"""
            apiVersion: apps/v1
            kind: Deployment
            metadata: {{name: "{{{{ .Release.Name }}}}"}}
            spec:
              replicas: 2
              selector: {{matchLabels: {{app: demo}}}}
              template:
                metadata: {{labels: {{app: demo}}}}
                spec:
                  containers: [{{name: demo, image: "{IMAGE}"}}]
            """
        )
    )
    try:
        kube_cluster.helm(
            "install",
            "demo",
            str(chart),
            "-n",
            ns,
            "--wait",
            f"--timeout={WAIT}s",
            timeout=WAIT + 30,
        )
    except subprocess.CalledProcessError as e:
        pytest.fail(f"helm install failed: {e.stderr}\n{describe_pods(kube_cluster, ns)}")
    deployment = kube_cluster.kubectl_json("-n", ns, "get", "deployment", "demo")
    assert deployment["status"]["readyReplicas"] == 2
