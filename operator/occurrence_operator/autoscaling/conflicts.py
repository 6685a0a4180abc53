"""Other autoscalers of the same AgentDeployment: an HPA or a KEDA ScaledObject whose scale
target it is. Two controllers writing one spec.replicas fight; while `spec.autoscaling` is
set, the operator refuses to scale and says which object is in the way."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ..kube.client import ApiError, Kube, collection_path
from ..model import wellknown

log = logging.getLogger(__name__)

OTHER_AUTOSCALERS = (
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("keda.sh/v1alpha1", "ScaledObject"),
)
"""What may target an AgentDeployment's scale subresource."""


def targets(autoscaler: Mapping[str, Any], name: str) -> bool:
    """Does this HPA or ScaledObject scale the AgentDeployment `name` (same namespace)?"""
    ref = (autoscaler.get("spec") or {}).get("scaleTargetRef") or {}
    group = str(ref.get("apiVersion") or "").split("/", 1)[0]
    return bool(ref.get("kind") == wellknown.KIND and ref.get("name") == name
                and group in ("", wellknown.GROUP))


async def find_other_autoscaler(kube: Kube, namespace: str, name: str) -> str | None:
    """`Kind namespace/name` of one HPA or ScaledObject targeting the AgentDeployment, or
    None. A kind the cluster does not serve (KEDA not installed) or the operator may not
    list (an RBAC without it) is skipped: the second with a warning."""
    for api_version, kind in OTHER_AUTOSCALERS:
        try:
            items = await kube.list(collection_path(api_version, kind, namespace))
        except ApiError as e:
            if e.status == 403:
                log.warning("%s/%s: may not list %s objects to check for a second "
                            "autoscaler: %s", namespace, name, kind, e.reason)
            elif e.status != 404:
                raise
            continue
        for item in items:
            if targets(item, name):
                return f"{kind} {namespace}/{item['metadata']['name']}"
    return None
