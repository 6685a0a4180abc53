"""PodDisruptionBudget: voluntary disruptions (node drains) take occurrences one at a time."""

from __future__ import annotations

from typing import Any

from ..model import naming
from ..model.owner import Owner
from ..model.spec import AgentDeploymentSpec


def build_pdb(owner: Owner, spec: AgentDeploymentSpec) -> dict[str, Any]:
    """`maxUnavailable` of `spec.podDisruptionBudget`, 1 by default (valid at any replica
    count, including 0).

    An evicted pod comes back with the same occurrence id and takes its own work back, so no
    drain is needed, only a bound on how many are away at once. Unhealthy pods may always be
    evicted, so a crash-looping occurrence cannot block a node drain.
    """
    name = owner.name
    return {
        **owner.child("policy/v1", "PodDisruptionBudget", naming.pdb_name(name)),
        "spec": {
            "maxUnavailable": spec.pod_disruption_budget.max_unavailable,
            "selector": {"matchLabels": naming.selector_labels(name)},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }
