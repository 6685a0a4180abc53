"""RFC 3339 timestamps as Kubernetes writes them (UTC, second precision, `Z`)."""

from __future__ import annotations

from datetime import UTC, datetime


def format_time(when: datetime) -> str:
    """Format an aware datetime the way the API server does (`2024-05-01T12:00:00Z`)."""
    if when.tzinfo is None:
        raise ValueError("naive datetime: pass an aware datetime (UTC)")
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime:
    """Parse an RFC 3339 timestamp (with `Z` or an offset) into an aware UTC datetime."""
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def utcnow() -> datetime:
    """The current time, aware, in UTC (the only impure function of the pure modules)."""
    return datetime.now(UTC)
