"""Thin async access to the Kubernetes API: get, list, create, server-side apply, patch.

One generic REST helper over the official ``kubernetes`` client (its blocking calls run in
a worker thread), plus the paths of the kinds the operator touches. Every write goes
through `_write`, which counts it in the metrics: "a reconcile with nothing to do writes
nothing" is checked against that counter.

`needs_apply` decides whether a rendered manifest differs from the live object, so a no-op
reconcile does not even send an (idempotent) apply.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator, Mapping
from typing import Any, cast
from urllib.parse import quote

from ..model import wellknown
from ..model.objectcache import ObjectCache
from . import may_act
from .metrics import OperatorMetrics

FIELD_MANAGER = wellknown.MANAGER

APPLY_PATCH = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"


class ApiError(Exception):
    """A non-2xx answer of the API server."""

    def __init__(self, status: int, reason: str, body: str = "") -> None:
        self.status = status
        self.reason = reason
        self.body = body
        message = reason
        try:
            message = json.loads(body).get("message") or reason
        except (ValueError, AttributeError):
            pass
        self.message = message
        super().__init__(f"{status} {message}")


_KINDS: dict[tuple[str, str], tuple[str, str]] = {
    # (apiVersion, kind) -> (path prefix, plural)
    ("apps/v1", "StatefulSet"): ("/apis/apps/v1", "statefulsets"),
    ("batch/v1", "Job"): ("/apis/batch/v1", "jobs"),
    ("v1", "Service"): ("/api/v1", "services"),
    ("policy/v1", "PodDisruptionBudget"): ("/apis/policy/v1", "poddisruptionbudgets"),
    ("v1", "Pod"): ("/api/v1", "pods"),
    ("v1", "Secret"): ("/api/v1", "secrets"),
    ("networking.k8s.io/v1", "NetworkPolicy"): ("/apis/networking.k8s.io/v1", "networkpolicies"),
    ("v1", "Event"): ("/api/v1", "events"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"):
        ("/apis/autoscaling/v2", "horizontalpodautoscalers"),
    ("keda.sh/v1alpha1", "ScaledObject"): ("/apis/keda.sh/v1alpha1", "scaledobjects"),
    (wellknown.API_VERSION, wellknown.KIND): (f"/apis/{wellknown.API_VERSION}", wellknown.PLURAL),
}


def collection_path(api_version: str, kind: str, namespace: str) -> str:
    prefix, plural = _KINDS[(api_version, kind)]
    return f"{prefix}/namespaces/{quote(namespace)}/{plural}"


def object_path(api_version: str, kind: str, namespace: str, name: str) -> str:
    return f"{collection_path(api_version, kind, namespace)}/{quote(name)}"


def manifest_path(manifest: Mapping[str, Any]) -> str:
    meta = manifest["metadata"]
    return object_path(manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"])


def resource_of(path: str) -> str:
    """The plural (and subresource) of a path, for metric labels."""
    parts = [p for p in path.split("?")[0].split("/") if p]
    if "namespaces" in parts:
        rest = parts[parts.index("namespaces") + 2 :]
        if len(rest) >= 3:
            return f"{rest[0]}/{rest[2]}"
        return rest[0] if rest else "namespaces"
    return parts[-1] if parts else ""


def is_subset(desired: Any, live: Any) -> bool:
    """True if every field set in `desired` has the same value in `live`.

    Fields the API server defaults (present only in `live`) are ignored, and so are empty
    values it omits (`false`, `""`, `[]`, `{}` absent from `live`); lists must have
    the same length and match element by element. This is what "the live object already
    is what we would apply" means for the manifests the operator renders.
    """
    if isinstance(desired, Mapping):
        if not isinstance(live, Mapping):
            return False
        return all(is_subset(v, live[k]) if k in live else _is_empty(v) for k, v in desired.items())
    if isinstance(desired, list):
        if not isinstance(live, list) or len(desired) != len(live):
            return False
        return all(is_subset(d, v) for d, v in zip(desired, live, strict=True))
    if isinstance(desired, bool) or isinstance(live, bool):
        return desired is live
    if isinstance(desired, int | float) and isinstance(live, int | float):
        return desired == live
    return desired == live or str(desired) == str(live)


def _is_empty(value: Any) -> bool:
    """Values the API server omits when serializing (`omitempty`): false, "", [], {}."""
    return value is None or value is False or value in ("", [], {})


def needs_apply(desired: Mapping[str, Any], live: Mapping[str, Any] | None) -> bool:
    if live is None:
        return True
    want_meta = desired.get("metadata", {})
    live_meta = live.get("metadata", {})
    for key in ("labels", "annotations"):
        if not is_subset(want_meta.get(key) or {}, live_meta.get(key) or {}):
            return True
    if not is_subset(
        want_meta.get("ownerReferences") or [], live_meta.get("ownerReferences") or []
    ):
        return True
    return not is_subset(desired.get("spec") or {}, live.get("spec") or {})


def rejected_as_invalid(error: ApiError) -> bool:
    """Did the API server refuse an object because of what the spec put in it?

    400/422 are validation failures; a server-side apply of a malformed quantity fails to
    decode and comes back as a 500 whose message says why.
    """
    if error.status in (400, 422):
        return True
    return error.status == 500 and any(
        hint in error.message for hint in ("must match the regular expression", "unable to parse",
                                           "failed to create typed patch object"))


class Kube:
    """The API calls the operator makes. Thread-offloaded; safe to share."""

    def __init__(self, api_client: Any, metrics: OperatorMetrics | None = None,
                 cache: ObjectCache | None = None) -> None:
        self._client = api_client
        self.metrics = metrics or OperatorMetrics()
        self.cache = cache or ObjectCache()
        """What the informers keep current (empty without them: every read is a GET)."""
        self._recent: dict[str, tuple[float, dict[str, Any]]] = {}
        """Objects read with `max_age` (kinds nobody watches: the database Secret)."""

    @classmethod
    def from_environment(cls, metrics: OperatorMetrics | None = None) -> Kube:
        """In-cluster credentials if running in a pod, else the kubeconfig ($KUBECONFIG)."""
        from kubernetes import client, config

        configuration = client.Configuration()
        try:
            config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=configuration)
        except config.ConfigException:
            config.load_kube_config(  # type: ignore[no-untyped-call]
                client_configuration=configuration)
        return cls(client.ApiClient(configuration), metrics, ObjectCache())

    @classmethod
    def from_kubeconfig(cls, path: str | None = None, context: str | None = None) -> Kube:
        """A user's kubeconfig (`--kubeconfig`, else $KUBECONFIG, else ~/.kube/config) and
        context (the plugin, from a laptop)."""
        from kubernetes import client, config

        configuration = client.Configuration()
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=path, context=context, client_configuration=configuration)
        return cls(client.ApiClient(configuration))

    @property
    def api_client(self) -> Any:
        """The official client's ApiClient (for what it does that a JSON call cannot: the
        plugin's port-forward)."""
        return self._client

    def close(self) -> None:
        self._client.close()

    # -- raw -----------------------------------------------------------------------------

    def _send(self, method: str, path: str, query: Mapping[str, str] | None, body: Any,
              content_type: str | None, timeout: Any) -> Any:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        method_, url, headers, body, _post = self._client.param_serialize(
            method,
            path,
            query_params=list((query or {}).items()),
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        return self._client.call_api(
            method_, url, header_params=headers, body=body, _request_timeout=timeout
        )

    def _call(
        self,
        method: str,
        path: str,
        query: Mapping[str, str] | None,
        body: Any,
        content_type: str | None,
    ) -> Any:
        response = self._send(method, path, query, body, content_type, 30)
        data = response.read()
        if not 200 <= response.status < 300:
            text = data.decode(errors="replace") if isinstance(data, bytes) else str(data or "")
            raise ApiError(response.status, response.reason or "", text)
        return json.loads(data) if data else None

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str | None = None,
    ) -> Any:
        return await asyncio.to_thread(self._call, method, path, query, body, content_type)

    async def _write(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        may_act.check()  # a paused (peering) or stopping replica writes nothing
        self.metrics.api_write(method, resource_of(path))
        self.forget(path)
        try:
            answer = cast(dict[str, Any], await self.request(method, path, **kwargs))
        except ApiError:
            self.cache.wrote(path, "DELETE", None)  # unsure what it holds now: read it again
            raise
        self.cache.wrote(path, method, answer)
        return answer

    # -- streams (the informers' threads) ------------------------------------------------

    def list_now(self, path: str, query: Mapping[str, str]) -> dict[str, Any]:
        """A blocking LIST (called from an informer's thread)."""
        return cast(dict[str, Any], self._call("GET", path, query, None, None))

    def watch_lines(self, path: str, query: Mapping[str, str],
                    read_timeout: float) -> Iterator[bytes]:
        """A blocking WATCH: its events, one JSON line each, until the server ends it."""
        response = self._send("GET", path, {**query, "watch": "true"}, None, None,
                              (10.0, read_timeout))
        raw = response.response
        try:
            if not 200 <= response.status < 300:
                data = response.read()
                raise ApiError(response.status, response.reason or "",
                               data.decode(errors="replace") if isinstance(data, bytes) else "")
            pending = b""
            for chunk in raw.stream(amt=None, decode_content=False):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                yield from (line for line in lines if line.strip())
            if pending.strip():
                yield pending
        finally:
            raw.release_conn()

    # -- reads ---------------------------------------------------------------------------

    async def get(self, path: str, *, ours_only: bool = False,
                  max_age: float | None = None) -> dict[str, Any] | None:
        """The object, or None if it does not exist.

        From the informers' cache when it holds the object (`objectcache`); with
        `ours_only`, also "None" when the cache shows no object with our labels there.
        `max_age`: a kind nobody watches may be answered by a read at most that old.
        """
        hit, held = self.cache.lookup(path, ours_only=ours_only)
        if not hit and max_age is not None:
            recent = self._recent.get(path)
            if recent is not None and time.monotonic() - recent[0] < max_age:
                hit, held = True, json.loads(json.dumps(recent[1]))
        self.metrics.api_read(resource_of(path), "cache" if hit else "api")
        if hit:
            return held
        try:
            answer = cast("dict[str, Any] | None", await self.request("GET", path))
        except ApiError as e:
            if e.status == 404:
                self._recent.pop(path, None)
                return None
            raise
        if max_age is not None and answer is not None:
            self._recent[path] = (time.monotonic(), answer)
        return answer  # never into the cache: what the watch does not select, it won't update

    def forget(self, path: str) -> None:
        """Read `path` from the API server next time (a `max_age` copy may be outdated)."""
        self._recent.pop(path, None)

    async def list(self, path: str, label_selector: str | None = None) -> list[dict[str, Any]]:
        query = {"labelSelector": label_selector} if label_selector else None
        result = await self.request("GET", path, query=query)
        return list((result or {}).get("items") or [])

    # -- writes --------------------------------------------------------------------------

    async def create(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self._write(
            "POST", path, body=dict(body), query={"fieldManager": FIELD_MANAGER}
        )

    async def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply as field manager `occurrence-operator` (force: we own them)."""
        return await self._write(
            "PATCH",
            manifest_path(manifest),
            body=dict(manifest),
            content_type=APPLY_PATCH,
            query={"fieldManager": FIELD_MANAGER, "force": "true"},
        )

    async def merge_patch(self, path: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        return await self._write(
            "PATCH",
            path,
            body=dict(patch),
            content_type=MERGE_PATCH,
            query={"fieldManager": FIELD_MANAGER},
        )

    async def delete(self, path: str, *, propagation: str | None = None) -> None:
        """Delete (gone already is fine). `propagation`: ``Background`` to have the garbage
        collector remove what the object owns (a Job's pods; the API's default for a Job
        leaves them orphaned)."""
        query = {"propagationPolicy": propagation} if propagation else None
        try:
            await self._write("DELETE", path, query=query)
        except ApiError as e:
            if e.status != 404:
                raise
