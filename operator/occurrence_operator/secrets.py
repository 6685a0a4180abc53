"""The database URL, read from the AgentDeployment's Secret (never logged: use `redact`)."""

from __future__ import annotations

import base64
import binascii

from occurrence_store.errors import InvalidDatabaseURL
from occurrence_store.redact import redact_url
from occurrence_store.urls import parse_database_url

from .kube import Kube, object_path
from .pod_dns import qualify_service_hosts
from .spec import SecretKeyRef


class SecretProblem(Exception):
    """The Secret cannot give a database URL; `reason` is a condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


async def database_url(kube: Kube, namespace: str, ref: SecretKeyRef) -> str:
    """The Secret's URL as the operator must use it to reach what the namespace's pods reach
    (a bare Service name qualified with the namespace: see `pod_dns`)."""
    secret = await kube.get(object_path("v1", "Secret", namespace, ref.name))
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
    return qualify_service_hosts(url, namespace)


def redact(url: str) -> str:
    """The URL fit for a log line, an event or a condition, whatever its password holds."""
    return redact_url(url)
