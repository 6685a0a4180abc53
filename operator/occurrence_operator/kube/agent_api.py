"""An agent's own HTTP API from a laptop, through the API server: what `kubectl occurrence
tasks` and `task` read.

One port-forward to one agent pod (the user's RBAC: ``pods/portforward``), one HTTP/1.1
request over it carrying the AgentDeployment's ``work`` token (read from its token Secret
with the user's RBAC: ``secrets get``), bounded in time and size. The database URL never
leaves the cluster, and every answer is scoped by the agent to its own occurrence.

Why not the API server's pod proxy (``pods/NAME:PORT/proxy``)? It drops the request's
``Authorization`` header (it carries the user's own credentials to the API server), so the
agent would see no token.

Nothing is taken by name: the token Secret must be the AgentDeployment's (its controller
ownerReference, :func:`never_adopt.owned_by`) and the pod must carry the AgentDeployment's
labels and be owned by its StatefulSet, or no token is sent.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from ..model import naming
from ..model.never_adopt import owned_by
from .client import ApiError, Kube, object_path

TIMEOUT_SECONDS = 15.0
"""The longest one request to one agent may take, port-forward included."""
MAX_RESPONSE_BYTES = 8 << 20
"""The largest answer read from an agent (a page of 1,000 tasks is well under it)."""


class AgentApiError(Exception):
    """A one-line reason one agent could not be asked."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any


def token_of(secret: Mapping[str, Any], agd: Mapping[str, Any]) -> str:
    """The ``work`` token of the AgentDeployment's token Secret, if it is that Secret."""
    meta = agd.get("metadata") or {}
    if not owned_by(secret, meta.get("uid", "")):
        raise AgentApiError(
            f"Secret {naming.token_secret_name(meta.get('name', ''))} is not owned by the "
            "AgentDeployment: no token is sent to anything")
    raw = (secret.get("data") or {}).get("work")
    if not raw:
        raise AgentApiError("the token Secret has no work token yet")
    try:
        return base64.b64decode(raw, validate=True).decode().strip()
    except ValueError as e:
        raise AgentApiError(f"the token Secret's work token is not base64 text: {e}") from None


def agent_pod_ok(pod: Mapping[str, Any], agd_name: str, sts_uid: str) -> str | None:
    """Why the token must not go to `pod` (None: it is an agent pod of this
    AgentDeployment, owned by its StatefulSet, running)."""
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    if any(labels.get(k) != v for k, v in naming.selector_labels(agd_name).items()):
        return "not one of its agent pods"
    if not owned_by(pod, sts_uid):
        return "not owned by its StatefulSet"
    if meta.get("deletionTimestamp"):
        return "terminating"
    if (pod.get("status") or {}).get("phase") != "Running":
        return f"not running ({(pod.get('status') or {}).get('phase') or 'no phase'})"
    return None


def request_over(sock: Any, method: str, path: str, token: str, timeout: float) -> Answer:
    """One HTTP/1.1 request over an open byte stream (a port-forward's socket)."""
    conn = http.client.HTTPConnection("localhost", timeout=timeout)
    conn.sock = sock
    try:
        conn.request(method, path, headers={"Authorization": f"Bearer {token}",
                                            "Accept": "application/json",
                                            "Connection": "close"})
        response = conn.getresponse()
        data = response.read(MAX_RESPONSE_BYTES + 1)
    except (OSError, http.client.HTTPException) as e:
        raise AgentApiError(f"{type(e).__name__}: {e or 'no answer'}") from None
    finally:
        conn.close()
    if len(data) > MAX_RESPONSE_BYTES:
        raise AgentApiError(f"answer over {MAX_RESPONSE_BYTES} bytes")
    try:
        body = json.loads(data) if data else None
    except ValueError:
        body = data[:200].decode(errors="replace")
    return Answer(response.status, body)


def refusal(text: str) -> str:
    """The API server's refusal of a port-forward, on one line: the websocket client reports
    it as ``Handshake status 500 ... -+-+- {headers} -+-+- {Status body}``; the Status's
    message is what says why (``no preferred addresses found``: the pod's node has no
    kubelet address to forward to)."""
    parts = text.split("-+-+-")
    status = parts[0].strip().removeprefix("Handshake status ").strip()
    try:
        message = json.loads(parts[-1].strip()).get("message") if len(parts) > 1 else None
    except (ValueError, AttributeError):
        message = None
    return (f"{status}: {message}" if message else " ".join(text.split()))[:300]


def path_of(route: str, query: Mapping[str, Any] | None = None) -> str:
    """`route` with its query, every value encoded (task ids come from the user)."""
    params = {k: v for k, v in (query or {}).items() if v is not None}
    return route + (f"?{urlencode(params)}" if params else "")


def task_path(task_id: str, *, thoughts: bool = False) -> str:
    return f"/tasks/{quote(task_id, safe='')}" + ("/thoughts" if thoughts else "")


class AgentApi:
    """Ask the agents of one AgentDeployment, one pod at a time."""

    def __init__(self, kube: Kube, namespace: str, port: int, token: str,
                 timeout: float = TIMEOUT_SECONDS) -> None:
        self.kube, self.namespace, self.port, self.token = kube, namespace, port, token
        self.timeout = timeout

    async def get(self, pod: str, path: str) -> Answer:
        return await asyncio.wait_for(asyncio.to_thread(self._get, pod, path),
                                      self.timeout + 5)

    def _get(self, pod: str, path: str) -> Answer:
        import websocket
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException
        from kubernetes.stream import portforward

        # the client's websocket connect takes no timeout of its own: bound it (the plugin is
        # one short process; nothing else here opens websockets)
        websocket.setdefaulttimeout(self.timeout)
        core = client.CoreV1Api(self.kube.api_client)
        try:
            forward = portforward(core.connect_get_namespaced_pod_portforward, pod,
                                  self.namespace, ports=str(self.port))
        except ApiException as e:
            raise AgentApiError(f"port-forward to {pod} refused: "
                                f"{refusal(str(e.reason or e))}") from None
        except (OSError, ValueError, websocket.WebSocketException) as e:
            raise AgentApiError(f"port-forward to {pod}: {type(e).__name__}: {e}") from None
        try:
            sock = forward.socket(self.port)
            sock.settimeout(self.timeout)
            answer = request_over(sock, "GET", path, self.token, self.timeout)
            problem = forward.error(self.port)
            if problem:
                raise AgentApiError(f"port-forward to {pod}: {problem.strip()}")
            return answer
        except TimeoutError:
            raise AgentApiError(f"{pod} did not answer within {self.timeout:g}s") from None
        finally:
            forward.close()


async def read_token(kube: Kube, namespace: str, agd: Mapping[str, Any]) -> str:
    name = (agd.get("metadata") or {}).get("name", "")
    secret_name = naming.token_secret_name(name)
    try:
        secret = await kube.get(object_path("v1", "Secret", namespace, secret_name))
    except ApiError as e:
        raise AgentApiError(f"cannot read Secret {namespace}/{secret_name} ({e.status}): "
                            f"{e.message}") from None
    if secret is None:
        raise AgentApiError(f"Secret {namespace}/{secret_name} not found (the operator "
                            "creates it with the AgentDeployment)")
    return token_of(secret, agd)
