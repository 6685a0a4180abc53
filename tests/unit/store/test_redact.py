"""No password reaches a printed URL or an error about one, whatever characters it holds.

User, host and database names are drawn from lowercase letters; passwords from uppercase
letters, digits and every character a URL parser splits on. So a piece of the password that
shows up in the output can only have come from the password.
"""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from occurrence_store.errors import InvalidDatabaseURL
from occurrence_store.redact import redact_url, scrub
from occurrence_store.urls import parse_database_url

SPECIALS = "/?#@:%&=+[] !$'()*,;\\\"`~^{}|<>"
PASSWORDS = st.text(alphabet="ABCDEFGHXYZ0123456789" + SPECIALS, min_size=1, max_size=24)
NAMES = st.text(alphabet="abcdefghijklmnop", min_size=1, max_size=12)
PORTS = st.one_of(st.none(), st.integers(1, 65535))


def fragments(password: str) -> list[str]:
    """The password and every piece a parser could cut it into, long enough to recognise
    (a piece of punctuation only, like ``://``, cannot be told from the URL's own syntax)."""
    pieces = re.split(r"[" + re.escape(SPECIALS) + r"]", password)
    return [p for p in {password, *pieces} if len(p) >= 3 and re.search(r"[A-Z0-9]", p)]


def assert_clean(text: str, password: str) -> None:
    for piece in fragments(password):
        assert piece not in text, (piece, text)


def url_of(user: str, password: str, host: str, port: int | None, db: str,
           query: str = "") -> str:
    return f"postgresql://{user}:{password}@{host}{f':{port}' if port else ''}/{db}{query}"


@settings(max_examples=500, deadline=None)
@given(NAMES, PASSWORDS, NAMES, PORTS, NAMES)
def test_redacted_urls_show_no_piece_of_the_password(user: str, password: str, host: str,
                                                     port: int | None, db: str) -> None:
    url = url_of(user, password, host, port, db)
    shown = redact_url(url)
    assert_clean(shown, password)
    assert shown.startswith("postgresql://")
    if "@" not in user and re.fullmatch(r"[A-Z0-9:]*", password):  # a plain password
        assert shown == f"postgresql://{user}@{host}{f':{port}' if port else ''}/{db}"


@settings(max_examples=300, deadline=None)
@given(NAMES, PASSWORDS, NAMES, PORTS, NAMES, PASSWORDS)
def test_parse_errors_and_redacted_property_show_no_piece_of_the_password(
    user: str, password: str, host: str, port: int | None, db: str, query_secret: str,
) -> None:
    url = url_of(user, password, host, port, db, f"?password={query_secret}")
    try:
        shown = parse_database_url(url).redacted
    except InvalidDatabaseURL as exc:
        shown = str(exc)
    assert_clean(shown, password)
    assert_clean(shown, query_secret)


@settings(max_examples=300, deadline=None)
@given(NAMES, PASSWORDS, NAMES, NAMES, st.text(max_size=40))
def test_scrub_removes_the_password_from_any_text(user: str, password: str, host: str,
                                                 db: str, noise: str) -> None:
    url = url_of(user, password, host, None, db)
    pieces = fragments(password)
    text = f"{noise} could not connect to {' and '.join(pieces)} ({url}) {noise}"
    assert_clean(scrub(text, url), password)


def test_examples_that_leaked_before() -> None:
    assert redact_url("postgresql://u:pa/ssWORD@h/db") == "postgresql://u@<redacted>"
    assert redact_url("postgresql://u:p@SSWORD@h:5432/db?sslmode=require") == \
        "postgresql://u@h:5432/db"
    assert redact_url("postgresql://u:PW?X#Y@h/db") == "postgresql://u@<redacted>"
    assert redact_url("postgresql://u:PW@h/db?options=-c%20x=@Y") == "postgresql://u@<redacted>"
    assert redact_url("postgresql://h/db?password=SECRET") == "postgresql://h/db"
    assert redact_url("u:SECRET@h/db") == "<redacted>"
    assert redact_url("sqlite:///var/data/occ.db") == "sqlite:///var/data/occ.db"
    assert redact_url("postgres://[::1]:5432/db") == "postgres://[::1]:5432/db"
