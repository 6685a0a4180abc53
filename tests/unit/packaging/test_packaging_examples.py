"""manifests/examples, docs/reference.md and the Makefile fragment, offline.

The API-server checks of the same files (server-side dry-run, PodSecurity admission) are in
tests/cluster/test_packaging.py.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import BaseModel

from occurrence_operator.model import wellknown
from occurrence_operator.model.spec import AgentDeploymentSpec

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "manifests" / "examples"
REFERENCE = REPO / "docs" / "reference.md"


def _objects(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _example_objects() -> dict[tuple[str, str], dict[str, Any]]:
    objects = {}
    for path in sorted(EXAMPLES.glob("*.yaml")):
        if path.name in ("kustomization.yaml", "kustomizeconfig.yaml"):
            continue
        for obj in _objects(path):
            objects[(obj["kind"], obj["metadata"]["name"])] = obj
    return objects


def test_example_agentdeployment_is_a_valid_spec() -> None:
    agd = _example_objects()[("AgentDeployment", "demo-agent")]
    assert agd["apiVersion"] == wellknown.API_VERSION
    spec = AgentDeploymentSpec.model_validate(agd["spec"])
    assert spec.replicas == 3


def test_example_database_url_is_only_in_the_secret() -> None:
    objects = _example_objects()
    agd = objects[("AgentDeployment", "demo-agent")]
    ref = agd["spec"]["database"]["secretRef"]
    secret = objects[("Secret", ref["name"])]
    url = urlsplit(secret["stringData"][ref.get("key", "url")])
    assert "://" not in yaml.safe_dump(agd["spec"])  # no URL in the AgentDeployment
    assert all(e["name"] != wellknown.ENV_DATABASE_URL for e in agd["spec"].get("env", []))
    # the URL points at the example PostgreSQL with its credentials
    pg = objects[("Secret", "postgres")]["stringData"]
    service = objects[("Service", "postgres")]
    assert url.scheme == "postgresql"
    assert (url.username, url.password) == (pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"])
    assert url.path.lstrip("/") == pg["POSTGRES_DB"]
    assert url.hostname == service["metadata"]["name"]
    assert url.port == service["spec"]["ports"][0]["port"]


def test_examples_share_one_namespace_that_enforces_restricted() -> None:
    objects = _example_objects()
    namespace = objects[("Namespace", "agents")]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for (kind, _), obj in objects.items():
        if kind != "Namespace":
            assert obj["metadata"]["namespace"] == "agents", kind


def _restricted_violations(pod_spec: dict[str, Any]) -> list[str]:
    """The restricted Pod Security Standard, checked statically (the API server's PodSecurity
    admission checks it for real in tests/cluster/test_packaging.py)."""
    problems = []
    pod_sc = pod_spec.get("securityContext", {})
    for c in pod_spec.get("initContainers", []) + pod_spec["containers"]:
        sc = c.get("securityContext", {})
        name = c["name"]
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation must be false")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []):
            problems.append(f"{name}: capabilities.drop must contain ALL")
        if not (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")):
            problems.append(f"{name}: runAsNonRoot must be true")
        seccomp = sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}
        if seccomp.get("type") not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: seccompProfile must be RuntimeDefault or Localhost")
        if sc.get("privileged"):
            problems.append(f"{name}: privileged")
    for volume in pod_spec.get("volumes", []):
        if "hostPath" in volume:
            problems.append(f"hostPath volume {volume['name']}")
    return problems


def test_example_postgres_and_operator_pods_are_restricted_statically() -> None:
    postgres = _example_objects()[("Deployment", "postgres")]
    assert _restricted_violations(postgres["spec"]["template"]["spec"]) == []
    operator = _objects(REPO / "manifests" / "base" / "deployment.yaml")[0]
    assert _restricted_violations(operator["spec"]["template"]["spec"]) == []


def _field_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    paths = []
    for name, field in model.model_fields.items():
        alias = field.alias or name
        path = f"{prefix}{alias}"
        paths.append(path)
        for candidate in _nested_models(field.annotation):
            paths += _field_paths(candidate, path + ".")
    return paths


def _nested_models(annotation: Any) -> list[type[BaseModel]]:
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found = []
    for arg in typing.get_args(annotation):
        found += _nested_models(arg)
    return found


SPEC_FIELDS = _field_paths(AgentDeploymentSpec)


def test_the_spec_has_the_expected_shape() -> None:
    assert "database.secretRef.name" in SPEC_FIELDS
    assert "drain.timeoutSeconds" in SPEC_FIELDS
    assert "containerSecurityContext.capabilities.drop" in SPEC_FIELDS


@pytest.mark.parametrize("path", SPEC_FIELDS)
def test_reference_documents_every_spec_field(path: str) -> None:
    text = REFERENCE.read_text()
    assert f"`spec.{path}`" in text, f"docs/reference.md does not document spec.{path}"


def test_reference_defaults_match_the_model() -> None:
    """Each documented scalar default is the model's default."""
    text = REFERENCE.read_text()
    spec = AgentDeploymentSpec.model_validate(
        {"image": "x", "database": {"secretRef": {"name": "db"}}}
    )
    wire = spec.model_dump(by_alias=True, mode="json")
    expected = {
        "replicas": wire["replicas"],
        "imagePullPolicy": wire["imagePullPolicy"],
        "port": wire["port"],
        "terminationGracePeriodSeconds": wire["terminationGracePeriodSeconds"],
        "migrations.enabled": wire["migrations"]["enabled"],
        "migrations.backoffLimit": wire["migrations"]["backoffLimit"],
        "migrations.activeDeadlineSeconds": wire["migrations"]["activeDeadlineSeconds"],
        "drain.timeoutSeconds": wire["drain"]["timeoutSeconds"],
        "drain.inFlight": wire["drain"]["inFlight"],
        "drain.scaleToZeroTarget": wire["drain"]["scaleToZeroTarget"],
        "drain.rebalanceOnScaleUp": wire["drain"]["rebalanceOnScaleUp"],
        "database.secretRef.key": "url",
    }
    for path, default in expected.items():
        shown = str(default).lower() if isinstance(default, bool) else str(default)
        row = next(
            (line for line in text.splitlines() if line.startswith(f"| `spec.{path}`")), None
        )
        assert row is not None, path
        assert f"`{shown}`" in row, f"{path}: default {shown} not in {row!r}"


def test_reference_example_is_a_valid_agentdeployment() -> None:
    text = REFERENCE.read_text()
    blocks = text.split("```yaml\n")[1:]
    docs = [yaml.safe_load(block.split("```")[0]) for block in blocks]
    agds = [d for d in docs if isinstance(d, dict) and d.get("kind") == wellknown.KIND]
    assert agds, "docs/reference.md has no AgentDeployment example"
    for agd in agds:
        AgentDeploymentSpec.model_validate(agd["spec"])


@pytest.mark.parametrize("target", ["image", "kind-up", "kind-load"])
def test_make_targets_say_what_is_missing(tmp_path: Path, target: str) -> None:
    """Without Docker/kind the targets fail with a message naming the missing tool."""
    env = {**os.environ, "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        ["make", "--no-print-directory", "-f", "hack/packaging-make.mk", target,
         f"DOCKER={tmp_path}/no-docker", f"KIND={tmp_path}/no-kind"],
        cwd=REPO, capture_output=True, text=True, env=env, timeout=60,
    )
    assert done.returncode != 0
    assert "not found" in done.stderr, done.stderr


def test_make_fragment_defines_the_targets() -> None:
    text = (REPO / "hack" / "packaging-make.mk").read_text()
    for target in ("kind-up", "image", "kind-load", "deploy", "e2e", "e2e-kind", "e2e-local"):
        assert f"\n{target}:" in text, target
    # one scenario, two clusters: kind and the local real node run the same script
    assert "hack/e2e-kind.sh" in text and "hack/e2e-local.sh" in text
    for wrapper in ("e2e-kind.sh", "e2e-local.sh"):
        assert "hack/e2e/scenario.sh" in (REPO / "hack" / wrapper).read_text(), wrapper
    assert "hack/e2e-local.sh" in (REPO / "Makefile").read_text(), "make test runs the scenario"


def test_the_keda_and_cloudnativepg_examples_target_the_agentdeployment() -> None:
    (scaled,) = _objects(REPO / "manifests" / "autoscaling" / "keda-scaledobject.yaml")
    assert scaled["kind"] == "ScaledObject"
    assert scaled["spec"]["scaleTargetRef"] == {
        "apiVersion": wellknown.API_VERSION, "kind": wellknown.KIND, "name": "demo-agent"}
    (trigger,) = scaled["spec"]["triggers"]
    assert "occurrence_operator_backlog_tasks" in trigger["metadata"]["query"]
    cluster, agd = _objects(REPO / "manifests" / "cloudnativepg" / "agents-on-cloudnativepg.yaml")
    assert cluster["kind"] == "Cluster" and agd["kind"] == wellknown.KIND
    spec = AgentDeploymentSpec.model_validate(agd["spec"])
    # CloudNativePG's application Secret: <cluster>-app, key uri
    assert (spec.database.secret_ref.name, spec.database.secret_ref.key) == (
        f"{cluster['metadata']['name']}-app", "uri")


def test_the_chart_shows_a_valid_agentdeployment_on_artifact_hub() -> None:
    chart = yaml.safe_load((REPO / "charts" / "occurrence-operator" / "Chart.yaml").read_text())
    annotations = chart["annotations"]
    (example,) = yaml.safe_load(annotations["artifacthub.io/crdsExamples"])
    assert (example["apiVersion"], example["kind"]) == (wellknown.API_VERSION, wellknown.KIND)
    AgentDeploymentSpec.model_validate(example["spec"])
    (crd,) = yaml.safe_load(annotations["artifacthub.io/crds"])
    assert crd["name"] == wellknown.CRD_NAME
    assert all(link["url"].startswith("https://")
               for link in yaml.safe_load(annotations["artifacthub.io/links"]))
