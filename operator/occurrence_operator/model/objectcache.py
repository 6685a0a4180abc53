"""The operator's local copy of the objects it watches, keyed by their API paths.

The informers (informer.py) keep it current from list+watch streams; `Kube.get` answers from
it instead of sending a GET, and `Kube`'s writes put what the API server answered (so a pass
that follows a write never reads the object as it was before the write). Pure: no I/O, and
mutated only on the event loop's thread (the informers hand their events over to it).

What it answers and what it does not:
- a collection (a kind in one namespace, or in all) answers only once its informer has
  listed it (`synced`); before that, and for every kind nobody watches, a read is a miss;
- an object it holds is a hit; an object it does not hold is a miss too, unless the reader
  asks only about objects the watch selects (`ours_only`): a watch is label-selected, so
  "not here" proves only that no object *with our labels* exists, and a same-named object
  somebody else made (which `never_adopt` must see to refuse it) is not in it;
- versions only move forward: an event older than what a write already put (resource
  versions compared as integers, which is what etcd-backed API servers issue) is ignored.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ObjectKey:
    """Where an object lives: its collection (path prefix and plural), namespace and name."""

    collection: str
    namespace: str
    name: str


def split_path(path: str) -> tuple[ObjectKey, str] | None:
    """`<prefix>/namespaces/<ns>/<plural>/<name>[/<subresource>]` → (key, subresource);
    None for anything else (collections, cluster-scoped objects)."""
    parts = path.split("?", 1)[0].split("/")
    try:
        at = parts.index("namespaces")
    except ValueError:
        return None
    rest = parts[at + 1:]
    if len(rest) < 3 or not all(rest[:3]):
        return None
    prefix = "/".join(parts[:at])
    namespace, plural, name = rest[:3]
    return ObjectKey(f"{prefix}/{plural}", namespace, name), "/".join(rest[3:])


def is_newer(incoming: str | None, held: str | None) -> bool:
    """Whether a version replaces the one held (unknown or non-numeric: it does)."""
    if not incoming or not held or not incoming.isdigit() or not held.isdigit():
        return True
    return int(incoming) >= int(held)


def slim(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The object without `metadata.managedFields` (often its largest part; nothing the
    operator decides reads it, and server-side apply keeps it on the server)."""
    meta = obj.get("metadata") or {}
    if "managedFields" not in meta:
        return dict(obj)
    return {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}


def _version(obj: Mapping[str, Any] | None) -> str | None:
    return None if obj is None else (obj.get("metadata") or {}).get("resourceVersion")


class ObjectCache:
    """Objects by key, and which collections (per namespace, or `*`) are synced."""

    ALL = "*"

    def __init__(self) -> None:
        self._objects: dict[ObjectKey, dict[str, Any]] = {}
        self._synced: set[tuple[str, str]] = set()
        self._floors: dict[ObjectKey, str] = {}
        """The version a write through a subresource (`/scale`) made: older copies miss."""

    # -- reads ---------------------------------------------------------------------------

    def covers(self, key: ObjectKey) -> bool:
        return ((key.collection, key.namespace) in self._synced
                or (key.collection, self.ALL) in self._synced)

    def lookup(self, path: str, *, ours_only: bool = False) -> tuple[bool, dict[str, Any] | None]:
        """(hit, a copy of the object or None); a miss means: ask the API server."""
        split = split_path(path)
        if split is None or split[1] or not self.covers(split[0]):
            return False, None
        held = self._objects.get(split[0])
        floor = self._floors.get(split[0])
        if held is not None and floor is not None and _version(held) != floor \
                and not is_newer(_version(held), floor):
            return False, None
        if held is None and not ours_only:
            return False, None
        return True, copy.deepcopy(held)

    def objects(self, collection: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """Copies of the held objects of a collection (of one namespace)."""
        return [copy.deepcopy(o) for k, o in self._objects.items()
                if k.collection == collection and (namespace is None or k.namespace == namespace)]

    # -- what the informers report -------------------------------------------------------

    def replace(self, collection: str, namespace: str | None,
                items: Iterable[Mapping[str, Any]]) -> tuple[list[dict[str, Any]],
                                                          list[dict[str, Any]]]:
        """A fresh list of a collection: hold exactly `items`, mark it synced; returns the
        (changed or new, gone) objects relative to what was held."""
        scope = namespace or self.ALL
        fresh = {ObjectKey(collection, i["metadata"]["namespace"], i["metadata"]["name"]):
                 slim(i) for i in items}
        gone = [o for k, o in list(self._objects.items())
                if k.collection == collection and (namespace is None or k.namespace == namespace)
                and k not in fresh]
        for obj in gone:
            self._objects.pop(self.key_of(collection, obj), None)
        changed = []
        for key, obj in fresh.items():
            held = self._objects.get(key)
            if held is None or _version(held) != _version(obj):
                if held is None or is_newer(_version(obj), _version(held)):
                    self._objects[key] = obj
                    changed.append(obj)
        self._synced.add((collection, scope))
        return changed, gone

    def unsync(self, collection: str, namespace: str | None) -> None:
        """The collection's watch broke: answer nothing from it until it is listed again."""
        self._synced.discard((collection, namespace or self.ALL))

    def apply_event(self, collection: str, kind: str, obj: Mapping[str, Any]
                    ) -> dict[str, Any] | None:
        """A watch event (`ADDED`, `MODIFIED`, `DELETED`); returns the object it replaced
        (None if it was not held), or raises `Stale` if a write already put a newer one."""
        key = self.key_of(collection, obj)
        held = self._objects.get(key)
        if held is not None and not is_newer(_version(obj), _version(held)):
            raise Stale
        floor = self._floors.get(key)
        if floor is not None and is_newer(_version(obj), floor):
            del self._floors[key]
        if kind == "DELETED":
            self._objects.pop(key, None)
        else:
            self._objects[key] = slim(obj)
        return held

    # -- what the operator wrote ---------------------------------------------------------

    def wrote(self, path: str, method: str, answer: Any) -> None:
        """After a write to `path`: hold the object the API server answered with (only ours
        are written, so the watch keeps it current), or drop what is held if the answer is
        not that object (a Scale, a deletion, an error: `method` "DELETE")."""
        split = split_path(path)
        if split is None and method == "POST" and isinstance(answer, Mapping):
            split = self._created(path, answer)  # a create: POST to the collection
        if split is None:
            return
        key, sub = split
        whole = (method in ("PATCH", "PUT", "POST") and sub in ("", "status")
                 and isinstance(answer, Mapping) and answer.get("kind") not in ("Scale", "Status")
                 and (answer.get("metadata") or {}).get("name") == key.name)
        held = self._objects.get(key)
        if whole and self.covers(key):
            if held is None or is_newer(_version(answer), _version(held)):
                self._objects[key] = copy.deepcopy(slim(answer))
        else:
            self._objects.pop(key, None)
            version = _version(answer) if isinstance(answer, Mapping) else None
            if version:
                self._floors[key] = version  # a Scale carries its object's version

    @staticmethod
    def _created(path: str, answer: Mapping[str, Any]) -> tuple[ObjectKey, str] | None:
        meta = answer.get("metadata") or {}
        return split_path(f"{path.split('?', 1)[0]}/{meta.get('name', '')}")

    @staticmethod
    def key_of(collection: str, obj: Mapping[str, Any]) -> ObjectKey:
        meta = obj["metadata"]
        return ObjectKey(collection, meta["namespace"], meta["name"])


class Stale(Exception):
    """A watch event older than the object already held."""
