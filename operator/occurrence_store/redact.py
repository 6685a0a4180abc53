"""Printing a database URL, or an error about one, without its password — for any password.

A password may hold ``/ ? # @ :`` unencoded (generated passwords often do). A URL parser then
puts part of it in the host, the port or the path, and anything printed from that parse — or
the parser's own error — shows it. So nothing here trusts a parse:

- :func:`redact_url` prints only pieces it can place without doubt: the scheme, a plain user
  name, and the host, port and database name after the last ``@`` (a host never holds
  one) — and those only when every parser would agree (no ``@`` after the first ``/``,
  ``?`` or ``#``). The query (``?password=...``) is never printed. What it cannot place is
  left out, down to ``postgresql://<redacted>``.
- :func:`scrub` removes from any text (a driver's error message) every fragment of what
  could be the password, whatever the text is.

Every message the core, the operator and the agent print about a URL goes through these two.
"""

from __future__ import annotations

import re

_PLAIN = re.compile(r"^[A-Za-z0-9._-]+$")
_HOST = re.compile(r"^(?:[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])$")
_PORT = re.compile(r"^[0-9]{1,5}$")
_MIN_FRAGMENT = 3
"""Shorter pieces of a password are too common in ordinary text to be told apart."""
REDACTED = "<redacted>"


def _split(url: str) -> tuple[str, str, str] | None:
    """(scheme, userinfo, rest after the last '@') — userinfo empty without credentials."""
    scheme, sep, after = url.partition("://")
    if not sep:
        return None
    userinfo, at, rest = after.rpartition("@")
    return (scheme, userinfo, rest) if at else (scheme, "", after)


def _secret_of(url: str) -> str:
    """Everything that may be the password: the userinfo after the user name, and the query."""
    parts = _split(url)
    if parts is None:
        return url  # not a URL at all: all of it may be secret
    _, userinfo, rest = parts
    _, _, password = userinfo.partition(":")
    query = rest.partition("?")[2]
    return "\n".join(p for p in (password, query) if p)


def redact_url(url: str) -> str:
    """The URL with nothing of its password; SQLite paths (no credentials) are kept."""
    url = url.strip()
    if url.startswith("sqlite:///"):
        return url
    parts = _split(url)
    if parts is None:  # a bare SQLite path, unless it looks like credentials gone astray
        return REDACTED if "@" in url or url.startswith("postgres") else url
    scheme, userinfo, rest = parts
    scheme = scheme if scheme.lower() in ("postgresql", "postgres") else "postgresql"
    user = userinfo.partition(":")[0]
    shown_user = (f"{user}@" if user and _PLAIN.match(user)
                  else f"{REDACTED}@" if userinfo else "")
    # An '@' after the first '/', '?' or '#' means a parser (asyncpg's, urllib's) and this
    # function would not agree on where the password ends: show no location at all.
    after = url.partition("://")[2]
    first_delimiter = re.search(r"[/?#]", after)
    if first_delimiter and "@" in after[first_delimiter.start():]:
        return f"{scheme}://{shown_user}{REDACTED}"
    location = re.split(r"[?#]", rest, maxsplit=1)[0]
    hostport, slash, database = location.partition("/")
    if hostport.endswith("]") or ":" not in hostport:
        host, port = hostport, ""
    else:
        host, _, port = hostport.rpartition(":")
    if host and not (_HOST.match(host) and (not port or _PORT.match(port))):
        return f"{scheme}://{shown_user}{REDACTED}"
    shown_host = host + (f":{port}" if port else "")
    shown_db = (f"/{database}" if database and _PLAIN.match(database)
                else f"/{REDACTED}" if database else "/" if slash else "")
    return f"{scheme}://{shown_user}{shown_host}{shown_db}"


def scrub(text: str, url: str | None) -> str:
    """``text`` with every fragment of ``url``'s possible password replaced by ``***``.

    The password is also cut at every non-alphanumeric character, so a driver that printed
    only the piece it took for a host or a port is scrubbed too.
    """
    if not url:
        return text
    secret = _secret_of(url.strip())
    fragments = {secret, *re.split(r"[^A-Za-z0-9]", secret)}
    for fragment in sorted(fragments, key=len, reverse=True):
        if len(fragment) >= _MIN_FRAGMENT:
            text = text.replace(fragment, "***")
    return text
