"""Database URLs: which backend, and where. The embedded SQLite file is the default."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from occurrence_store.errors import InvalidDatabaseURL
from occurrence_store.redact import redact_url

Dialect = Literal["postgresql", "sqlite"]


def default_sqlite_path() -> Path:
    """Where the embedded database lives when no URL is given.

    ``$OCCURRENCE_DATA_DIR/occurrence.db`` if set, else the user's data directory, so that
    several processes on one host find the same file without configuration.
    """
    base = os.environ.get("OCCURRENCE_DATA_DIR")
    if base:
        return Path(base) / "occurrence.db"
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "occurrence-operator" / "occurrence.db"


def default_database_url() -> str:
    return f"sqlite:///{default_sqlite_path()}"


@dataclass(frozen=True)
class DatabaseURL:
    dialect: Dialect
    url: str
    sqlite_path: str | None = None

    @property
    def redacted(self) -> str:
        """The URL without its password, whatever characters it has (see redact.py)."""
        return redact_url(self.url)


def parse_database_url(url: str | None) -> DatabaseURL:
    """Parse ``postgresql://...``, ``postgres://...``, ``sqlite:///path`` or a bare file path."""
    if url is None or not url.strip():
        url = default_database_url()
    url = url.strip()
    if "://" not in url:
        if url.startswith(("postgres", "sqlite:")):
            # never echo the value: it may hold a password
            raise InvalidDatabaseURL(
                "invalid database URL: missing '://' (use postgresql://USER@HOST/DB or "
                "sqlite:///PATH)"
            )
        return DatabaseURL("sqlite", f"sqlite:///{url}", url)
    scheme = url.split("://", 1)[0].lower()
    if scheme in ("postgresql", "postgres"):
        try:
            parts = urlsplit(url)
            _ = parts.port  # raises ValueError on a non-numeric port
        except ValueError:
            # the parser's message quotes what it took for the port: maybe part of a password
            raise InvalidDatabaseURL(
                f"invalid PostgreSQL URL {redact_url(url)}: the port is not a number from 0 to "
                "65535, or the host is malformed (a password with '/', '?', '#' or '@' must be "
                "percent-encoded)") from None
        if not parts.hostname and "host=" not in (parts.query or ""):
            raise InvalidDatabaseURL("invalid PostgreSQL URL: no host (postgresql://USER@HOST/DB)")
        return DatabaseURL("postgresql", url)
    if scheme == "sqlite":
        # SQLAlchemy's convention: sqlite:///relative.db and sqlite:////absolute/path.db
        if not url.startswith("sqlite:///") or len(url) == len("sqlite:///"):
            raise InvalidDatabaseURL("invalid SQLite URL: use sqlite:///relative.db or sqlite:////abs.db")
        path = url[len("sqlite:///") :]
        if path == ":memory:":
            raise InvalidDatabaseURL(
                "in-memory SQLite is not supported: occurrences share the database through a file"
            )
        return DatabaseURL("sqlite", url, path)
    raise InvalidDatabaseURL(
        f"unsupported database URL scheme {scheme!r}: use postgresql://... or sqlite:///path"
    )
