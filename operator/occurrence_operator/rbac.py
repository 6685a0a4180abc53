"""The operator's least-privilege RBAC, rendered from one list of rules.

`python -m occurrence_operator.rbac > manifests/base/rbac.yaml` (a unit test checks the
committed file equals this rendering). Every rule names the code that needs it.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

from .model import wellknown

NAME = wellknown.MANAGER
NAMESPACE = "occurrence-system"

RULES: list[dict[str, Any]] = [
    # reconcile/passes.py reads the AgentDeployment; Kopf watches it and keeps its finalizer and
    # progress annotations (patch; reconcile/passes.py also removes a used skip-drain annotation);
    # the status is written through /status (merge patch).
    {
        "apiGroups": [wellknown.GROUP],
        "resources": [wellknown.PLURAL],
        "verbs": ["get", "list", "watch", "patch"],
    },
    {
        "apiGroups": [wellknown.GROUP],
        "resources": [f"{wellknown.PLURAL}/status"],
        "verbs": ["get", "patch"],
    },
    # spec.autoscaling (autoscaling/controller.py) writes spec.replicas through /scale, and
    # looks (list only) for an HPA or KEDA ScaledObject targeting the same AgentDeployment.
    {
        "apiGroups": [wellknown.GROUP],
        "resources": [f"{wellknown.PLURAL}/scale"],
        "verbs": ["patch"],
    },
    {"apiGroups": ["autoscaling"], "resources": ["horizontalpodautoscalers"], "verbs": ["list"]},
    {"apiGroups": ["keda.sh"], "resources": ["scaledobjects"], "verbs": ["list"]},
    # Owned objects: server-side apply (patch; create when the apply creates the object),
    # the Job's create (never patched; deleted once a newer one succeeded, migrations.py).
    # The informers (informer.py) list and watch each owned kind, label-selected, to keep
    # the cache passes read from and wake the owner.
    {
        "apiGroups": ["apps"],
        "resources": ["statefulsets"],
        "verbs": ["get", "list", "watch", "create", "patch"],
    },
    {
        "apiGroups": ["batch"],
        "resources": ["jobs"],
        "verbs": ["get", "list", "watch", "create", "delete"],
    },
    {
        "apiGroups": [""],
        "resources": ["services"],
        "verbs": ["get", "list", "watch", "create", "patch"],
    },
    {
        "apiGroups": ["policy"],
        "resources": ["poddisruptionbudgets"],
        "verbs": ["get", "list", "watch", "create", "patch"],
    },
    # The agent pods' NetworkPolicy (network_policy.py); deleted when the spec turns it off.
    {
        "apiGroups": ["networking.k8s.io"],
        "resources": ["networkpolicies"],
        "verbs": ["get", "list", "watch", "create", "patch", "delete"],
    },
    # The drain waits for departing pods to be gone; a canary rollout rolled back deletes
    # its pods still on the bad revision (a StatefulSet never replaces a pod below its
    # partition by itself); during a rollout the pods are labelled occurrence.dev/track.
    {"apiGroups": [""], "resources": ["pods"],
     "verbs": ["get", "list", "watch", "delete", "patch"]},
    # The database URL (spec.database.secretRef), read by name only; the agent API's token
    # Secret (<name>-agent-token), created once (never patched, never listed).
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "create"]},
    # Milestone and warning events (events.py).
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    # Kopf, cluster-wide only (--all-namespaces, --namespace globs): watches the CRDs and
    # namespaces as they come and go. With named namespaces its scanning is off
    # (kopf_handlers.startup) and a namespaced install grants neither.
    {
        "apiGroups": ["apiextensions.k8s.io"],
        "resources": ["customresourcedefinitions"],
        "verbs": ["get", "list", "watch"],
    },
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]},
]

PEERING_RULES: list[dict[str, Any]] = [
    # Kopf peering (--peering NAME, several replicas); `create`: the operator makes its
    # peering object if missing (peering.py). Granted only when peering is on.
    {
        "apiGroups": ["kopf.dev"],
        "resources": ["kopfpeerings", "clusterkopfpeerings"],
        "verbs": ["get", "list", "watch", "patch", "create"],
    },
]


def documents(namespace: str = NAMESPACE) -> list[dict[str, Any]]:
    labels = {wellknown.LABEL_NAME: wellknown.MANAGER, wellknown.LABEL_MANAGED_BY: "kustomize"}
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": NAME, "namespace": namespace, "labels": labels},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": NAME, "labels": labels},
            "rules": RULES,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": NAME, "labels": labels},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": NAME,
            },
            "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": namespace}],
        },
    ]


def render_yaml(namespace: str = NAMESPACE) -> str:
    header = (
        "# Generated by `python -m occurrence_operator.rbac`; do not edit.\n"
        "# Least-privilege RBAC of the occurrence operator (see occurrence_operator/rbac.py).\n"
    )
    return header + yaml.safe_dump_all(documents(namespace), sort_keys=False)


def main() -> None:
    sys.stdout.write(render_yaml(sys.argv[1] if len(sys.argv) > 1 else NAMESPACE))


if __name__ == "__main__":
    main()
