from __future__ import annotations

import pytest

from occurrence_store import InvalidDatabaseURL
from occurrence_store.urls import parse_database_url


def test_parse_variants(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    assert parse_database_url("postgresql://u:p@h:5432/db").dialect == "postgresql"
    assert parse_database_url("postgres://u@h/db").dialect == "postgresql"
    assert parse_database_url("sqlite:///rel.db").sqlite_path == "rel.db"
    assert parse_database_url("sqlite:////abs/x.db").sqlite_path == "/abs/x.db"
    assert parse_database_url("/abs/y.db").sqlite_path == "/abs/y.db"
    monkeypatch.setenv("OCCURRENCE_DATA_DIR", str(tmp_path))
    assert parse_database_url(None).sqlite_path == str(tmp_path / "occurrence.db")


def test_redacted_never_shows_password() -> None:
    url = parse_database_url("postgresql://app:s3cret@db.example:5433/agents")
    assert url.redacted == "postgresql://app@db.example:5433/agents"


@pytest.mark.parametrize("bad", ["mysql://h/db", "sqlite://x", "sqlite:///:memory:",
                                 "postgresql:///db", "postgresql://h:port/db"])
def test_rejected(bad: str) -> None:
    with pytest.raises(InvalidDatabaseURL):
        parse_database_url(bad)
