"""The AgentDeployment as the owner of the objects the operator creates."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import naming, wellknown


@dataclass(frozen=True)
class Owner:
    """Identity of one AgentDeployment: enough to name, place and own its children."""

    name: str
    namespace: str
    uid: str

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Owner:
        """From a Kopf `body` (or any AgentDeployment object as a mapping)."""
        meta = body["metadata"]
        return cls(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])

    def reference(self) -> dict[str, Any]:
        """Controller owner reference: garbage collection removes children with the owner, and
        `blockOwnerDeletion` keeps foreground deletion waiting for them."""
        return {
            "apiVersion": wellknown.API_VERSION,
            "kind": wellknown.KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }

    def child(self, api_version: str, kind: str, name: str,
              labels: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The head of an owned object's manifest: `apiVersion`, `kind` and its `metadata`
        in the owner's namespace, owned by it (labels: the AgentDeployment's common labels
        unless given)."""
        return {
            "apiVersion": api_version,
            "kind": kind,
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "labels": dict(naming.common_labels(self.name) if labels is None else labels),
                "ownerReferences": [self.reference()],
            },
        }
