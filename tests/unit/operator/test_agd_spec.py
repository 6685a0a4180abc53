"""AgentDeploymentSpec: defaults, aliases, and everything it must reject."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from occurrence_operator.model.spec import AgentDeploymentSpec
from tests.unit.operator.agd_samples import FULL, MINIMAL, spec_of


def _invalid(raw: dict[str, Any], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        AgentDeploymentSpec.model_validate(raw)


def _with(path: str, value: Any, base: dict[str, Any] = MINIMAL) -> dict[str, Any]:
    data = copy.deepcopy(base)
    *parents, leaf = path.split(".")
    node = data
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    return data


def test_defaults() -> None:
    spec = spec_of(MINIMAL)
    assert spec.replicas == 1
    assert spec.image_pull_policy == "IfNotPresent"
    assert spec.command is None and spec.args is None
    assert spec.port == 8080
    assert spec.termination_grace_period_seconds == 60
    assert spec.database.secret_ref.key == "url"
    assert spec.migrations.enabled is True
    assert spec.migrations.backoff_limit == 2
    assert spec.migrations.active_deadline_seconds == 600
    assert spec.drain.timeout_seconds == 120
    assert spec.drain.in_flight == "release"
    assert spec.drain.scale_to_zero_target == "ordinal-0"
    assert spec.drain.rebalance_on_scale_up is False


def test_wire_round_trip_keeps_camel_case_and_passthrough_fields() -> None:
    spec = spec_of(FULL)
    wire = spec.to_wire()
    assert wire["imagePullPolicy"] == "Always"
    assert wire["env"][2]["valueFrom"] == {"secretKeyRef": {"name": "llm", "key": "api-key"}}
    assert wire["affinity"] == FULL["affinity"]
    assert AgentDeploymentSpec.model_validate(wire) == spec


@pytest.mark.parametrize("replicas", [-1, "many", 1.5])
def test_bad_replicas(replicas: Any) -> None:
    _invalid(_with("replicas", replicas), "replicas")


def test_missing_image() -> None:
    data = copy.deepcopy(MINIMAL)
    del data["image"]
    _invalid(data, "image")


def test_missing_secret_name() -> None:
    _invalid(_with("database.secretRef", {"key": "url"}), r"database\.secretRef\.name")


def test_missing_database() -> None:
    data = copy.deepcopy(MINIMAL)
    del data["database"]
    _invalid(data, "database")


def test_inline_database_url_is_not_a_field() -> None:
    _invalid(_with("database.url", "postgresql://u:p@db/agents"), "Extra inputs")


@pytest.mark.parametrize("name", ["Agent_DB", "-db", "db-", ""])
def test_secret_name_must_be_a_dns_name(name: str) -> None:
    _invalid(_with("database.secretRef.name", name), "name")


@pytest.mark.parametrize(
    "path",
    ["replica", "spec", "image_pull_policy", "drain.timeout", "migrations.args", "probes.startup"],
)
def test_unknown_fields_rejected(path: str) -> None:
    _invalid(_with(path, 1), "Extra inputs are not permitted")


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("imagePullPolicy", "Sometimes"),
        ("drain.inFlight", "abandon"),
        ("drain.scaleToZeroTarget", "ordinal-1"),
        ("podSecurityContext.seccompProfile", {"type": "Unconfined"}),
        ("podSecurityContext.fsGroupChangePolicy", "Never"),
    ],
)
def test_bad_enums(path: str, value: Any) -> None:
    _invalid(_with(path, value), "Input should be")


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("port", 0),
        ("port", 70000),
        ("terminationGracePeriodSeconds", -1),
        ("migrations.backoffLimit", -1),
        ("migrations.activeDeadlineSeconds", 0),
        ("drain.timeoutSeconds", 0),
        ("podSecurityContext.runAsUser", 0),
        ("containerSecurityContext.runAsUser", 0),
    ],
)
def test_bounds(path: str, value: int) -> None:
    _invalid(_with(path, value), "greater than|less than")


@pytest.mark.parametrize("name", ["DATABASE_URL", "AGENT_OCCURRENCE_ID", "AGENT_PORT"])
def test_reserved_env_rejected(name: str) -> None:
    _invalid(_with("env", [{"name": name, "value": "x"}]), "env must not set")


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("command", [], "command must not be empty"),
        ("migrations.command", [], r"migrations\.command must not be empty"),
        ("containerSecurityContext.runAsNonRoot", False, "runAsNonRoot cannot be false"),
        ("podSecurityContext.runAsNonRoot", False, "runAsNonRoot cannot be false"),
        ("containerSecurityContext.allowPrivilegeEscalation", True, "allowPrivilegeEscalation"),
        ("containerSecurityContext.privileged", True, "privileged cannot be true"),
        ("containerSecurityContext.capabilities", {"drop": ["NET_RAW"]}, "must contain ALL"),
        ("containerSecurityContext.capabilities", {"add": ["SYS_ADMIN"]}, "NET_BIND_SERVICE"),
        ("podSecurityContext.seccompProfile", {"type": "Localhost"}, "localhostProfile"),
        (
            "podSecurityContext.seccompProfile",
            {"type": "RuntimeDefault", "localhostProfile": "p.json"},
            "localhostProfile",
        ),
    ],
)
def test_cel_twins(path: str, value: Any, message: str) -> None:
    _invalid(_with(path, value), message)


def test_allowed_security_overrides() -> None:
    spec = spec_of(
        _with(
            "containerSecurityContext",
            {
                "runAsNonRoot": True,
                "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
                "seccompProfile": {"type": "Localhost", "localhostProfile": "agent.json"},
            },
        )
    )
    assert spec.container_security_context is not None


def test_snake_case_input_is_rejected() -> None:
    """The API server only knows camelCase; accepting snake_case would diverge from the CRD."""
    _invalid(_with("image_pull_policy", "Always"), "Extra inputs")


def test_spec_is_immutable() -> None:
    spec = spec_of(MINIMAL)
    with pytest.raises(ValidationError):
        spec.replicas = 3  # type: ignore[misc]


@pytest.mark.parametrize(("patch", "message"), [
    ({"replicas": 1001}, "less than or equal to 1000"),
    ({"drain": {"timeoutSeconds": 86_401}}, "less than or equal to 86400"),
    ({"args": ["--database-url=postgresql://u@h/db"]}, "args must not pass"),
    ({"args": ["--occurrence-id", "x-0"]}, "args must not pass"),
    ({"args": ["--token-dir"]}, "args must not pass"),
    ({"probes": {"liveness": {"httpGet": {"host": "10.0.0.1", "port": 80}}}},
     "must not set httpGet.host"),
    ({"probes": {"liveness": {"tcpSocket": {"host": "10.0.0.1", "port": 80}}}},
     "must not set tcpSocket.host"),
    ({"command": ["occurrence-agent", "--database-url=postgresql://u@h/db"]},
     "command must not pass"),
    ({"command": ["occurrence-agent", "--token-dir", "/tmp"]}, "command must not pass"),
    ({"probes": {"readiness": {"httpGet": {"host": "10.0.0.1"}}}}, "Extra inputs"),
    ({"probes": {"readiness": {"exec": {"command": ["true"]}}}}, "Extra inputs"),
    ({"probes": {"readiness": {"httpGet": {"path": "/always-ok", "port": 8080}}}},
     "Extra inputs"),
])
def test_refusals_that_protect_identity_the_fence_and_the_kubelet(
    patch: dict[str, Any], message: str,
) -> None:
    with pytest.raises(ValidationError, match=message):
        AgentDeploymentSpec.model_validate({**MINIMAL, **patch})


def test_allowed_neighbours_of_the_refusals() -> None:
    spec = AgentDeploymentSpec.model_validate({
        **MINIMAL, "replicas": 1000, "args": ["--max-active-tasks=5", "--database"],
        "command": ["occurrence-agent", "--max-active-tasks=3"],
        "probes": {"liveness": {"tcpSocket": {"port": 8080}},
                   "readiness": {"periodSeconds": 2, "failureThreshold": 1}}})
    assert spec.replicas == 1000 and spec.automount_service_account_token is False


def test_the_operators_own_service_account_is_refused() -> None:
    from occurrence_operator.model.spec import refuse_operator_account

    own = ("occurrence-system", "occurrence-operator")
    as_operator = spec_of({**MINIMAL, "serviceAccountName": "occurrence-operator"})
    with pytest.raises(ValueError, match="the operator's own ServiceAccount"):
        refuse_operator_account(as_operator, "occurrence-system", own)
    # the same name in another namespace is another account; no account named: the default
    refuse_operator_account(as_operator, "team-a", own)
    refuse_operator_account(spec_of(MINIMAL), "occurrence-system", own)
    refuse_operator_account(as_operator, "occurrence-system", None)  # not told who we are
