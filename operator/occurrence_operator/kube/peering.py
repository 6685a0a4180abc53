"""The Kopf peering objects a `--peering NAME` operator needs.

Kopf keeps its peers' keep-alives in the status of a `ClusterKopfPeering` (cluster-wide
operators) or of a `KopfPeering` in each watched namespace (namespace-scoped operators),
named after `--peering`. Kopf does not create that object, and a peer whose object is
missing stays paused for good; so the operator creates it at start (idempotently; it needs
the CRDs from crds/kopf-peering.yaml, and RBAC `create` on them).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from .client import ApiError, Kube

log = logging.getLogger(__name__)

GROUP = "kopf.dev"
VERSION = "v1"


def peering_objects(
    name: str, namespaces: Sequence[str], clusterwide: bool
) -> list[tuple[str, dict[str, Any]]]:
    """(collection path, body) of each peering object: one cluster-wide, or one per literal
    namespace (globs are skipped: create those KopfPeerings yourself)."""
    if clusterwide:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ClusterKopfPeering",
            "metadata": {"name": name},
        }
        return [(f"/apis/{GROUP}/{VERSION}/clusterkopfpeerings", body)]
    found = []
    for ns in dict.fromkeys(namespaces):
        if any(c in ns for c in "*?[]!,"):
            continue
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "KopfPeering",
            "metadata": {"name": name, "namespace": ns},
        }
        found.append((f"/apis/{GROUP}/{VERSION}/namespaces/{ns}/kopfpeerings", body))
    return found


async def ensure_peering_objects(
    kube: Kube, name: str, namespaces: Sequence[str], clusterwide: bool
) -> None:
    """Create the missing peering objects; problems are logged, not fatal (Kopf then waits
    for the object, paused, and says so)."""
    for path, body in peering_objects(name, namespaces, clusterwide):
        try:
            await kube.create(path, body)
            log.info("created %s %r", body["kind"], name)
        except ApiError as e:
            if e.status != 409:  # 409: it exists already (another replica made it)
                log.warning("cannot create %s %r: %s", body["kind"], name, e)
