"""The agent API's door as pure decisions: scopes per route, token checks, the rate limit."""

from __future__ import annotations

from pathlib import Path

import pytest

from occurrence_agent.auth import (
    Scope,
    TokenFiles,
    TokenProblem,
    authorize,
    bearer_token,
    required_scope,
    unauthenticated_bind_problem,
)
from occurrence_agent.ratelimit import SubmitLimiter

WORK, ADMIN = "w" * 32, "a" * 32
TOKENS = {Scope.WORK: WORK, Scope.ADMIN: ADMIN}


@pytest.mark.parametrize(("method", "path", "scope"), [
    ("GET", "/healthz", None), ("GET", "/readyz", None), ("GET", "/metrics", None),
    ("GET", "/openapi.json", None), ("POST", "/tasks", Scope.WORK), ("GET", "/tasks", Scope.WORK),
    ("GET", "/tasks/x", Scope.WORK), ("GET", "/status", Scope.WORK),
    ("POST", "/shutdown", Scope.ADMIN), ("GET", "/shutdown", Scope.WORK),
    ("GET", "/no-such-route", Scope.WORK),  # unknown routes are not revealed to strangers
])
def test_required_scope(method: str, path: str, scope: Scope | None) -> None:
    assert required_scope(method, path) == scope


@pytest.mark.parametrize(("header", "needed", "status", "principal"), [
    (None, Scope.WORK, 401, ""),
    ("", Scope.WORK, 401, ""),
    (f"Basic {WORK}", Scope.WORK, 401, ""),
    (f"Bearer {WORK}x", Scope.WORK, 401, ""),
    (f"Bearer {WORK[:-1]}", Scope.WORK, 401, ""),
    ("Bearer " + "w" * 10_000, Scope.WORK, 401, ""),
    ("Bearer \udcff\udcfeabc", Scope.WORK, 401, ""),  # header bytes that are not UTF-8
    (f"Bearer {WORK}", Scope.WORK, 0, "work"),
    (f"bearer   {WORK} ", Scope.WORK, 0, "work"),
    (f"Bearer {ADMIN}", Scope.WORK, 0, "admin"),
    (f"Bearer {WORK}", Scope.ADMIN, 403, "work"),
    (f"Bearer {ADMIN}", Scope.ADMIN, 0, "admin"),
    (None, None, 0, "anonymous"),
])
def test_authorize(header: str | None, needed: Scope | None, status: int, principal: str) -> None:
    verdict = authorize(TOKENS, header, needed)
    assert (verdict.status, verdict.principal) == (status, principal)
    assert WORK not in verdict.message and ADMIN not in verdict.message


def test_no_tokens_configured_means_open_but_only_on_loopback() -> None:
    assert authorize({}, None, Scope.ADMIN).status == 0
    for host in ("127.0.0.1", "::1", "localhost", "127.8.9.10"):
        assert unauthenticated_bind_problem(host, {}) is None
    for host in ("0.0.0.0", "::", "10.0.0.7", "agent.example"):
        problem = unauthenticated_bind_problem(host, {})
        assert problem is not None and "AGENT_TOKEN_DIR" in problem and "\n" not in problem
    assert unauthenticated_bind_problem("0.0.0.0", TOKENS) is None


def test_bearer_token_parsing() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("Bearer") is None
    assert bearer_token("Token abc") is None


def test_token_files_are_read_again_when_rotated(tmp_path: Path) -> None:
    (tmp_path / "work").write_text(WORK + "\n")
    problems: list[TokenProblem] = []
    files = TokenFiles(tmp_path, on_error=problems.append, recheck_seconds=0)
    assert files.load() == {Scope.WORK: WORK}
    (tmp_path / "admin").write_text(ADMIN)
    assert files.current() == TOKENS
    rotated = "r" * 40
    (tmp_path / "work").unlink()
    (tmp_path / "work").write_text(rotated)
    assert files.current()[Scope.WORK] == rotated
    (tmp_path / "admin").write_text("short")  # a broken update: the last good set stays
    assert files.current() == {Scope.WORK: rotated, Scope.ADMIN: ADMIN}
    assert len(problems) == 1 and "16 to" in str(problems[0])


def test_token_directory_problems_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(TokenProblem, match="no token in"):
        TokenFiles(tmp_path).load()
    (tmp_path / "work").write_text("tiny")
    with pytest.raises(TokenProblem, match="must hold 16 to"):
        TokenFiles(tmp_path).load()
    assert TokenFiles(None).load() == {}


def test_submit_limiter_refills_at_its_rate_per_caller() -> None:
    now = [100.0]
    limiter = SubmitLimiter(rate=2, burst=3, clock=lambda: now[0])
    assert [limiter.admit("work") for _ in range(3)] == [0, 0, 0]
    wait = limiter.admit("work")
    assert wait == pytest.approx(0.5)
    assert SubmitLimiter.retry_after_header(wait) == "1"
    assert limiter.admit("admin") == 0  # another credential has its own bucket
    now[0] += 0.5
    assert limiter.admit("work") == 0
    assert limiter.admit("work") > 0
    now[0] += 100  # refills to the burst, not beyond
    assert [limiter.admit("work") for _ in range(4)].count(0) == 3
    assert SubmitLimiter(rate=0, burst=1).admit("work") == 0  # 0 disables it
