"""The CRD and the pydantic models agree: the committed CRD is generated from the models, and
the generated schema is structural, defaults like the models and accepts what they accept."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from occurrence_operator.crdgen import build_crd, openapi_schema, render_crd_yaml
from occurrence_operator.model import wellknown
from occurrence_operator.model.spec import AgentDeploymentSpec
from occurrence_operator.model.status import AgentDeploymentStatus
from tests.unit.operator.agd_samples import MINIMAL, SAMPLES, spec_of

CRD_FILE = Path(__file__).parents[3] / "crds" / "agentdeployments.occurrence.dev.yaml"


def _root() -> dict[str, Any]:
    return build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_committed_crd_is_generated() -> None:
    assert CRD_FILE.read_text() == render_crd_yaml(), (
        "crds/ is stale: python -m occurrence_operator.crdgen > " + str(CRD_FILE)
    )


def test_crd_identity_and_subresources() -> None:
    crd = yaml.safe_load(CRD_FILE.read_text())
    assert crd["metadata"]["name"] == "agentdeployments.occurrence.dev"
    assert crd["spec"]["group"] == wellknown.GROUP
    assert crd["spec"]["scope"] == "Namespaced"
    assert crd["spec"]["names"]["shortNames"] == ["agd"]
    (version,) = crd["spec"]["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"]["status"] == {}
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Desired"] == ".spec.replicas"
    assert columns["Ready"] == ".status.readyReplicas"
    assert columns["Draining"] == ".status.drainingReplicas"
    assert columns["Schema"] == ".status.lastMigration.hash"
    assert columns["Phase"] == ".status.phase"
    assert columns["Age"] == ".metadata.creationTimestamp"


def _walk(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    nodes = [(path or "<root>", schema)]
    for name, sub in schema.get("properties", {}).items():
        nodes += _walk(sub, f"{path}.{name}")
    if "items" in schema:
        nodes += _walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        nodes += _walk(schema["additionalProperties"], f"{path}{{}}")
    return nodes


def test_schema_is_structural() -> None:
    allowed = {
        "description", "type", "format", "enum", "default", "minimum", "maximum", "minLength",
        "maxLength", "pattern", "minItems", "maxItems", "required", "properties",
        "additionalProperties", "items", "nullable", "x-kubernetes-preserve-unknown-fields",
        "x-kubernetes-validations", "x-kubernetes-list-type", "x-kubernetes-list-map-keys",
        "x-kubernetes-int-or-string",
    }  # fmt: skip
    for path, node in _walk(_root()):
        # an IntOrString (a count or a percentage) is the one node without a type
        assert "type" in node or node.get("x-kubernetes-int-or-string"), (
            f"{path}: every node needs a type")
        assert not set(node) - allowed, f"{path}: {set(node) - allowed}"
        assert not ("properties" in node and "additionalProperties" in node), path
        if node.get("x-kubernetes-list-type") == "map":
            for key in node["x-kubernetes-list-map-keys"]:
                assert key in node["items"]["required"], f"{path}: map key {key} not required"
        for rule in node.get("x-kubernetes-validations", []):
            assert set(rule) == {"rule", "message"} and rule["message"], path


def _status_fields() -> set[str]:
    return set(_root()["properties"]["status"]["properties"])


def test_every_status_field_is_declared() -> None:
    assert _status_fields() == {
        "observedGeneration", "replicas", "readyReplicas", "drainingReplicas", "selector",
        "phase", "occurrences", "lastMigration", "scaleDown", "rebalance", "conditions",
        "autoscaling", "rollout", "fencedReplicas", "backlog",
    }  # fmt: skip
    status = _root()["properties"]["status"]["properties"]
    assert set(status["autoscaling"]["properties"]) == {
        "observedBacklog", "recommendedReplicas", "desiredReplicas", "lastScaleTime", "reason",
        "message",
    }  # fmt: skip
    assert status["selector"]["type"] == "string"
    assert set(status["occurrences"]["items"]["properties"]) == {
        "id", "ordinal", "state", "pendingTasks", "heartbeatAgeSeconds",
    }  # fmt: skip
    assert set(status["lastMigration"]["properties"]) == {"hash", "jobName", "completedAt"}
    assert {"phase", "fromReplicas", "toReplicas", "ordinals", "startedAt", "transferred",
            "message"} <= set(status["scaleDown"]["properties"])  # fmt: skip
    assert set(status["rebalance"]["properties"]) == {
        "phase", "fromReplicas", "toReplicas", "requestedAt", "completedAt", "moved", "message",
    }  # fmt: skip
    assert status["rebalance"]["properties"]["phase"]["enum"] == ["Pending", "Done", "Cancelled"]
    assert set(status["conditions"]["items"]["properties"]) == {
        "type", "status", "reason", "message", "lastTransitionTime", "observedGeneration",
    }  # fmt: skip


def _model_walk(model: type[BaseModel], schema: dict[str, Any], path: str) -> None:
    """Every model field is a CRD property with the same requiredness, and nothing else is."""
    aliases = {(info.alias or name): info for name, info in model.model_fields.items()}
    assert set(schema["properties"]) == set(aliases), path
    required = {alias for alias, info in aliases.items() if info.is_required()}
    assert set(schema.get("required", [])) == required, path
    for alias, info in aliases.items():
        sub = schema["properties"][alias]
        for candidate in _models_in(info.annotation):
            target = sub["items"] if sub["type"] == "array" else sub
            _model_walk(candidate, target, f"{path}.{alias}")


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    found: list[type[BaseModel]] = []
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    for arg in getattr(annotation, "__args__", ()):
        found += _models_in(arg)
    return found


@pytest.mark.parametrize(
    ("model", "field"), [(AgentDeploymentSpec, "spec"), (AgentDeploymentStatus, "status")]
)
def test_models_and_crd_walk_alike(model: type[BaseModel], field: str) -> None:
    _model_walk(model, _root()["properties"][field], field)


def _apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """What the API server's defaulting does to a stored object."""
    if isinstance(value, dict) and "properties" in schema:
        for name, sub in schema["properties"].items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                value[name] = _apply_defaults(sub, value[name])
    elif isinstance(value, list) and "items" in schema:
        return [_apply_defaults(schema["items"], item) for item in value]
    return value


_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool}


def _violations(schema: dict[str, Any], value: Any, path: str = "spec") -> list[str]:
    """The OpenAPI checks the API server runs (not CEL), enough for our own schema."""
    if schema.get("x-kubernetes-int-or-string"):
        ok = isinstance(value, int | str) and not isinstance(value, bool)
        return [] if ok else [f"{path}: not an integer or a string"]
    kind = schema["type"]
    if kind == "integer":
        if not isinstance(value, int) or isinstance(value, bool):
            return [f"{path}: not an integer"]
    elif not isinstance(value, _TYPES[kind]):
        return [f"{path}: not {kind}"]
    problems: list[str] = []
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{path}: {value!r} not in enum")
    if "minimum" in schema and value < schema["minimum"]:
        problems.append(f"{path}: below minimum")
    if "maximum" in schema and value > schema["maximum"]:
        problems.append(f"{path}: above maximum")
    if "minLength" in schema and len(value) < schema["minLength"]:
        problems.append(f"{path}: too short")
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        problems.append(f"{path}: too long")
    if "pattern" in schema and not re.search(schema["pattern"], value):
        problems.append(f"{path}: pattern")
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        problems.append(f"{path}: too many items")
    if kind == "object":
        for name in schema.get("required", []):
            if name not in value:
                problems.append(f"{path}.{name}: required")
        properties = schema.get("properties", {})
        for name, item in value.items():
            if name in properties:
                problems += _violations(properties[name], item, f"{path}.{name}")
            elif isinstance(schema.get("additionalProperties"), dict):
                problems += _violations(schema["additionalProperties"], item, f"{path}.{name}")
            elif not schema.get("x-kubernetes-preserve-unknown-fields"):
                problems.append(f"{path}.{name}: unknown field")
    if kind == "array":
        for index, item in enumerate(value):
            problems += _violations(schema["items"], item, f"{path}[{index}]")
    return problems


@pytest.mark.parametrize("sample", sorted(SAMPLES))
def test_api_server_defaults_equal_model_defaults(sample: str) -> None:
    spec_schema = _root()["properties"]["spec"]
    stored = _apply_defaults(spec_schema, copy.deepcopy(SAMPLES[sample]))
    assert stored == spec_of(SAMPLES[sample]).to_wire()


@pytest.mark.parametrize("sample", sorted(SAMPLES))
def test_crd_accepts_what_the_model_accepts(sample: str) -> None:
    assert _violations(_root()["properties"]["spec"], spec_of(SAMPLES[sample]).to_wire()) == []


@pytest.mark.parametrize(
    "changes",
    [
        {"replicas": -1},
        {"imagePullPolicy": "Sometimes"},
        {"database": {"secretRef": {"key": "url"}}},
        {"drain": {"inFlight": "abandon"}},
        {"unknownField": True},
        {"port": 0},
    ],
)
def test_crd_rejects_what_the_model_rejects(changes: dict[str, Any]) -> None:
    raw = {**copy.deepcopy(MINIMAL), **changes}
    with pytest.raises(ValueError):
        AgentDeploymentSpec.model_validate(raw)
    assert _violations(_root()["properties"]["spec"], raw) != []


def test_cel_rules_come_from_the_models() -> None:
    spec = openapi_schema(AgentDeploymentSpec)
    rules = [
        rule["rule"] for _, node in _walk(spec) for rule in node.get("x-kubernetes-validations", [])
    ]
    assert any("self.env.all" in rule for rule in rules)
    assert any("localhostProfile" in rule for rule in rules)
    assert "metadata.name" in _root()["x-kubernetes-validations"][0]["rule"]
