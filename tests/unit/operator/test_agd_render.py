"""Rendering: golden manifests, hash stability, and what must never roll pods.

Regenerate the goldens after an intended change with:

    UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/operator/test_agd_render.py
"""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from occurrence_operator.model import naming, wellknown
from occurrence_operator.model.owner import Owner
from occurrence_operator.model.spec import refuse_unsafe_pod_shape
from occurrence_operator.render.agent_token import build_token_secret, new_tokens
from occurrence_operator.render.job import build_migration_job, migration_hash
from occurrence_operator.render.objects import render
from occurrence_operator.render.statefulset import build_statefulset
from tests.unit.operator.agd_samples import FULL, MINIMAL, OWNER, SAMPLES, SCALED_TO_ZERO, spec_of

GOLDEN_DIR = Path(__file__).parent / "golden"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


def _golden_text(sample: str) -> str:
    spec = spec_of(SAMPLES[sample])
    rendered = render(spec, OWNER, replicas=spec.replicas)
    documents = [{"selector": rendered.selector, "migrationHash": rendered.migration_hash}]
    documents += rendered.objects()
    header = (
        f"# Rendered from tests/unit/operator/agd_samples.py:{sample}; UPDATE_GOLDEN=1 rewrites.\n"
    )
    return header + yaml.safe_dump_all(documents, sort_keys=False, width=100)


@pytest.mark.parametrize("sample", sorted(SAMPLES))
def test_golden(sample: str) -> None:
    path = GOLDEN_DIR / f"{sample}.yaml"
    text = _golden_text(sample)
    if UPDATE:
        path.write_text(text)
    assert path.exists(), f"{path} missing: run with UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{path.name} differs: review, then UPDATE_GOLDEN=1"


def _pod_spec(sts: dict[str, Any]) -> dict[str, Any]:
    return sts["spec"]["template"]["spec"]


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e for e in container["env"]}


def test_statefulset_shape() -> None:
    spec = spec_of(MINIMAL)
    sts = build_statefulset(spec, OWNER, replicas=3)
    assert sts["metadata"]["name"] == "thinker"
    assert sts["spec"]["replicas"] == 3
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    assert sts["spec"]["serviceName"] == "thinker"
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert labels[wellknown.LABEL_NAME] == "occurrence-agent"
    assert labels[wellknown.LABEL_INSTANCE] == "thinker"
    assert labels[wellknown.LABEL_MANAGED_BY] == "occurrence-operator"
    assert labels[wellknown.LABEL_AGENTDEPLOYMENT] == "thinker"
    selector = sts["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()
    (ref,) = sts["metadata"]["ownerReferences"]
    assert ref == {
        "apiVersion": "occurrence.dev/v1alpha1",
        "kind": "AgentDeployment",
        "name": "thinker",
        "uid": OWNER.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def test_pod_env_identity_and_database() -> None:
    spec = spec_of(FULL)
    (container,) = _pod_spec(build_statefulset(spec, OWNER, 5))["containers"]
    env = _env(container)
    assert env["AGENT_OCCURRENCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert (
        env["AGENT_OCCURRENCE_ORDINAL"]["valueFrom"]["fieldRef"]["fieldPath"]
        == "metadata.labels['apps.kubernetes.io/pod-index']"
    )
    assert env["DATABASE_URL"] == {
        "name": "DATABASE_URL",
        "valueFrom": {"secretKeyRef": {"name": "agent-db", "key": "postgres-url"}},
    }
    assert env["AGENT_PORT"]["value"] == "9090"
    names = [e["name"] for e in container["env"]]
    # Operator variables first, so user values can use $(AGENT_OCCURRENCE_ID).
    assert names.index("AGENT_OCCURRENCE_ID") < names.index("INSTANCE_LABEL")
    assert not any("value" in e and "postgres" in str(e["value"]) for e in container["env"])


def test_default_command_and_probes() -> None:
    (container,) = _pod_spec(build_statefulset(spec_of(MINIMAL), OWNER, 1))["containers"]
    assert container["command"] == ["occurrence-agent"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]


def test_probe_overrides_merge() -> None:
    (container,) = _pod_spec(build_statefulset(spec_of(FULL), OWNER, 1))["containers"]
    liveness, readiness = container["livenessProbe"], container["readinessProbe"]
    assert liveness["httpGet"]["path"] == "/healthz" and liveness["periodSeconds"] == 30
    # readiness keeps the agent's /readyz check (a fenced occurrence must leave the Service):
    # only its timing is the user's
    assert readiness["httpGet"] == {"path": "/readyz", "port": "http"}
    assert readiness["periodSeconds"] == 3 and readiness["failureThreshold"] == 4


def _restricted_violations(pod_spec: dict[str, Any]) -> list[str]:
    """The `restricted` Pod Security Standard checks that apply to what we render."""
    problems: list[str] = []
    pod_sc = pod_spec.get("securityContext", {})
    for container in pod_spec["containers"]:
        sc = container.get("securityContext", {})
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append("allowPrivilegeEscalation must be false")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []):
            problems.append("capabilities.drop must include ALL")
        if set(sc.get("capabilities", {}).get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append("capabilities.add beyond NET_BIND_SERVICE")
        if sc.get("privileged"):
            problems.append("privileged")
        if not sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")):
            problems.append("runAsNonRoot")
        if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
            problems.append("runAsUser 0")
        seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append("seccompProfile")
        if container.get("ports") and any(p.get("hostPort") for p in container["ports"]):
            problems.append("hostPort")
    for volume in pod_spec.get("volumes", []):
        if "hostPath" in volume:
            problems.append("hostPath volume")
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod_spec.get(flag):
            problems.append(flag)
    return problems


@pytest.mark.parametrize("sample", sorted(SAMPLES))
def test_pods_pass_restricted_standard(sample: str) -> None:
    spec = spec_of(SAMPLES[sample])
    rendered = render(spec, OWNER, replicas=2)
    assert _restricted_violations(_pod_spec(rendered.statefulset)) == []
    if rendered.migration_job is not None:
        assert _restricted_violations(_pod_spec(rendered.migration_job)) == []


def test_security_overrides_merge_over_defaults() -> None:
    pod = _pod_spec(build_statefulset(spec_of(FULL), OWNER, 1))
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 2000,
        "runAsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
        "fsGroup": 2000,
    }
    sc = pod["containers"][0]["securityContext"]
    assert sc["readOnlyRootFilesystem"] is False
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}


def test_replicas_change_keeps_template_and_job() -> None:
    """Scaling must not roll pods nor re-run migrations."""
    one, many = spec_of(FULL, replicas=1), spec_of(FULL, replicas=7)
    assert (
        build_statefulset(one, OWNER, 1)["spec"]["template"]
        == (build_statefulset(many, OWNER, 7)["spec"]["template"])
    )
    assert build_migration_job(one, OWNER) == build_migration_job(many, OWNER)


def test_same_spec_same_job_name() -> None:
    first = build_migration_job(spec_of(FULL), OWNER)
    second = build_migration_job(spec_of(FULL), OWNER)
    assert first is not None and second is not None
    assert first["metadata"]["name"] == second["metadata"]["name"]
    assert first["metadata"]["name"] == f"thinker-migrate-{migration_hash(spec_of(FULL))}"
    assert len(migration_hash(spec_of(FULL))) == 10


@pytest.mark.parametrize(
    "changes",
    [
        {"image": "ghcr.io/example/agent:1.0.1"},
        {"migrations": {"command": ["occurrence-store", "migrate", "--target", "7"]}},
        {"migrations": {"image": "ghcr.io/example/migrations:1"}},
        {"database": {"secretRef": {"name": "agent-db-v2"}}},
        {"database": {"secretRef": {"name": "agent-db", "key": "other"}}},
    ],
)
def test_migration_inputs_change_the_job_name(changes: dict[str, Any]) -> None:
    assert migration_hash(spec_of(MINIMAL)) != migration_hash(spec_of(MINIMAL, **changes))


@pytest.mark.parametrize(
    "changes",
    [
        {"replicas": 9},
        {"env": [{"name": "X", "value": "1"}]},
        {"migrations": {"backoffLimit": 5, "activeDeadlineSeconds": 60}},
        {"drain": {"inFlight": "wait"}},
        {"imagePullPolicy": "Always"},
    ],
)
def test_other_fields_keep_the_job_name(changes: dict[str, Any]) -> None:
    assert migration_hash(spec_of(MINIMAL)) == migration_hash(spec_of(MINIMAL, **changes))


def test_migration_image_defaults_to_agent_image() -> None:
    pinned = spec_of(MINIMAL, migrations={"image": MINIMAL["image"]})
    assert migration_hash(pinned) == migration_hash(spec_of(MINIMAL))


def test_job_shape() -> None:
    job = build_migration_job(spec_of(MINIMAL), OWNER)
    assert job is not None
    assert job["spec"]["backoffLimit"] == 2
    assert job["spec"]["activeDeadlineSeconds"] == 600
    assert "ttlSecondsAfterFinished" not in job["spec"]
    template = job["spec"]["template"]
    assert template["spec"]["restartPolicy"] == "Never"
    assert template["metadata"]["labels"]["occurrence.dev/component"] == "migrations"
    (container,) = template["spec"]["containers"]
    assert container["command"] == ["occurrence-store", "migrate"]
    assert container["env"] == [
        {
            "name": "DATABASE_URL",
            "valueFrom": {"secretKeyRef": {"name": "agent-db", "key": "url"}},
        }
    ]


def test_migration_pods_are_not_selected_as_agents() -> None:
    job = build_migration_job(spec_of(MINIMAL), OWNER)
    assert job is not None
    job_labels = job["spec"]["template"]["metadata"]["labels"]
    selector = naming.selector_labels(OWNER.name)
    assert not selector.items() <= job_labels.items()


def test_disabled_migrations_render_no_job() -> None:
    rendered = render(spec_of(SCALED_TO_ZERO), OWNER, replicas=0)
    assert rendered.migration_job is None and rendered.migration_hash is None
    assert [o["kind"] for o in rendered.objects()] == [
        "Service",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "StatefulSet",
    ]


def test_network_policy_admits_the_namespace_or_the_named_peers_to_the_agent_port() -> None:
    rendered = render(spec_of(MINIMAL), OWNER, replicas=1)
    policy = rendered.network_policy
    assert policy is not None and policy["metadata"]["ownerReferences"][0]["uid"] == OWNER.uid
    selected = policy["spec"]["podSelector"]["matchLabels"].items()
    # every pod the AgentDeployment runs: the agents and the migrations Job's pods
    assert selected <= rendered.statefulset["spec"]["template"]["metadata"]["labels"].items()
    assert selected <= rendered.migration_job["spec"]["template"]["metadata"]["labels"].items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    assert rule == {"from": [{"podSelector": {}}], "ports": [{"protocol": "TCP", "port": 8080}]}
    monitoring = {"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}
    named = spec_of({**MINIMAL, "port": 9000, "networkPolicy": {"allowedFrom": [monitoring]}})
    (rule,) = render(named, OWNER, 1).network_policy["spec"]["ingress"]
    assert rule == {"from": [monitoring], "ports": [{"protocol": "TCP", "port": 9000}]}
    off = spec_of({**MINIMAL, "networkPolicy": {"enabled": False}})
    assert render(off, OWNER, 1).network_policy is None
    assert "NetworkPolicy" not in [o["kind"] for o in render(off, OWNER, 1).objects()]


def test_the_platforms_scrapers_are_admitted_beside_each_agentdeployments_peers() -> None:
    prometheus = {"namespaceSelector": {"matchLabels": {"name": "monitoring"}},
                  "podSelector": {"matchLabels": {"app": "prometheus"}}}
    (rule,) = render(spec_of(MINIMAL), OWNER, 1, [prometheus]).network_policy[
        "spec"]["ingress"]
    assert rule["from"] == [{"podSelector": {}}, prometheus]
    named = spec_of({**MINIMAL, "networkPolicy": {"allowedFrom": [prometheus]}})
    (rule,) = render(named, OWNER, 1, [prometheus]).network_policy["spec"]["ingress"]
    assert rule["from"] == [prometheus]  # named by both: once
    off = spec_of({**MINIMAL, "networkPolicy": {"enabled": False}})
    assert render(off, OWNER, 1, [prometheus]).network_policy is None  # the tenant's choice


def test_the_token_secret_is_owned_and_holds_both_scopes() -> None:
    tokens = new_tokens()
    assert set(tokens) == {"work", "admin"} and tokens["work"] != tokens["admin"]
    assert all(len(t) >= 40 for t in tokens.values())
    secret = build_token_secret(OWNER, tokens)
    assert secret["metadata"]["name"] == f"{OWNER.name}-agent-token"
    assert secret["metadata"]["ownerReferences"][0]["uid"] == OWNER.uid
    assert {k: base64.b64decode(v).decode() for k, v in secret["data"].items()} == tokens
    pod = _pod_spec(build_statefulset(spec_of(MINIMAL), OWNER, 1))
    (container,) = pod["containers"]
    volume = next(v for v in pod["volumes"] if v["name"] == "agent-token")
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "agent-token")
    assert mount["readOnly"] is True and "subPath" not in mount  # rotation updates the files
    assert {"name": "AGENT_TOKEN_DIR", "value": mount["mountPath"]} in container["env"]
    assert pod["automountServiceAccountToken"] is False


def test_long_names_give_valid_job_names() -> None:
    owner = Owner(name="a" * 52, namespace="ns", uid="u")
    job = build_migration_job(spec_of(MINIMAL), owner)
    assert job is not None
    assert len(job["metadata"]["name"]) <= 63
    assert job["metadata"]["name"].endswith(f"-migrate-{migration_hash(spec_of(MINIMAL))}")


def test_selector_string() -> None:
    assert naming.selector_string("thinker") == (
        "occurrence.dev/agentdeployment=thinker,occurrence.dev/component=agent"
    )


@pytest.mark.parametrize("name", ["Thinker", "9lives", "a" * 53, "with.dot", "trailing-"])
def test_invalid_names_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="invalid AgentDeployment name"):
        naming.validate_name(name)


@pytest.mark.parametrize("ordinal", [0, 7, 12345])
def test_ordinal_of_inverts_occurrence_id(ordinal: int) -> None:
    for name in ("thinker", "multi-part-name"):
        occurrence = naming.occurrence_id(name, ordinal)
        assert naming.ordinal_of(occurrence) == ordinal
        assert naming.ordinal_of(occurrence, name) == ordinal


@pytest.mark.parametrize(("occurrence", "name"), [
    ("thinker", None), ("thinker-", None), ("thinker-x", None), ("thinker-٣", None),
    ("other-3", "thinker"), ("thinker-b-3", "thinker"), ("thinker-3", "thinker-b"),
])
def test_ordinal_of_refuses_what_is_not_an_occurrence_id(occurrence: str, name: str | None
                                                         ) -> None:
    assert naming.ordinal_of(occurrence, name) is None


def test_service_and_pdb() -> None:
    rendered = render(spec_of(FULL), OWNER, replicas=5)
    assert rendered.service["spec"]["clusterIP"] == "None"
    assert rendered.service["spec"]["ports"][0]["port"] == 9090
    assert rendered.pdb["spec"]["maxUnavailable"] == "25%"
    assert render(spec_of(MINIMAL), OWNER, replicas=1).pdb["spec"]["maxUnavailable"] == 1
    assert rendered.service["spec"]["selector"] == rendered.pdb["spec"]["selector"]["matchLabels"]


def test_pod_shaping_keeps_the_operators_labels_mounts_and_restricted_volumes() -> None:
    rendered = render(spec_of(FULL), OWNER, replicas=5)
    template = rendered.statefulset["spec"]["template"]
    labels = template["metadata"]["labels"]
    assert labels["team"] == "research"
    assert labels["app.kubernetes.io/name"] == "occurrence-agent"  # the operator's wins
    assert template["metadata"]["annotations"] == {"sidecar.istio.io/inject": "false"}
    pod = template["spec"]
    assert [v["name"] for v in pod["volumes"]] == ["tmp", "agent-token", "prompts", "cache"]
    mounts = [m["mountPath"] for m in pod["containers"][0]["volumeMounts"]]
    assert mounts[:1] == ["/tmp"] and mounts[-2:] == ["/etc/prompts", "/var/cache/agent"]
    assert pod["priorityClassName"] == "agents-high"
    job = rendered.migration_job
    assert job is not None
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"] == {"memory": "128Mi"}
    # the agent's added capability is not the migrations Job's
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}


@pytest.mark.parametrize(("change", "message"), [
    ({"volumes": [{"name": "host", "hostPath": {"path": "/"}}]},
     "spec.volumes[0] (host) must have exactly one source of configMap"),
    ({"volumes": [{"name": "tmp", "emptyDir": {}}]}, "spec.volumes[0].name 'tmp' is taken"),
    ({"volumes": [{"name": "a", "emptyDir": {}, "secret": {"secretName": "s"}}]},
     "must have exactly one source"),
    ({"volumes": [{"name": "a", "emptyDir": {}}],
      "volumeMounts": [{"name": "b", "mountPath": "/x"}]},
     "spec.volumeMounts[0].name 'b' is not one of spec.volumes"),
    ({"volumes": [{"name": "a", "emptyDir": {}}],
      "volumeMounts": [{"name": "a", "mountPath": "/tmp/x"}]}, "overlaps /tmp"),
    ({"volumes": [{"name": "a", "emptyDir": {}}],
      "volumeMounts": [{"name": "a", "mountPath": "/var/run"}]}, "overlaps"),
])
def test_unsafe_pod_shapes_are_refused(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        refuse_unsafe_pod_shape(spec_of({**MINIMAL, **change}))


SIDECAR = {"name": "shipper", "image": "registry.example/shipper:1",
           "volumeMounts": [{"name": "cache", "mountPath": "/var/log/agent"}]}


def test_sidecars_and_init_containers_run_restricted_beside_the_agent() -> None:
    spec = spec_of({**MINIMAL, "volumes": [{"name": "cache", "emptyDir": {}}],
                    "sidecars": [SIDECAR],
                    "initContainers": [{"name": "warm", "image": "registry.example/warm:1",
                                        "securityContext": {"readOnlyRootFilesystem": False}}],
                    "podSecurityContext": {"userFromPlatform": True}})
    refuse_unsafe_pod_shape(spec)
    pod = render(spec, OWNER, replicas=1).statefulset["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["agent", "shipper"]
    shipper = pod["containers"][1]["securityContext"]
    assert shipper["allowPrivilegeEscalation"] is False and shipper["runAsNonRoot"] is True
    assert shipper["capabilities"] == {"drop": ["ALL"]}
    warm = pod["initContainers"][0]["securityContext"]
    assert warm["readOnlyRootFilesystem"] is False  # its own setting wins
    assert warm["seccompProfile"] == {"type": "RuntimeDefault"}
    # OpenShift's restricted-v2 assigns the user: none is set, non-root still is
    assert pod["securityContext"] == {"runAsNonRoot": True,
                                      "seccompProfile": {"type": "RuntimeDefault"}}


@pytest.mark.parametrize(("container", "message"), [
    ({**SIDECAR, "name": "agent"}, "spec.sidecars[0].name 'agent' is taken"),
    ({**SIDECAR, "image": ""}, "needs an image"),
    ({**SIDECAR, "securityContext": {"privileged": True}}, "privileged cannot be true"),
    ({**SIDECAR, "securityContext": {"runAsUser": 0}}, "cannot run as root"),
    ({**SIDECAR, "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}},
     "capabilities ['SYS_ADMIN'] cannot be added"),
    ({**SIDECAR, "ports": [{"containerPort": 80, "hostPort": 80}]}, "hostPort"),
    ({**SIDECAR, "volumeMounts": [{"name": "agent-token", "mountPath": "/t"}]},
     "mounts 'agent-token'"),
])
def test_unsafe_sidecars_are_refused(container: dict[str, Any], message: str) -> None:
    spec = spec_of({**MINIMAL, "volumes": [{"name": "cache", "emptyDir": {}}],
                    "sidecars": [container]})
    with pytest.raises(ValueError, match=re.escape(message)):
        refuse_unsafe_pod_shape(spec)


def test_user_from_platform_excludes_a_user_of_ones_own() -> None:
    with pytest.raises(ValueError, match="userFromPlatform leaves runAsUser"):
        spec_of({**MINIMAL, "podSecurityContext": {"userFromPlatform": True,
                                                   "runAsUser": 1000}})
