"""The database URL, read from the AgentDeployment's Secret (never logged: use `redact`)."""

from __future__ import annotations

import base64
import binascii

from occurrence_store.errors import InvalidDatabaseURL
from occurrence_store.redact import redact_url
from occurrence_store.urls import parse_database_url

from ..model import naming
from ..model.never_adopt import check_owned
from ..model.owner import Owner
from ..model.spec import SecretKeyRef
from ..render.agent_token import build_token_secret, new_tokens
from ..render.pod_dns import qualify_service_hosts
from .client import Kube, collection_path, object_path


class SecretProblem(Exception):
    """The Secret cannot give a database URL; `reason` is a condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


def database_secret_path(namespace: str, ref: SecretKeyRef) -> str:
    return object_path("v1", "Secret", namespace, ref.name)


async def database_url(kube: Kube, namespace: str, ref: SecretKeyRef,
                       max_age: float | None = None, *, allow_sqlite: bool = True) -> str:
    """The Secret's URL as the operator must use it to reach what the namespace's pods reach
    (a bare Service name qualified with the namespace: see `pod_dns`).

    `max_age`: a read of the Secret at most that old will do (Secrets are read by name, never
    watched or listed); the pass forgets it when the database fails, so a changed URL is
    read at once then, and otherwise within `max_age`.

    `allow_sqlite` False (an operator running in a pod): a `sqlite:///` URL would name a
    file in the operator's own pod — not what the agents use, and a tenant could fill the
    operator's disk with it — so it is refused."""
    secret = await kube.get(database_secret_path(namespace, ref), max_age=max_age)
    if secret is None:
        raise SecretProblem(
            "SecretNotFound", f"Secret {namespace}/{ref.name} (spec.database.secretRef) not found"
        )
    data = secret.get("data") or {}
    if ref.key not in data:
        raise SecretProblem(
            "SecretKeyMissing",
            f"Secret {namespace}/{ref.name} has no key {ref.key!r} (spec.database.secretRef.key)",
        )
    try:
        url = base64.b64decode(data[ref.key], validate=True).decode().strip()
    except (binascii.Error, UnicodeDecodeError):
        raise SecretProblem(
            "InvalidDatabaseURL", f"Secret {namespace}/{ref.name} key {ref.key!r} is not text"
        ) from None
    if not url:
        raise SecretProblem("SecretKeyMissing", f"Secret {namespace}/{ref.name} key is empty")
    try:
        # A bare value would be a SQLite path for the CLI; in a cluster it is almost surely a
        # password pasted alone, and a per-pod private file would silently split the data.
        if "://" not in url:
            raise InvalidDatabaseURL("not a URL")
        parse_database_url(url)
    except InvalidDatabaseURL:
        raise SecretProblem(
            "InvalidDatabaseURL",
            f"Secret {namespace}/{ref.name} key {ref.key!r} does not hold a database URL",
        ) from None
    if not allow_sqlite and url.startswith("sqlite:"):
        raise SecretProblem(
            "InvalidDatabaseURL",
            f"Secret {namespace}/{ref.name} key {ref.key!r} holds a sqlite:/// URL: in a "
            "cluster each pod would get its own file, so an AgentDeployment needs PostgreSQL")
    return qualify_service_hosts(url, namespace)


async def ensure_token_secret(kube: Kube, owner: Owner, max_age: float | None = None) -> bool:
    """Create the agent API's token Secret if it is missing; ``True`` if created now.

    Never patched: a user rotates the tokens by deleting the Secret. One with the name that
    this AgentDeployment does not own is a :class:`NameConflict` (never adopted, never read).
    `max_age`: how old a read of it may be (it is not watched): a deleted one is made again
    within that time.
    """
    name = naming.token_secret_name(owner.name)
    path = object_path("v1", "Secret", owner.namespace, name)
    live = await kube.get(path, max_age=max_age)
    check_owned(live, owner.uid)
    if live is not None:
        return False
    await kube.create(collection_path("v1", "Secret", owner.namespace),
                      build_token_secret(owner, new_tokens()))
    return True


def redact(url: str) -> str:
    """The URL fit for a log line, an event or a condition, whatever its password holds."""
    return redact_url(url)
