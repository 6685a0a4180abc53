"""Who may call the agent API: bearer tokens with two scopes, read from a mounted Secret.

- ``work`` reads and submits this occurrence's tasks;
- ``admin`` may also ``POST /shutdown`` (a shared decision: it stops every occurrence).

The tokens are files in one directory (``AGENT_TOKEN_DIR``; the operator mounts the
AgentDeployment's token Secret there, keys ``work`` and ``admin``). They are read again when
a file changes, so a rotated Secret (delete it; the operator makes a new one and the kubelet
updates the volume) takes effect without a restart. Comparison is constant-time
(``hmac.compare_digest``) against every configured token, so the time of a refusal says
nothing about which token came close.

Health, readiness, metrics and the OpenAPI document stay open: the kubelet and Prometheus
call them without credentials, and they reveal no work.

Pure decisions (:func:`required_scope`, :func:`authorize`) are separate from reading the
files (:class:`TokenFiles`) so they are unit-tested without I/O.
"""

from __future__ import annotations

import hmac
import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path


class Scope(StrEnum):
    WORK = "work"
    ADMIN = "admin"


OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json"})
"""Routes anyone may call (kubelet probes, Prometheus, API discovery)."""
ADMIN_ROUTES = frozenset({("POST", "/shutdown")})
"""Routes only the admin token opens."""
MAX_TOKEN_BYTES = 4096


def required_scope(method: str, path: str) -> Scope | None:
    """The scope a request needs; ``None`` for the open routes."""
    if path in OPEN_PATHS:
        return None
    if (method.upper(), path) in ADMIN_ROUTES:
        return Scope.ADMIN
    return Scope.WORK


@dataclass(frozen=True)
class Verdict:
    """The outcome of checking one request: ``status`` 0 means allowed."""

    status: int
    """0 (allowed), 401 (no or unknown credentials) or 403 (a valid token lacking scope)."""
    principal: str = ""
    """The scope of the token presented (``work``/``admin``) or ``anonymous``: who asked."""
    message: str = ""


ALLOWED_ANONYMOUS = Verdict(0, "anonymous")


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else ``None``."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > MAX_TOKEN_BYTES:
        return None
    return token


def _utf8(token: str | None) -> bytes | None:
    """The token's bytes; None when it cannot be UTF-8 (the server decodes header bytes that
    are not UTF-8 into lone surrogates): no configured token can match it, so it is a 401."""
    if token is None:
        return None
    try:
        return token.encode()
    except UnicodeEncodeError:
        return None


def authorize(tokens: dict[Scope, str], header: str | None, needed: Scope | None) -> Verdict:
    """Check a request's ``Authorization`` header against the configured ``tokens``.

    With no token configured every request is allowed: the runtime only starts like that on
    a loopback address (see :func:`unauthenticated_bind_problem`).
    """
    if needed is None or not tokens:
        return ALLOWED_ANONYMOUS
    presented = bearer_token(header)
    matched: Scope | None = None
    given = _utf8(presented)
    if given is not None:
        for scope, expected in tokens.items():
            # every token is compared, whatever matched before: constant work per request
            if hmac.compare_digest(given, expected.encode()):
                matched = scope
    if matched is None:
        return Verdict(401, message="a valid bearer token is required "
                       "(Authorization: Bearer <token>)")
    if needed is Scope.ADMIN and matched is not Scope.ADMIN:
        return Verdict(403, matched.value, "this token may not do that: the admin token is "
                       "required")
    return Verdict(0, matched.value)


def is_loopback(host: str) -> bool:
    if host in {"localhost", "ip6-localhost"}:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def unauthenticated_bind_problem(host: str, tokens: dict[Scope, str]) -> str | None:
    """Why the runtime must not start (listening beyond this host with no token), or None."""
    if tokens or is_loopback(host):
        return None
    return (f"no API token configured and listening on {host}: anyone who reaches the port "
            "could read and submit work; set AGENT_TOKEN_DIR to a directory holding a 'work' "
            "(and an 'admin') token file, or bind to 127.0.0.1 (AGENT_HOST)")


class TokenProblem(ValueError):
    """The token directory is unusable; the message is one line fit for a CLI error."""


@dataclass
class TokenFiles:
    """The tokens in ``directory``, re-read when a file there changes (at most once a second)."""

    directory: Path | None
    on_error: Callable[[TokenProblem], None] = lambda problem: None
    """Told when an update of the files cannot be read (the last good tokens stay in use)."""
    recheck_seconds: float = 1.0
    _tokens: dict[Scope, str] = field(default_factory=dict)
    _stamp: tuple[tuple[str, float, int], ...] = ()
    _checked: float = float("-inf")

    def load(self) -> dict[Scope, str]:
        """Read the tokens now; :class:`TokenProblem` if the directory holds none."""
        self._checked = time.monotonic()
        if self.directory is None:
            return {}
        tokens: dict[Scope, str] = {}
        stamp: list[tuple[str, float, int]] = []
        for scope in Scope:
            path = self.directory / scope.value
            try:
                info = path.stat()
                raw = path.read_bytes()[:MAX_TOKEN_BYTES + 1]
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise TokenProblem(f"cannot read token file {path}: {exc.strerror}") from None
            token = raw.decode("utf-8", "replace").strip()
            if len(token) < 16 or len(raw) > MAX_TOKEN_BYTES:
                raise TokenProblem(f"token file {path} must hold 16 to {MAX_TOKEN_BYTES} "
                                   "characters")
            tokens[scope] = token
            stamp.append((scope.value, info.st_mtime, info.st_ino))
        if not tokens:
            raise TokenProblem(f"no token in {self.directory}: expected a 'work' and/or an "
                               "'admin' file")
        self._tokens, self._stamp = tokens, tuple(stamp)
        return tokens

    def current(self) -> dict[Scope, str]:
        """The tokens, re-read if the files changed; a broken update keeps the last good set."""
        if self.directory is None:
            return {}
        now = time.monotonic()
        if now - self._checked < self.recheck_seconds:
            return self._tokens
        self._checked = now
        if self._files_stamp() != self._stamp:
            try:
                self.load()
            except TokenProblem as problem:  # mid-update or broken: keep the last good set
                self.on_error(problem)
        return self._tokens

    def _files_stamp(self) -> tuple[tuple[str, float, int], ...]:
        assert self.directory is not None
        stamp = []
        for scope in Scope:
            try:
                info = (self.directory / scope.value).stat()
            except OSError:
                continue
            stamp.append((scope.value, info.st_mtime, info.st_ino))
        return tuple(stamp)
