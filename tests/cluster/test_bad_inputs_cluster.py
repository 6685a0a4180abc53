"""docs/bad-inputs.md, the AgentDeployment rows, against a real API server and the operator.

The expected text of every row comes from the table itself (tests/badinput/table.py), so the
document says exactly what a user gets:

- `api-server` rows: `kubectl apply` of an invalid AgentDeployment (or a kubectl command on a
  valid one) fails with the documented message (CASES below holds the bad inputs);
- `operator` rows: a Secret that cannot give a database URL, an unreachable database, a
  pass-through field the API server only rejects later: the condition and Warning event.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from occurrence_operator.model import naming
from occurrence_operator.model.spec import AgentDeploymentSpec
from occurrence_operator.render.job import migration_hash
from occurrence_store import Store
from testing.operator_support import (
    OperatorProcess,
    condition,
    create_db_secret,
    drop_namespace,
    events,
    get,
    install_crd,
)
from testing.waiting import wait_for
from tests.badinput.table import Row, rows_by_id

pytestmark = pytest.mark.cluster

SECRET = "hunter2"
TIMEOUT = 60

# id -> either changes to a valid AgentDeployment ("dotted.path": value, None deletes) or
# kubectl arguments run against the valid AgentDeployment "valid" ({name} is replaced).
CASES: dict[str, dict[str, Any] | list[str]] = {
    "crd-replicas-negative": {"spec.replicas": -1},
    "crd-replicas-string": {"spec.replicas": "three"},
    "crd-replicas-float": {"spec.replicas": 1.5},
    "crd-image-missing": {"spec.image": None},
    "crd-image-empty": {"spec.image": ""},
    "crd-pull-policy": {"spec.imagePullPolicy": "Sometimes"},
    "crd-database-missing": {"spec.database": None},
    "crd-secretref-missing": {"spec.database": {}},
    "crd-secret-name-missing": {"spec.database": {"secretRef": {}}},
    "crd-secret-name-invalid": {"spec.database.secretRef.name": "Bad_Name"},
    "crd-secret-key-empty": {"spec.database.secretRef.key": ""},
    "crd-secret-key-invalid": {"spec.database.secretRef.key": "a/b"},
    "crd-inline-url": {"spec.database.url": "postgresql://u@h/db"},
    "crd-unknown-field": {"spec.replica": 3},
    "crd-port-zero": {"spec.port": 0},
    "crd-port-high": {"spec.port": 70000},
    "crd-grace-negative": {"spec.terminationGracePeriodSeconds": -5},
    "crd-command-empty": {"spec.command": []},
    "crd-command-empty-string": {"spec.command": [""]},
    "crd-env-reserved": {"spec.env": [{"name": "DATABASE_URL", "value": "x"}]},
    "crd-env-reserved-id": {"spec.env": [{"name": "AGENT_OCCURRENCE_ID", "value": "x"}]},
    "crd-sa-invalid": {"spec.serviceAccountName": "Bad SA"},
    "crd-pod-root": {"spec.podSecurityContext.runAsUser": 0},
    "crd-replicas-max": {"spec.replicas": 1001},
    "crd-autoscaling-min-above-max": {"spec.autoscaling": {
        "minReplicas": 5, "maxReplicas": 2, "targetBacklogPerOccurrence": 10}},
    "crd-autoscaling-target-zero": {"spec.autoscaling": {
        "maxReplicas": 2, "targetBacklogPerOccurrence": 0}},
    "crd-autoscaling-no-max": {"spec.autoscaling": {"targetBacklogPerOccurrence": 10}},
    "crd-autoscaling-max-above-limit": {"spec.autoscaling": {
        "maxReplicas": 1001, "targetBacklogPerOccurrence": 10}},
    "crd-autoscaling-step-zero": {"spec.autoscaling": {
        "maxReplicas": 2, "targetBacklogPerOccurrence": 10, "scaleUp": {"maxStep": 0}}},
    "crd-autoscaling-window-max": {"spec.autoscaling": {
        "maxReplicas": 2, "targetBacklogPerOccurrence": 10,
        "scaleDown": {"stabilizationWindowSeconds": 3601}}},
    "crd-rollout-strategy-unknown": {"spec.rollout": {"strategy": "BlueGreen"}},
    "crd-rollout-last-wave-partial": {"spec.rollout": {
        "strategy": "Canary", "waves": [{"name": "a", "occurrences": 1},
                                        {"name": "b", "percent": 50}]}},
    "crd-rollout-wave-count-and-percent": {"spec.rollout": {
        "strategy": "Canary", "waves": [{"name": "a", "occurrences": 1, "percent": 10},
                                        {"name": "b", "percent": 100}]}},
    "crd-rollout-percent-over-100": {"spec.rollout": {
        "strategy": "Canary", "waves": [{"name": "a", "percent": 101}]}},
    "crd-rollout-bake-negative": {"spec.rollout": {
        "strategy": "Canary", "waves": [{"name": "a", "percent": 100, "bakeSeconds": -1}]}},
    "crd-rollout-gate-metric-and-prometheus": {"spec.rollout": {
        "strategy": "Canary", "waves": [{"name": "a", "percent": 100, "gates": [
            {"metric": "taskFailureRatio", "max": 0.1,
             "prometheus": {"url": "http://p:9090", "query": "vector(0)"}}]}]}},
    "crd-rollout-gate-prometheus-over-stable": {"spec.rollout": {
        "strategy": "Canary", "waves": [{"name": "a", "percent": 100, "gates": [
            {"maxIncreaseOverStable": 0.1,
             "prometheus": {"url": "http://p:9090", "query": "vector(0)"}}]}]}},
    "crd-rollout-gate-prometheus-url": {"spec.rollout": {
        "strategy": "Canary", "waves": [{"name": "a", "percent": 100, "gates": [
            {"max": 1, "prometheus": {"url": "file:///etc/passwd", "query": "vector(0)"}}]}]}},
    "crd-drain-timeout-max": {"spec.drain.timeoutSeconds": 86401},
    "crd-grace-max": {"spec.terminationGracePeriodSeconds": 86401},
    "crd-args-reserved": {"spec.args": ["--database-url=postgresql://x@h/db"]},
    "crd-args-reserved-split": {"spec.args": ["--token-dir", "/tmp"]},
    "crd-command-reserved": {"spec.command": ["occurrence-agent", "--token-dir=/tmp"]},
    "crd-fenced-not-an-id": {"spec.fencedOccurrences": ["valid"]},
    "crd-fenced-twice": {"spec.fencedOccurrences": ["valid-1", "valid-1"]},
    "crd-readiness-replaced": {"spec.probes.readiness": {"exec": {"command": ["true"]}}},
    "crd-pod-nonroot-false": {"spec.podSecurityContext.runAsNonRoot": False},
    "crd-pod-seccomp-unconfined": {"spec.podSecurityContext.seccompProfile.type": "Unconfined"},
    "crd-pod-seccomp-localhost": {"spec.podSecurityContext.seccompProfile.type": "Localhost"},
    "crd-pod-fsgroup-policy": {"spec.podSecurityContext.fsGroupChangePolicy": "Sometimes"},
    "crd-pod-supplemental-negative": {"spec.podSecurityContext.supplementalGroups": [-1]},
    "crd-container-root": {"spec.containerSecurityContext.runAsUser": 0},
    "crd-container-nonroot-false": {"spec.containerSecurityContext.runAsNonRoot": False},
    "crd-container-privileged": {"spec.containerSecurityContext.privileged": True},
    "crd-container-escalation": {"spec.containerSecurityContext.allowPrivilegeEscalation": True},
    "crd-container-cap-add": {"spec.containerSecurityContext.capabilities.add": ["SYS_ADMIN"]},
    "crd-container-cap-drop": {"spec.containerSecurityContext.capabilities.drop": ["NET_RAW"]},
    "crd-migrations-backoff": {"spec.migrations.backoffLimit": -1},
    "crd-migrations-deadline": {"spec.migrations.activeDeadlineSeconds": 0},
    "crd-migrations-command": {"spec.migrations.command": []},
    "crd-drain-timeout": {"spec.drain.timeoutSeconds": 0},
    "crd-drain-in-flight": {"spec.drain.inFlight": "maybe"},
    "crd-drain-release-grace": {"spec.drain.releaseGraceSeconds": -1},
    "crd-recovery-in-flight": {"spec.recovery.inFlight": "maybe"},
    "crd-drain-scale-to-zero": {"spec.drain.scaleToZeroTarget": "ordinal-1"},
    "crd-name-digit": {"metadata.name": "1agent"},
    "crd-name-too-long": {"metadata.name": "a" * 53},
    "crd-name-underscore": {"metadata.name": "bad_name"},
    "crd-scale-negative": ["scale", "agd", "{name}", "--replicas=-1"],
    "crd-scale-subresource-negative": [
        "patch",
        "agd",
        "{name}",
        "--subresource=scale",
        "--type=merge",
        "-p",
        '{"spec":{"replicas":-1}}',
    ],
}

# id -> (Secret data key, value, condition reason) for the Secret rows
SECRET_CASES: dict[str, tuple[str, bytes, str]] = {
    "op-secret-key-missing": ("other", b"sqlite:///x.db", "SecretKeyMissing"),
    "op-secret-empty": ("url", b"", "SecretKeyMissing"),
    "op-secret-not-text": ("url", b"\xff\xfe\x00", "InvalidDatabaseURL"),
    "op-secret-scheme": ("url", f"mysql://u:{SECRET}@h/db".encode(), "InvalidDatabaseURL"),
    "op-secret-memory": ("url", b"sqlite:///:memory:", "InvalidDatabaseURL"),
    "op-secret-password-leak": (
        "url",
        f"postgresql:/u:{SECRET}@h/db".encode(),
        "InvalidDatabaseURL",
    ),
}


def _row(row_id: str) -> Row:
    row = rows_by_id().get(row_id)
    assert row is not None, f"docs/bad-inputs.md has no row {row_id!r}"
    return row


def _base(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "occurrence.dev/v1alpha1",
        "kind": "AgentDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": 1,
            "image": "registry.example/agent:1",
            "database": {"secretRef": {"name": "db"}},
        },
    }


def _changed(body: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    body = copy.deepcopy(body)
    for path, value in changes.items():
        *parents, leaf = path.split(".")
        node = body
        for key in parents:
            node = node.setdefault(key, {})
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return body


@pytest.fixture(scope="module")
def bad_ns(kube_cluster: Any) -> Iterator[str]:
    install_crd(kube_cluster)
    name = f"bad-inputs-{uuid.uuid4().hex[:6]}"
    kube_cluster.create_namespace(name)
    kube_cluster.apply(yaml.safe_dump(_base("valid", name)))
    yield name
    drop_namespace(kube_cluster, name)


def test_every_api_server_row_has_a_case() -> None:
    documented = {r.id for r in rows_by_id().values() if r.surface == "api-server"}
    assert documented == set(CASES), (
        f"rows without a case: {sorted(documented - set(CASES))}; "
        f"cases without a row: {sorted(set(CASES) - documented)}"
    )


@pytest.mark.parametrize("case", sorted(CASES))
def test_api_server_rejects_bad_agentdeployments(kube_cluster: Any, bad_ns: str, case: str) -> None:
    row = _row(case)
    bad = CASES[case]
    if isinstance(bad, list):
        args = [a.replace("{name}", "valid") for a in bad]
        done = kube_cluster.kubectl("-n", bad_ns, *args, check=False)
    else:
        manifest = yaml.safe_dump(_changed(_base("bad", bad_ns), bad))
        done = kube_cluster.kubectl("apply", "-f", "-", input=manifest, check=False)
    assert done.returncode == 1, f"{row}: accepted ({done.returncode}): {done.stdout}"
    assert row.message in done.stderr, f"{row}:\nexpected: {row.message}\ngot: {done.stderr}"
    if row.result.startswith("Invalid"):
        assert " is invalid" in done.stderr, f"{row}: not a 422 Invalid: {done.stderr}"
    elif row.result.startswith("BadRequest"):
        assert "Error from server (BadRequest)" in done.stderr, done.stderr
    # nothing was stored
    assert kube_cluster.kubectl("-n", bad_ns, "get", "agd", "bad", check=False).returncode != 0
    valid = get(kube_cluster, "agd", "valid", bad_ns)
    assert valid is not None and valid["spec"]["replicas"] == 1


# ------------------------------------------------------------------ operator rows


@pytest.fixture(scope="module")
def operator_ns(
    kube_cluster: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    """A namespace watched by one operator for the module; (namespace, scratch dir)."""
    install_crd(kube_cluster)
    scratch = tmp_path_factory.mktemp("bad-operator")
    name = f"bad-operator-{uuid.uuid4().hex[:6]}"
    kube_cluster.create_namespace(name)
    op = OperatorProcess(kube_cluster, [name], scratch / "operator.log").start()
    try:
        yield name, scratch
    finally:
        op.stop()
        tail = [line[:500] for line in op.logs().splitlines()[-20:]]
        print("--- operator log (tail) ---\n" + "\n".join(tail))
        drop_namespace(kube_cluster, name)


def _secret(cluster: Any, ns: str, name: str, key: str, value: bytes) -> None:
    cluster.apply(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": name, "namespace": ns},
                "data": {key: base64.b64encode(value).decode()},
            }
        )
    )


def _degraded(cluster: Any, ns: str, name: str) -> dict[str, Any] | None:
    cond = condition(get(cluster, "agd", name, ns), "Degraded")
    return cond if cond and cond["status"] == "True" else None


def _agd(ns: str, name: str, secret: str, **spec: Any) -> str:
    body = _base(name, ns)
    body["spec"]["database"] = {"secretRef": {"name": secret}}
    body["spec"].update(spec)
    return yaml.safe_dump(body)


@pytest.mark.parametrize("case", sorted(SECRET_CASES))
def test_secret_problems_become_conditions(
    kube_cluster: Any, operator_ns: tuple[str, Path], case: str
) -> None:
    ns, _ = operator_ns
    row = _row(case)
    key, value, reason = SECRET_CASES[case]
    assert f"`{reason}`" in row.result, f"{row}: result should name {reason}"
    name = case.removeprefix("op-")
    _secret(kube_cluster, ns, name, key, value)
    kube_cluster.apply(_agd(ns, name, name))
    cond = wait_for(
        lambda: _degraded(kube_cluster, ns, name), timeout=TIMEOUT, message=f"{name} Degraded"
    )
    assert cond["reason"] == reason, cond
    assert row.message in cond["message"], f"{row}: {cond['message']}"
    warnings = [e for e in events(kube_cluster, ns, name) if e["type"] == "Warning"]
    assert [e["reason"] for e in warnings] == [reason], warnings
    assert row.message in warnings[0]["message"]
    assert SECRET not in json.dumps(get(kube_cluster, "agd", name, ns)["status"])
    assert SECRET not in json.dumps(warnings)
    assert get(kube_cluster, "sts", name, ns) is None


def test_unreachable_database_is_degraded(kube_cluster: Any, operator_ns: tuple[str, Path]) -> None:
    ns, _ = operator_ns
    row = _row("op-db-unreachable")
    name = "unreachable"
    create_db_secret(kube_cluster, ns, f"postgresql://nobody:{SECRET}@127.0.0.1:1/none", name)
    kube_cluster.apply(_agd(ns, name, name))
    cond = wait_for(
        lambda: _degraded(kube_cluster, ns, name), timeout=TIMEOUT, message=f"{name} Degraded"
    )
    assert cond["reason"] == "DatabaseUnavailable", cond
    assert row.message in cond["message"], f"{row}: {cond['message']}"
    warnings = wait_for(
        lambda: [e for e in events(kube_cluster, ns, name) if e["type"] == "Warning"],
        timeout=TIMEOUT,
        message="a Warning event",
    )
    assert "DatabaseUnavailable" in [e["reason"] for e in warnings]
    assert SECRET not in json.dumps(get(kube_cluster, "agd", name, ns)["status"])
    assert SECRET not in json.dumps(warnings)


async def _migrated(path: Path) -> str:
    url = f"sqlite:///{path}"
    store = await Store.open(url, migrate=True)
    await store.close()
    return url


def test_bare_word_in_secret_is_not_a_database_url(
    kube_cluster: Any, operator_ns: tuple[str, Path]
) -> None:
    """The README says a value that is not a postgresql:// or sqlite:/// URL is Degraded
    InvalidDatabaseURL. (An absolute path stands in for `hunter2`, so that the operator's
    file lands in the scratch directory, not in its working directory.)"""
    ns, scratch = operator_ns
    name = "bare-word"
    asyncio.run(_migrated(scratch / SECRET))
    create_db_secret(kube_cluster, ns, str(scratch / SECRET), name)
    kube_cluster.apply(_agd(ns, name, name))
    cond = wait_for(
        lambda: condition(get(kube_cluster, "agd", name, ns), "Degraded"),
        timeout=TIMEOUT,
        message=f"{name} Degraded condition",
    )
    assert (cond["status"], cond["reason"]) == ("True", "InvalidDatabaseURL"), cond


@pytest.mark.parametrize("migrations_resources", [None, {"limits": {"memory": "64Mi"}}],
                         ids=["job-inherits-the-bad-value", "job-has-its-own"])
def test_pass_through_field_the_api_server_rejects_later(
    kube_cluster: Any, operator_ns: tuple[str, Path], migrations_resources: Any
) -> None:
    """spec.resources is passed through unchecked; the API server refuses it. The migrations
    Job inherits spec.resources unless spec.migrations.resources is set: then the Job is the
    object refused; otherwise the Job runs and the StatefulSet is refused. Either way the
    user is told (Degraded InvalidSpec and a Warning event) and no StatefulSet exists."""
    ns, scratch = operator_ns
    name = "lots" if migrations_resources is None else "lots-own"
    url = asyncio.run(_migrated(scratch / f"{name}.db"))
    create_db_secret(kube_cluster, ns, url, name)
    extra: dict[str, Any] = {"resources": {"limits": {"memory": "lots"}}}
    if migrations_resources is not None:
        extra["migrations"] = {"resources": migrations_resources}
    kube_cluster.apply(_agd(ns, name, name, **extra))
    if migrations_resources is not None:
        wait_for(
            lambda: any(
                (j.get("status") or {}).get("succeeded")
                for j in kube_cluster.kubectl_json("-n", ns, "get", "jobs")["items"]
                if j["metadata"]["name"].startswith(f"{name}-migrate-")
            ),
            timeout=TIMEOUT,
            message="migrations Job succeeded",
        )
    cond = wait_for(
        lambda: _degraded(kube_cluster, ns, name), timeout=TIMEOUT, message=f"{name} Degraded"
    )
    assert cond["reason"] == "InvalidSpec", cond
    assert any(e["type"] == "Warning" for e in events(kube_cluster, ns, name))
    assert get(kube_cluster, "sts", name, ns) is None


NASTY_PASSWORDS = ("Pa/SS@W0RD?X#Y:1", "A@B@C%40D", "ZZ:Q?PASSWORD=@XQZ", "#SECRET/../ETC")
"""Passwords a URL parser splits wrongly: every piece of 3+ characters must stay unseen."""


def _pieces(password: str) -> list[str]:
    return [p for p in {password, *re.split(r"[^A-Za-z0-9]", password)} if len(p) >= 3]


@pytest.mark.parametrize("password", NASTY_PASSWORDS)
def test_no_piece_of_any_password_reaches_status_events_or_logs(
    kube_cluster: Any, operator_ns: tuple[str, Path], password: str,
) -> None:
    ns, scratch = operator_ns
    name = f"pw-{NASTY_PASSWORDS.index(password)}"
    create_db_secret(kube_cluster, ns, f"postgresql://nobody:{password}@127.0.0.1:1/none", name)
    kube_cluster.apply(_agd(ns, name, name))
    cond = wait_for(lambda: _degraded(kube_cluster, ns, name), timeout=TIMEOUT,
                    message=f"{name} Degraded")
    assert cond["reason"] in ("DatabaseUnavailable", "InvalidDatabaseURL"), cond
    warnings = wait_for(
        lambda: [e for e in events(kube_cluster, ns, name) if e["type"] == "Warning"],
        timeout=TIMEOUT, message="a Warning event")
    time.sleep(2)  # let the operator log its retries too
    seen = {"status": json.dumps(get(kube_cluster, "agd", name, ns)["status"]),
            "events": json.dumps(warnings),
            "operator log": (scratch / "operator.log").read_text()}
    for channel, text in seen.items():
        for piece in _pieces(password):
            assert piece not in text, f"{piece!r} of the password in the {channel}"


def _foreign(kind: str, ns: str, name: str) -> dict[str, Any]:
    """An object somebody else made, with the name an AgentDeployment would use."""
    labels = {"app": f"users-own-{name}"}
    meta = {"name": name, "namespace": ns, "labels": labels}
    if kind == "StatefulSet":
        return {"apiVersion": "apps/v1", "kind": kind, "metadata": meta, "spec": {
            "replicas": 2, "serviceName": name, "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [
                {"name": "app", "image": "example.invalid/users-own:1"}]}}}}
    if kind == "Service":
        return {"apiVersion": "v1", "kind": kind, "metadata": meta, "spec": {
            "selector": labels, "ports": [{"port": 80}]}}
    if kind == "PodDisruptionBudget":
        return {"apiVersion": "policy/v1", "kind": kind, "metadata": meta, "spec": {
            "maxUnavailable": 3, "selector": {"matchLabels": labels}}}
    if kind == "NetworkPolicy":
        return {"apiVersion": "networking.k8s.io/v1", "kind": kind, "metadata": meta,
                "spec": {"podSelector": {"matchLabels": labels}, "policyTypes": ["Ingress"]}}
    if kind == "Job":  # the migrations Job's predictable name, reporting Complete (kwok)
        spec = AgentDeploymentSpec.model_validate(
            _changed(_base(name, ns), {"spec.database": {"secretRef": {"name": f"{name}-db"}},
                                       "spec.replicas": 0})["spec"])
        job_name = naming.migration_job_name(name, migration_hash(spec))
        return {"apiVersion": "batch/v1", "kind": kind, "metadata": {**meta, "name": job_name},
                "spec": {"backoffLimit": 0, "template": {"metadata": {"labels": labels},
                         "spec": {"restartPolicy": "Never", "containers": [
                             {"name": "fake", "image": "example.invalid/users-own:1"}]}}}}
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": {**meta, "name": f"{name}-agent-token"},
            "stringData": {"work": "the-users-own-token-value"}}


@pytest.mark.parametrize("kind", ["StatefulSet", "Service", "PodDisruptionBudget", "Secret",
                                  "NetworkPolicy", "Job"])
def test_an_object_with_the_name_it_needs_is_never_adopted(
    kube_cluster: Any, operator_ns: tuple[str, Path], kind: str,
) -> None:
    ns, _ = operator_ns
    name = f"taken-{kind.lower()[:6]}"
    foreign = _foreign(kind, ns, name)
    kube_cluster.apply(json.dumps(foreign))
    short = {"StatefulSet": "sts", "Service": "svc", "PodDisruptionBudget": "pdb",
             "Secret": "secret", "NetworkPolicy": "networkpolicy", "Job": "job"}[kind]
    before = get(kube_cluster, short, foreign["metadata"]["name"], ns)
    create_db_secret(kube_cluster, ns, "postgresql://nobody@127.0.0.1:1/none", f"{name}-db")
    kube_cluster.apply(_agd(ns, name, f"{name}-db", replicas=0))
    cond = wait_for(lambda: _degraded(kube_cluster, ns, name), timeout=TIMEOUT,
                    message=f"{name} Degraded")
    assert cond["reason"] == "NameConflict", cond
    assert f"{kind} {ns}/{foreign['metadata']['name']} already exists and is not owned" in \
        cond["message"]
    time.sleep(3)  # a few more passes: still nothing written
    after = get(kube_cluster, short, foreign["metadata"]["name"], ns)
    # (the StatefulSet controller updates the status, so the resourceVersion may move)
    for field in ("spec", "data"):
        assert after.get(field) == before.get(field), field
    assert after["metadata"]["labels"] == before["metadata"]["labels"]
    assert not after["metadata"].get("ownerReferences")
    managers = {m.get("manager") for m in after["metadata"].get("managedFields") or ()}
    assert "occurrence-operator" not in managers, managers
    warnings = [e for e in events(kube_cluster, ns, name) if e["type"] == "Warning"]
    assert "NameConflict" in [e["reason"] for e in warnings], warnings


def test_the_token_secret_is_made_once_owned_and_remade_when_deleted(
    kube_cluster: Any, operator_ns: tuple[str, Path],
) -> None:
    ns, _ = operator_ns
    name = "tokens"
    create_db_secret(kube_cluster, ns, "postgresql://nobody@127.0.0.1:1/none", f"{name}-db")
    kube_cluster.apply(_agd(ns, name, f"{name}-db", replicas=0))
    secret_name = f"{name}-agent-token"
    first = wait_for(lambda: get(kube_cluster, "secret", secret_name, ns), timeout=TIMEOUT,
                     message="the token Secret")
    agd = get(kube_cluster, "agd", name, ns)
    (ref,) = first["metadata"]["ownerReferences"]
    assert ref["uid"] == agd["metadata"]["uid"] and ref["controller"] is True
    tokens = {k: base64.b64decode(v).decode() for k, v in first["data"].items()}
    assert set(tokens) == {"work", "admin"} and len(set(tokens.values())) == 2
    assert all(len(t) >= 40 for t in tokens.values())
    time.sleep(3)  # resyncs leave it alone
    assert get(kube_cluster, "secret", secret_name, ns)["metadata"]["resourceVersion"] == \
        first["metadata"]["resourceVersion"]
    kube_cluster.kubectl("-n", ns, "delete", "secret", secret_name)
    kube_cluster.kubectl("-n", ns, "annotate", "agd", name, f"poke={uuid.uuid4().hex}",
                         "--overwrite")
    second = wait_for(lambda: get(kube_cluster, "secret", secret_name, ns), timeout=TIMEOUT,
                      message="a new token Secret")
    assert second["metadata"]["uid"] != first["metadata"]["uid"]
    assert {k: base64.b64decode(v).decode() for k, v in second["data"].items()} != tokens
    # nothing of a token in the AgentDeployment's status or events
    seen = json.dumps(get(kube_cluster, "agd", name, ns)) + json.dumps(
        events(kube_cluster, ns, name))
    assert not any(t in seen for t in tokens.values())
