"""The agent pods' NetworkPolicy: only the peers the spec names reach the agent port.

It selects every pod of the AgentDeployment — the migrations Job's too, which listen on
nothing, so no pod the operator creates is left open to the whole cluster.

Without one, every pod in the cluster can call every agent's API (tokens still apply, but a
leaked token then works from anywhere). The default peer is the AgentDeployment's own
namespace; `spec.networkPolicy.allowedFrom` replaces it with core/v1 NetworkPolicyPeers
(a monitoring namespace for Prometheus, the clients' pods...); the operator's
`OCCURRENCE_OPERATOR_METRICS_ALLOWED_FROM` (chart `metrics.allowFrom`) adds the platform's
scrapers to every policy. One port serves the API and `/metrics`, so a scraper reaches the
API too — which still wants a token. Kubelet probes are not
affected: traffic from the pod's own node is always allowed by NetworkPolicy semantics.
Ingress only: what the agents connect to (the database) is the user's to restrict.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from ..model import naming, wellknown
from ..model.owner import Owner
from ..model.spec import AgentDeploymentSpec

SAME_NAMESPACE_PEER: dict[str, Any] = {"podSelector": {}}


def build_network_policy(spec: AgentDeploymentSpec, owner: Owner,
                         platform_peers: Sequence[Mapping[str, Any]] = ()
                         ) -> dict[str, Any] | None:
    """The policy, or ``None`` when `spec.networkPolicy.enabled` is false. `platform_peers`
    (the operator's `metrics_allowed_from`, e.g. the cluster's Prometheus) are admitted
    beside the spec's peers, whatever they are."""
    policy = spec.network_policy
    if not policy.enabled:
        return None
    name = owner.name
    peers = copy.deepcopy(policy.allowed_from) if policy.allowed_from else [SAME_NAMESPACE_PEER]
    peers += [copy.deepcopy(dict(p)) for p in platform_peers if dict(p) not in peers]
    return {
        **owner.child("networking.k8s.io/v1", "NetworkPolicy", naming.network_policy_name(name)),
        "spec": {
            "podSelector": {"matchLabels": {wellknown.LABEL_AGENTDEPLOYMENT: name}},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": peers, "ports": [{"protocol": "TCP", "port": spec.port}]}],
        },
    }
