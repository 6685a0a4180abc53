"""Never adopt: an object the operator wants to write must already be this AgentDeployment's.

A StatefulSet, Service, PodDisruptionBudget, NetworkPolicy, Job or Secret with the name the
operator would use, but without a controller ownerReference to this AgentDeployment, belongs
to somebody else: scaling it, replacing its selector or adding an ownerReference (after which
deleting the AgentDeployment would delete it) would take it over. The reconcile stops with
``Degraded``/``NameConflict`` naming the object, and writes nothing to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

NAME_CONFLICT = "NameConflict"


class NameConflict(Exception):
    """An object with a name the operator needs exists and is not this AgentDeployment's."""

    def __init__(self, kind: str, namespace: str, name: str) -> None:
        self.kind, self.namespace, self.name = kind, namespace, name
        super().__init__(
            f"{kind} {namespace}/{name} already exists and is not owned by this "
            f"AgentDeployment: nothing was written to it (rename the AgentDeployment, or "
            f"delete or rename the {kind})")


def owned_by(live: Mapping[str, Any], owner_uid: str) -> bool:
    refs = (live.get("metadata") or {}).get("ownerReferences") or ()
    return any(ref.get("uid") == owner_uid and ref.get("controller") for ref in refs)


def check_owned(live: Mapping[str, Any] | None, owner_uid: str) -> None:
    """Raise :class:`NameConflict` if ``live`` exists and is not ``owner_uid``'s."""
    if live is None or owned_by(live, owner_uid):
        return
    meta = live.get("metadata") or {}
    raise NameConflict(str(live.get("kind") or "object"), str(meta.get("namespace", "")),
                       str(meta.get("name", "")))
