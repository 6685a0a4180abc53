"""The StatefulSet that runs the occurrences: pod `<name>-<k>` is occurrence `<name>-<k>`."""

from __future__ import annotations

from typing import Any

from . import naming, wellknown
from .owner import Owner
from .pod import agent_pod_template
from .spec import AgentDeploymentSpec


def build_statefulset(spec: AgentDeploymentSpec, owner: Owner, replicas: int) -> dict[str, Any]:
    """The StatefulSet manifest with `replicas` pods.

    `replicas` is passed in, not read from `spec.replicas`: on a scale-down the operator keeps
    the old count until the departing occurrences are drained (see `drain.planner`).

    `podManagementPolicy: Parallel` because occurrences have no ordering dependency on each
    other (each owns its own work, shared decisions go through the database), and because the
    operator drains departing ordinals *before* it shrinks the StatefulSet, so the ordered,
    one-at-a-time termination of `OrderedReady` would only slow scaling and rollouts down.
    The update strategy stays RollingUpdate, which replaces pods one at a time regardless.
    """
    if replicas < 0:
        raise ValueError(f"replicas must be >= 0, got {replicas}")
    name = owner.name
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": owner.child_metadata(naming.statefulset_name(name), naming.common_labels(name)),
        "spec": {
            "replicas": replicas,
            "serviceName": naming.service_name(name),
            "podManagementPolicy": "Parallel",
            "updateStrategy": {"type": "RollingUpdate"},
            "selector": {"matchLabels": naming.selector_labels(name)},
            "template": agent_pod_template(spec, name, wellknown.agent_id(owner.namespace, name)),
        },
    }
