"""The StatefulSet that runs the occurrences: pod `<name>-<k>` is occurrence `<name>-<k>`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..model import naming, wellknown
from ..model.owner import Owner
from ..model.spec import AgentDeploymentSpec
from .pod import agent_pod_template


def build_statefulset(spec: AgentDeploymentSpec, owner: Owner, replicas: int,
                      partition: int = 0) -> dict[str, Any]:
    """The StatefulSet manifest with `replicas` pods, ordinals from `partition` up on its
    pod template (a canary rollout holds the rest back: `rollout/`).

    `replicas` is passed in, not read from `spec.replicas`: on a scale-down the operator keeps
    the old count until the departing occurrences are drained (see `drain.planner`).

    `podManagementPolicy: Parallel` because occurrences have no ordering dependency on each
    other (each owns its own work, shared decisions go through the database), and because the
    operator drains departing ordinals *before* it shrinks the StatefulSet, so the ordered,
    one-at-a-time termination of `OrderedReady` would only slow scaling and rollouts down.
    The update strategy stays RollingUpdate, which replaces pods one at a time regardless;
    its partition is always written (0 outside a canary rollout), so that it goes back to 0.
    """
    if replicas < 0:
        raise ValueError(f"replicas must be >= 0, got {replicas}")
    name = owner.name
    return {
        **owner.child("apps/v1", "StatefulSet", naming.statefulset_name(name)),
        "spec": {
            "replicas": replicas,
            "serviceName": naming.service_name(name),
            "podManagementPolicy": "Parallel",
            "updateStrategy": {"type": "RollingUpdate",
                               "rollingUpdate": {"partition": max(0, partition)}},
            "selector": {"matchLabels": naming.selector_labels(name)},
            "template": agent_pod_template(spec, name, wellknown.agent_id(owner.namespace, name)),
        },
    }


@dataclass(frozen=True)
class StatefulSetSize:
    """How big a StatefulSet object says it is (what sizing and the status read of it)."""

    replicas: int = 0
    """spec.replicas"""
    ready: int = 0
    """status.readyReplicas"""
    current: int = 0
    """status.replicas: pods that exist"""
    updated: int = 0
    """status.updatedReplicas: pods on the current template"""
    observed: bool = True
    """status.observedGeneration has caught up with metadata.generation."""

    @classmethod
    def of(cls, sts: Mapping[str, Any] | None) -> StatefulSetSize:
        """The size of a StatefulSet object (None: no StatefulSet)."""
        sts = sts or {}
        status = sts.get("status") or {}
        return cls(replicas=int((sts.get("spec") or {}).get("replicas") or 0),
                   ready=int(status.get("readyReplicas") or 0),
                   current=int(status.get("replicas") or 0),
                   updated=int(status.get("updatedReplicas") or 0),
                   observed=(status.get("observedGeneration") or 0)
                   >= ((sts.get("metadata") or {}).get("generation") or 0))
