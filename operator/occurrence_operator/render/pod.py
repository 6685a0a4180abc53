"""The agent pod template: container, environment, probes, scheduling.

Nothing here may depend on `spec.replicas`: the template is hashed by the StatefulSet
controller, and any change to it rolls every pod. Scaling must only add or remove pods.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from ..model import naming, wellknown
from ..model.spec import AgentDeploymentSpec
from .security import (
    DEFAULT_CONTAINER_SECURITY_CONTEXT,
    container_security_context,
    deep_merge,
    pod_security_context,
)

CONTAINER_NAME = "agent"
PORT_NAME = "http"
TMP_VOLUME = "tmp"
TOKEN_VOLUME = "agent-token"
LIVENESS_PATH = "/healthz"
READINESS_PATH = "/readyz"

_PROBE_HANDLERS = ("httpGet", "tcpSocket", "exec", "grpc")


def database_url_env(spec: AgentDeploymentSpec) -> dict[str, Any]:
    """DATABASE_URL from the Secret named in the spec: the only way the URL reaches a pod."""
    ref = spec.database.secret_ref
    return {
        "name": wellknown.ENV_DATABASE_URL,
        "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}},
    }


def operator_env(spec: AgentDeploymentSpec, agent_id: str) -> list[dict[str, Any]]:
    """Variables the operator owns. They come first so user env can refer to them as $(NAME).

    ``agent_id`` (``<namespace>/<name>``) scopes the pods' shared decisions and idempotency
    keys to this AgentDeployment, and makes a pod refuse an occurrence id another one owns.
    """
    return [
        {
            "name": wellknown.ENV_OCCURRENCE_ID,
            "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}},
        },
        {
            "name": wellknown.ENV_OCCURRENCE_ORDINAL,
            "valueFrom": {
                "fieldRef": {
                    "apiVersion": "v1",
                    "fieldPath": f"metadata.labels['{wellknown.POD_INDEX_LABEL}']",
                }
            },
        },
        {
            # the revision this pod was created from: the agent stamps it on every status it
            # sets, so a rollout counts and gives back work per revision
            "name": wellknown.ENV_REVISION,
            "valueFrom": {
                "fieldRef": {
                    "apiVersion": "v1",
                    "fieldPath": f"metadata.labels['{wellknown.REVISION_LABEL}']",
                }
            },
        },
        database_url_env(spec),
        {"name": wellknown.ENV_PORT, "value": str(spec.port)},
        {"name": wellknown.ENV_AGENT_ID, "value": agent_id},
        {"name": wellknown.ENV_IN_FLIGHT_RECOVERY, "value": spec.recovery.in_flight},
        {"name": wellknown.ENV_TOKEN_DIR, "value": wellknown.TOKEN_MOUNT_PATH},
    ]


def agent_env(spec: AgentDeploymentSpec, agent_id: str) -> list[dict[str, Any]]:
    return operator_env(spec, agent_id) + [env.to_wire() for env in spec.env or ()]


def merge_probe(default: Mapping[str, Any], override: Mapping[str, Any] | None) -> dict[str, Any]:
    """Override keys replace the default's; an override handler replaces the default handler."""
    if not override:
        return copy.deepcopy(dict(default))
    replaces_handler = any(handler in override for handler in _PROBE_HANDLERS)
    merged = {
        key: value
        for key, value in default.items()
        if not (replaces_handler and key in _PROBE_HANDLERS)
    }
    merged.update(copy.deepcopy(dict(override)))
    return merged


def _http_probe(path: str, *, period: int, failures: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": PORT_NAME}, "periodSeconds": period,
            "timeoutSeconds": 2, "failureThreshold": failures}


def default_liveness_probe() -> dict[str, Any]:
    return _http_probe(LIVENESS_PATH, period=10, failures=3)


def default_readiness_probe() -> dict[str, Any]:
    # Short period: a draining occurrence fails readiness and should leave the Service fast.
    return _http_probe(READINESS_PATH, period=5, failures=2)


def tmp_volume_mount() -> dict[str, Any]:
    """A writable /tmp: the root filesystem is read-only by default."""
    return {"name": TMP_VOLUME, "mountPath": "/tmp"}


def tmp_volume() -> dict[str, Any]:
    return {"name": TMP_VOLUME, "emptyDir": {}}


def token_volume(name: str) -> dict[str, Any]:
    """The API tokens Secret as files. Not a subPath mount: the kubelet then updates the
    files when the Secret is replaced (rotation), and the agent re-reads them. Mode 0444:
    the container runs one non-root user and no fsGroup is imposed on the user's volumes."""
    return {"name": TOKEN_VOLUME,
            "secret": {"secretName": naming.token_secret_name(name), "defaultMode": 0o444}}


def token_volume_mount() -> dict[str, Any]:
    return {"name": TOKEN_VOLUME, "mountPath": wellknown.TOKEN_MOUNT_PATH, "readOnly": True}


def agent_container(spec: AgentDeploymentSpec, agent_id: str) -> dict[str, Any]:
    probes = spec.probes
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": list(spec.command or wellknown.DEFAULT_AGENT_COMMAND),
    }
    if spec.args is not None:
        container["args"] = list(spec.args)
    container["ports"] = [{"name": PORT_NAME, "containerPort": spec.port, "protocol": "TCP"}]
    container["env"] = agent_env(spec, agent_id)
    if spec.env_from:
        container["envFrom"] = copy.deepcopy(spec.env_from)
    if spec.resources:
        container["resources"] = copy.deepcopy(spec.resources)
    container["livenessProbe"] = merge_probe(
        default_liveness_probe(), probes.liveness if probes else None
    )
    container["readinessProbe"] = merge_probe(
        default_readiness_probe(),
        probes.readiness.to_wire() if probes and probes.readiness else None
    )
    container["securityContext"] = container_security_context(spec.container_security_context)
    container["volumeMounts"] = [tmp_volume_mount(), token_volume_mount(),
                                 *copy.deepcopy(spec.volume_mounts or [])]
    return container


def scheduling(spec: AgentDeploymentSpec) -> dict[str, Any]:
    """Pod-spec fields shared by agent pods and the migrations Job's pod."""
    fields: dict[str, Any] = {
        "automountServiceAccountToken": spec.automount_service_account_token,
    }
    if spec.service_account_name:
        fields["serviceAccountName"] = spec.service_account_name
    if spec.image_pull_secrets:
        fields["imagePullSecrets"] = [ref.to_wire() for ref in spec.image_pull_secrets]
    if spec.node_selector:
        fields["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        fields["tolerations"] = copy.deepcopy(spec.tolerations)
    if spec.affinity:
        fields["affinity"] = copy.deepcopy(spec.affinity)
    if spec.topology_spread_constraints:
        fields["topologySpreadConstraints"] = copy.deepcopy(spec.topology_spread_constraints)
    if spec.priority_class_name:
        fields["priorityClassName"] = spec.priority_class_name
    return fields


def restricted_container(container: Mapping[str, Any]) -> dict[str, Any]:
    """A user's sidecar or init container with the restricted defaults under its own
    security context (what it sets wins; `spec.refuse_unsafe_pod_shape` refused anything
    that would break the standard)."""
    rendered = copy.deepcopy(dict(container))
    rendered["securityContext"] = deep_merge(DEFAULT_CONTAINER_SECURITY_CONTEXT,
                                             container.get("securityContext") or {})
    return rendered


def pod_metadata(spec: AgentDeploymentSpec, name: str) -> dict[str, Any]:
    """The user's pod labels and annotations under the operator's own labels (which win:
    the StatefulSet's selector and the NetworkPolicy depend on them)."""
    extra = spec.pod_metadata
    metadata: dict[str, Any] = {
        "labels": {**((extra.labels if extra else None) or {}), **naming.common_labels(name),
                   wellknown.LABEL_TRACK: wellknown.TRACK_STABLE}}
    if extra is not None and extra.annotations:
        metadata["annotations"] = dict(extra.annotations)
    return metadata


def agent_pod_template(spec: AgentDeploymentSpec, name: str, agent_id: str) -> dict[str, Any]:
    return {
        "metadata": pod_metadata(spec, name),
        "spec": {
            # Service links inject one variable per Service in the namespace; agents use DNS.
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": spec.termination_grace_period_seconds,
            "securityContext": pod_security_context(spec.pod_security_context),
            **scheduling(spec),
            "containers": [agent_container(spec, agent_id),
                           *(restricted_container(c) for c in spec.sidecars or ())],
            **({"initContainers": [restricted_container(c) for c in spec.init_containers]}
               if spec.init_containers else {}),
            "volumes": [tmp_volume(), token_volume(name), *copy.deepcopy(spec.volumes or [])],
        },
    }
