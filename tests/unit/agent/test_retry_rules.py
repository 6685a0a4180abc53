"""Which failed attempts are retried, and how long they wait (pure rules)."""

from __future__ import annotations

from occurrence_agent.retry import RetryPolicy, Stage, retry_after
from occurrence_store import InFlightRecovery


def test_where_an_attempt_broke_decides_whether_it_runs_again() -> None:
    assert retry_after(Stage.LOAD, InFlightRecovery.FAIL) is True  # the handler never ran
    assert retry_after(Stage.HANDLE, InFlightRecovery.FAIL) is True  # the handler raised
    assert retry_after(Stage.FINISH, InFlightRecovery.RETRY) is True  # outcome not recorded
    assert retry_after(Stage.FINISH, InFlightRecovery.FAIL) is False
    assert retry_after(Stage.AFTER, InFlightRecovery.RETRY) is None  # outcome recorded


def test_backoff_doubles_up_to_its_cap() -> None:
    policy = RetryPolicy(max_attempts=5, backoff_seconds=1, max_backoff_seconds=5)
    assert [policy.backoff(n) for n in range(1, 6)] == [1, 2, 4, 5, 5]
    assert RetryPolicy(backoff_seconds=0).backoff(3) == 0
    assert RetryPolicy(backoff_seconds=1, max_backoff_seconds=60).backoff(10_000) == 60
