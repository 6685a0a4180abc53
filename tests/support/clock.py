"""A clock tests move by hand (leases, expiry, retention)."""

from __future__ import annotations

from datetime import UTC, datetime


class MovableClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now
