"""The objects beside the StatefulSet: the token Secret, Service, PDB and NetworkPolicy.

Each is written only if it is this AgentDeployment's (`never_adopt.check_owned`: an object
somebody else made with the same name raises `NameConflict` and is left untouched), and only
if it differs from the rendering (`needs_apply`): a no-op pass writes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ..model import naming
from ..model.never_adopt import check_owned, owned_by
from ..model.owner import Owner
from ..render.objects import Rendered
from .client import Kube, needs_apply, object_path
from .events import EventType
from .secrets import ensure_token_secret

log = logging.getLogger(__name__)


def _path_of(manifest: Mapping[str, Any]) -> str:
    meta = manifest["metadata"]
    return object_path(manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"])


async def apply_if_changed(kube: Kube, manifest: Mapping[str, Any], owner_uid: str) -> None:
    live = await kube.get(_path_of(manifest))
    check_owned(live, owner_uid)
    if needs_apply(manifest, live) and await kube.apply(manifest) is not None:
        meta = manifest["metadata"]
        log.info("%s/%s: applied %s", meta["namespace"], meta["name"], manifest["kind"])


async def apply_owned_objects(kube: Kube, owner: Owner, rendered: Rendered,
                              token_max_age: float | None = None
                              ) -> list[tuple[EventType, str, str]]:
    """Converge the objects; the Events to post (a token Secret made now)."""
    events: list[tuple[EventType, str, str]] = []
    if await ensure_token_secret(kube, owner, max_age=token_max_age):
        events.append(("Normal", "TokensCreated", f"Secret "
                       f"{naming.token_secret_name(owner.name)} holds the agent API's tokens"))
    for manifest in (rendered.service, rendered.pdb, rendered.network_policy):
        if manifest is not None:
            await apply_if_changed(kube, manifest, owner.uid)
    if rendered.network_policy is None:  # turned off: remove ours, never somebody else's
        path = object_path("networking.k8s.io/v1", "NetworkPolicy", owner.namespace,
                           naming.network_policy_name(owner.name))
        live = await kube.get(path, ours_only=True)  # only ours would be deleted
        if live is not None and owned_by(live, owner.uid):
            await kube.delete(path)
    return events
