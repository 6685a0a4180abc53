"""List+watch streams that keep the object cache current and wake the workers on change.

One `Informer` per watched kind and scope (one namespace, or the cluster): it lists the
collection once (label-selected on the server: only objects the operator made), then
watches from that list's resource version with bookmarks, resuming from the last version
it saw whenever the server ends the stream (`timeoutSeconds`), and listing again only if
the server says that version is gone (410). This is client-go's informer, in one thread
per stream (the official client blocks), handing every event to the event loop, which alone
touches the cache (objectcache.py) and calls `on_event`.

Cost at idle: one open watch per kind and scope, renewed every `WATCH_SECONDS`: a handful of
requests every five minutes for the whole operator, however many AgentDeployments it runs.
A stream that fails is logged, counted (`informer_errors_total{reason="error"}`), marked
unsynced (reads of its kind go to the API server meanwhile) and listed again after a
backoff.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..model.objectcache import Stale
from .client import ApiError, Kube, resource_of

log = logging.getLogger(__name__)

WATCH_SECONDS = 300
"""How long the server keeps a watch open before the informer renews it (jittered)."""
BACKOFF_SECONDS = (1.0, 30.0)
LIST_PAGE = 500

OnEvent = Callable[[str, dict[str, Any], "dict[str, Any] | None"], None]
"""(event type, object, the copy it replaced or None); called on the event loop."""


@dataclass(frozen=True)
class Watched:
    """A kind the operator watches: its collection path prefix, plural and selector."""

    prefix: str
    plural: str
    label_selector: str | None = None
    cached: bool = True
    """False: only the events matter (agent pods: thousands, never read): the informer
    remembers their keys and versions, not the objects, and `Kube.get` never answers
    from it."""

    @property
    def collection(self) -> str:
        return f"{self.prefix}/{self.plural}"

    def path(self, namespace: str | None) -> str:
        return (f"{self.prefix}/namespaces/{namespace}/{self.plural}" if namespace
                else self.collection)


class _Expired(Exception):
    """The server no longer has the version the watch resumes from (410 Gone)."""


class Informer:
    def __init__(self, kube: Kube, watched: Watched, namespace: str | None,
                 on_event: OnEvent, loop: asyncio.AbstractEventLoop) -> None:
        self.kube, self.watched, self.namespace = kube, watched, namespace
        self.on_event, self.loop = on_event, loop
        self.synced = asyncio.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"informer-{watched.plural}-{namespace or 'all'}", daemon=True)
        self._resource = resource_of(watched.path(namespace or "x"))
        self._seen: dict[tuple[str, str], tuple[str, dict[str, str]]] = {}
        """Of an uncached kind: each object's version and labels (for relists)."""

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop at the next event or stream end (the thread is a daemon: exit never waits)."""
        self._stopping.set()

    # -- the thread ----------------------------------------------------------------------

    def _run(self) -> None:
        backoff = BACKOFF_SECONDS[0]
        version: str | None = None
        while not self._stopping.is_set():
            try:
                if version is None:
                    version = self._list()
                version = self._watch(version)
                backoff = BACKOFF_SECONDS[0]
            except _Expired:
                version = None
                self.kube.metrics.informer_error(self._resource, "expired")
            except Exception as e:
                if self._stopping.is_set():
                    return
                log.warning("watch of %s (%s) failed, listing again in %.0f s: %s: %s",
                            self.watched.plural, self.namespace or "all namespaces", backoff,
                            type(e).__name__, e)
                self.kube.metrics.informer_error(self._resource, "error")
                self._call(self.kube.cache.unsync, self.watched.collection, self.namespace)
                version = None
                self._stopping.wait(backoff)
                backoff = min(BACKOFF_SECONDS[1], backoff * 2)

    def _query(self) -> dict[str, str]:
        query = {}
        if self.watched.label_selector:
            query["labelSelector"] = self.watched.label_selector
        return query

    def _list(self) -> str:
        items: list[dict[str, Any]] = []
        query = {**self._query(), "limit": str(LIST_PAGE)}
        while True:
            page = self.kube.list_now(self.watched.path(self.namespace), query)
            items.extend(page.get("items") or [])
            meta = page.get("metadata") or {}
            if not meta.get("continue"):
                self._call(self._replace, items)
                return str(meta.get("resourceVersion") or "")
            query = {**query, "continue": meta["continue"]}

    def _watch(self, version: str) -> str:
        timeout = int(WATCH_SECONDS * random.uniform(0.9, 1.0))
        query = {**self._query(), "resourceVersion": version, "allowWatchBookmarks": "true",
                 "timeoutSeconds": str(timeout)}
        try:
            for line in self.kube.watch_lines(self.watched.path(self.namespace), query,
                                              read_timeout=timeout + 30):
                if self._stopping.is_set():
                    break
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise _Expired
                    raise ApiError(int(obj.get("code") or 500), obj.get("reason") or "",
                                   json.dumps(obj))
                version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    self._call(self._apply, kind, obj)
        except ApiError as e:
            if e.status == 410:
                raise _Expired from None
            raise
        return version

    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        self.loop.call_soon_threadsafe(fn, *args)

    # -- on the loop ---------------------------------------------------------------------

    def _replace(self, items: list[dict[str, Any]]) -> None:
        if self.watched.cached:
            changed, gone = self.kube.cache.replace(self.watched.collection, self.namespace,
                                                    items)
        else:
            changed, gone = self._remember(items)
        self.synced.set()
        for obj in changed:
            self._deliver("ADDED", obj, None)
        for obj in gone:
            self._deliver("DELETED", obj, obj)

    def _apply(self, kind: str, obj: dict[str, Any]) -> None:
        if not self.watched.cached:
            meta = obj.get("metadata") or {}
            key = (meta.get("namespace", ""), meta.get("name", ""))
            if kind == "DELETED":
                self._seen.pop(key, None)
            else:
                self._seen[key] = (meta.get("resourceVersion", ""), meta.get("labels") or {})
            self._deliver(kind, obj, None)
            return
        try:
            old = self.kube.cache.apply_event(self.watched.collection, kind, obj)
        except Stale:
            return  # a write of ours already put a newer one (and woke whoever needed it)
        self._deliver(kind, obj, old)

    def _remember(self, items: list[dict[str, Any]]
                  ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """An uncached kind's relist: (new or changed, gone), from what was seen."""
        fresh = {(i["metadata"]["namespace"], i["metadata"]["name"]): i for i in items}
        gone = [{"metadata": {"namespace": ns, "name": name, "labels": labels}}
                for (ns, name), (_, labels) in self._seen.items() if (ns, name) not in fresh]
        changed = [i for key, i in fresh.items()
                   if self._seen.get(key, ("", {}))[0] != i["metadata"].get("resourceVersion")]
        self._seen = {key: (i["metadata"].get("resourceVersion", ""),
                            i["metadata"].get("labels") or {}) for key, i in fresh.items()}
        return changed, gone

    def _deliver(self, kind: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        try:
            self.on_event(kind, obj, old)
        except Exception:
            log.exception("handling a %s event of %s failed", kind, self.watched.plural)
            self.kube.metrics.informer_error(self._resource, "handler")


def start_informers(kube: Kube, kinds: Mapping[Watched, OnEvent],
                    namespaces: tuple[str, ...]) -> list[Informer]:
    """An informer per kind and namespace (cluster-wide if `namespaces` is empty)."""
    loop = asyncio.get_running_loop()
    informers = [Informer(kube, watched, namespace, on_event, loop)
                 for watched, on_event in kinds.items()
                 for namespace in (namespaces or (None,))]
    for informer in informers:
        informer.start()
    return informers
