"""Database hosts as the AgentDeployment's pods see them.

A URL in a Secret is written for the pods of its namespace: ``postgresql://u:p@postgres/db``
means the Service ``postgres`` of *that* namespace (the pod's DNS search path adds it). The
operator runs in a namespace of its own, where the same name resolves to nothing or, worse,
to another namespace's Service of that name. So before the operator connects, a single-label
host name is qualified with the AgentDeployment's namespace (``postgres.agents.svc``); names
with a dot, IP addresses and ``localhost`` are left alone. Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit, urlunsplit


def _qualify(host: str, namespace: str) -> str:
    if not host or "." in host or host.lower() == "localhost" or host.startswith("["):
        return host
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return f"{host}.{namespace}.svc"
    return host


def _qualify_hostport(hostport: str, namespace: str) -> str:
    if hostport.startswith("["):  # [IPv6]:port
        return hostport
    host, sep, port = hostport.partition(":")
    return f"{_qualify(host, namespace)}{sep}{port}"


def qualify_service_hosts(url: str, namespace: str) -> str:
    """``url`` with each single-label PostgreSQL host qualified as ``HOST.NAMESPACE.svc``.

    Only the host part of the authority changes (user, password, port, path and query stay
    byte for byte). SQLite URLs and hosts given as ``?host=`` are returned unchanged.
    """
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("postgresql", "postgres") or not parts.netloc:
        return url
    userinfo, at, hosts = parts.netloc.rpartition("@")
    qualified = ",".join(_qualify_hostport(h, namespace) for h in hosts.split(","))
    if qualified == hosts:
        return url
    return urlunsplit(parts._replace(netloc=f"{userinfo}{at}{qualified}"))
