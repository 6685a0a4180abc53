"""The AgentDeployment one reconcile pass works on, as the API server has it.

Holds the body read at the start of the pass (kept up to date with what the pass writes), a
working copy of its `.status`, and the Events the pass will post. Both the pass
(`reconcile/passes.py`) and the Kubernetes side of the drain (`drain/cluster.py`) write through it,
so there is one place that decides what a status write sends: only the fields that differ
from the live status (`status_patch`), so a pass with nothing to do writes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..model import wellknown
from .client import Kube, object_path
from .events import EventType, post

HEARTBEAT_TOLERANCE_SECONDS = 30
"""`status.occurrences[].heartbeatAgeSeconds` is rewritten only when it is off by more than
this (or the status is written anyway): a healthy steady state writes nothing."""


def agd_path(namespace: str, name: str) -> str:
    return object_path(wellknown.API_VERSION, wellknown.KIND, namespace, name)


def status_patch(desired: Mapping[str, Any], live: Mapping[str, Any]) -> dict[str, Any]:
    """The top-level status fields of `desired` that differ from `live` (None: remove), as a
    JSON merge patch. A record (`scaleDown`, `rollout`...) is written whole, and a key it no
    longer has is written as null: a merge patch merges nested objects, so leaving the key
    out would keep its old value on the server."""
    return {k: _whole(v, live.get(k)) for k, v in desired.items()
            if not _same(k, v, live.get(k))}


def _whole(new: Any, old: Any) -> Any:
    """`new`, with a null for every key of `old` it lacks (recursively)."""
    if not isinstance(new, Mapping) or not isinstance(old, Mapping):
        return new
    return {**{k: None for k in old if k not in new},
            **{k: _whole(v, old.get(k)) for k, v in new.items()}}


class AgentDeploymentObject:
    """One AgentDeployment during one pass: its body, status working copy and Events."""

    def __init__(self, kube: Kube, body: dict[str, Any], instance: str) -> None:
        self.kube = kube
        self.body = body
        meta = body["metadata"]
        self.name: str = meta["name"]
        self.namespace: str = meta["namespace"]
        self.instance = instance
        """`reportingInstance` of the Events (this operator replica)."""
        self.status: dict[str, Any] = dict(body.get("status") or {})
        """What the pass knows the status is (or will be) as it goes."""
        self.events: list[tuple[EventType, str, str]] = []

    @property
    def path(self) -> str:
        return agd_path(self.namespace, self.name)

    @property
    def annotations(self) -> dict[str, str]:
        return self.body["metadata"].get("annotations") or {}

    def live_status(self) -> dict[str, Any]:
        """The status as last read from or written to the API server."""
        return self.body.get("status") or {}

    async def write_status(self, desired: Mapping[str, Any]) -> None:
        """Merge-patch only the status fields that differ from the live status."""
        live = self.live_status()
        patch = status_patch(desired, live)
        if not patch:
            return
        result = await self.kube.merge_patch(self.path + "/status", {"status": patch})
        self.body["status"] = (result or {}).get("status") or {
            **live,
            **{k: v for k, v in desired.items() if v is not None and k in patch},
        }

    async def refresh(self) -> bool:
        """Re-read the status from the API server; False if the object is gone."""
        fresh = await self.kube.get(self.path)
        if fresh is None:
            return False
        self.body["status"] = fresh.get("status") or {}
        return True

    async def remove_annotation(self, key: str) -> None:
        await self.kube.merge_patch(self.path, {"metadata": {"annotations": {key: None}}})
        self.annotations.pop(key, None)

    def event(self, type_: EventType, reason: str, message: str) -> None:
        """Queue an Event; `flush_events` posts them (the pass does at its end)."""
        self.events.append((type_, reason, message))

    async def flush_events(self) -> None:
        events, self.events = self.events, []
        for type_, reason, message in events:
            await post(self.kube, self.body, type_, reason, message, instance=self.instance)


def _same(key: str, new: Any, old: Any) -> bool:
    if key != "occurrences" or not isinstance(new, list) or not isinstance(old, list):
        return bool(new == old)
    if len(new) != len(old):
        return False
    for a, b in zip(new, old, strict=True):
        a2 = {k: v for k, v in a.items() if k != "heartbeatAgeSeconds"}
        b2 = {k: v for k, v in b.items() if k != "heartbeatAgeSeconds"}
        if a2 != b2:
            return False
        ha, hb = a.get("heartbeatAgeSeconds"), b.get("heartbeatAgeSeconds")
        if (ha is None) != (hb is None):
            return False
        if ha is not None and abs(ha - hb) > HEARTBEAT_TOLERANCE_SECONDS:
            return False
    return True
