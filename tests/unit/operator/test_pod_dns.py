"""A database host in a Secret means what it means to the pods of the Secret's namespace."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from occurrence_operator.render.pod_dns import qualify_service_hosts


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:p@postgres:5432/db", "postgresql://u:p@postgres.agents.svc:5432/db"),
        ("postgres://u@postgres/db", "postgres://u@postgres.agents.svc/db"),
        ("postgresql://postgres/db?sslmode=require", "postgresql://postgres.agents.svc/db?sslmode=require"),
        ("postgresql://u@a:5432,b:5433/db", "postgresql://u@a.agents.svc:5432,b.agents.svc:5433/db"),
        # already qualified, an address, loopback: unchanged
        ("postgresql://u@postgres.other:5432/db", "postgresql://u@postgres.other:5432/db"),
        ("postgresql://u@db.example.com/db", "postgresql://u@db.example.com/db"),
        ("postgresql://u@10.0.0.7:5432/db", "postgresql://u@10.0.0.7:5432/db"),
        ("postgresql://u@[::1]:5432/db", "postgresql://u@[::1]:5432/db"),
        ("postgresql://u@localhost/db", "postgresql://u@localhost/db"),
        ("postgresql:///db?host=/var/run/postgresql", "postgresql:///db?host=/var/run/postgresql"),
        ("sqlite:////data/x.db", "sqlite:////data/x.db"),
    ],
)
def test_qualifies_bare_service_names_only(url: str, expected: str) -> None:
    assert qualify_service_hosts(url, "agents") == expected


@given(st.text(alphabet="/?#@:%!$&'()*+,;= azAZ09", min_size=1, max_size=30))
def test_password_passes_through_byte_for_byte(password: str) -> None:
    from urllib.parse import quote

    encoded = quote(password, safe="")
    url = f"postgresql://user:{encoded}@postgres:5432/db"
    out = qualify_service_hosts(url, "team-a")
    assert out == f"postgresql://user:{encoded}@postgres.team-a.svc:5432/db"
