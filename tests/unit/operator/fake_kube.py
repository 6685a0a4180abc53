"""An in-memory stand-in for `occurrence_operator.kube.client.Kube`, for unit tests of a pass.

Objects live in a dict keyed by their API path; `get`, `list` (with equality label
selectors), `create` (with `generateName`), `apply` (keeps the status, bumps the
generation when the spec changes), `merge_patch` (RFC 7386, `/status` patches the status),
`delete` behave like the API server for what the operator does with them. Every write is logged.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Mapping
from typing import Any

from occurrence_operator.kube.client import ApiError, manifest_path
from occurrence_operator.kube.metrics import OperatorMetrics

Write = tuple[str, str, Any]
"""(verb, path, body) of one write."""


def merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge(result.get(key), value)
    return result


class FakeKube:
    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.writes: list[Write] = []
        self._names = itertools.count(1)
        self.metrics = OperatorMetrics()

    def put(self, path: str, body: dict[str, Any]) -> None:
        """Set an object as the cluster has it (no write logged)."""
        body = copy.deepcopy(body)
        meta = body.setdefault("metadata", {})
        meta.setdefault("uid", f"uid-{next(self._names)}")
        meta.setdefault("generation", 1)
        self.objects[path] = body

    def delete_object(self, path: str) -> None:
        self.objects.pop(path, None)

    def events(self) -> list[tuple[str, str]]:
        return [(b["type"], b["reason"]) for verb, path, b in self.writes
                if verb == "POST" and path.endswith("/events")]

    async def get(self, path: str, *, ours_only: bool = False,
                  max_age: float | None = None) -> dict[str, Any] | None:
        """Always the current object: the fake has no cache to be stale."""
        found = self.objects.get(path)
        return copy.deepcopy(found) if found is not None else None

    def forget(self, path: str) -> None:
        """Nothing is cached here."""

    async def list(self, path: str, label_selector: str | None = None) -> list[dict[str, Any]]:
        wanted = dict(p.split("=", 1) for p in (label_selector or "").split(",") if p)
        items = []
        for key, body in sorted(self.objects.items()):
            if key.rsplit("/", 1)[0] != path:
                continue
            labels = body.get("metadata", {}).get("labels") or {}
            if all(labels.get(k) == v for k, v in wanted.items()):
                items.append(copy.deepcopy(body))
        return items

    async def delete(self, path: str, *, propagation: str | None = None) -> None:
        self.writes.append(("DELETE", path, propagation))
        self.objects.pop(path, None)

    async def create(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        self.writes.append(("POST", path, copy.deepcopy(dict(body))))
        new = copy.deepcopy(dict(body))
        meta = new.setdefault("metadata", {})
        if "name" not in meta:
            meta["name"] = f"{meta.get('generateName', 'x-')}{next(self._names)}"
        key = f"{path}/{meta['name']}"
        if key in self.objects:
            raise ApiError(409, "AlreadyExists")
        self.put(key, new)
        return copy.deepcopy(self.objects[key])

    async def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        path = manifest_path(manifest)
        self.writes.append(("APPLY", path, copy.deepcopy(dict(manifest))))
        live = self.objects.get(path)
        new = copy.deepcopy(dict(manifest))
        if live is None:
            self.put(path, new)
        else:
            meta = new.setdefault("metadata", {})
            meta["uid"] = live["metadata"]["uid"]
            generation = live["metadata"].get("generation", 1)
            meta["generation"] = generation + (new.get("spec") != live.get("spec"))
            if "status" in live:
                new["status"] = live["status"]
            self.objects[path] = new
        return copy.deepcopy(self.objects[path])

    async def merge_patch(self, path: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        self.writes.append(("PATCH", path, copy.deepcopy(dict(patch))))
        if path.endswith("/scale"):  # the scale subresource: spec.replicas of the object
            scaled = await self.merge_patch_quietly(path.removesuffix("/scale"), {
                "spec": {"replicas": patch["spec"]["replicas"]}})
            return {"kind": "Scale", "spec": {"replicas": scaled["spec"]["replicas"]}}
        return await self.merge_patch_quietly(path, patch)

    async def merge_patch_quietly(self, path: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        subresource = path.endswith("/status")
        key = path.removesuffix("/status")
        live = self.objects.get(key)
        if live is None:
            raise ApiError(404, "NotFound")
        if subresource:
            new = merge(live, {"status": patch.get("status")})
        else:
            new = merge(live, {k: v for k, v in patch.items() if k != "status"})
            if new.get("spec") != live.get("spec"):
                new["metadata"]["generation"] = live["metadata"].get("generation", 1) + 1
        self.objects[key] = new
        return copy.deepcopy(new)
