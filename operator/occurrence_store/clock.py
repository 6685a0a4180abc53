"""Where the core's time comes from: the database server, never a client.

Every timestamp the core writes and every lease, heartbeat, retry or claim expiry it checks
is computed inside the SQL statement by ``occurrence_now()`` / ``occurrence_after(seconds)``:

- PostgreSQL: SQL functions (migration 004) over the server's ``now()``;
- SQLite: functions registered on each connection over the host clock — an embedded
  database has no other clock, and every process sharing the file reads the same one.

So occurrences on machines whose clocks disagree still agree on who holds a lease and on
which day a shared decision belongs to. :class:`DatabaseClock` can shift that clock by an
offset: tests use it to let a lease expire without waiting for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

NOW_SQL = "occurrence_now()"
"""The database's current time, in any statement of either dialect."""


def after_sql(placeholder: str) -> str:
    """The database's time ``placeholder`` seconds from now (a float parameter, may be < 0)."""
    return f"occurrence_after({placeholder})"


@dataclass
class DatabaseClock:
    """The database server's clock, shifted by ``offset`` (zero outside tests)."""

    offset: timedelta = field(default_factory=timedelta)
    shifted: bool = False
    """Whether the offset was ever set: connections then re-apply it on every use."""

    def advance(self, **delta: float) -> None:
        """Move the database clock forward (``advance(seconds=31)``) for this store only."""
        self.offset += timedelta(**delta)
        self.shifted = True

    @property
    def offset_interval(self) -> str:
        """The offset as a PostgreSQL interval literal, in whole microseconds: a float's
        ``str`` writes tiny offsets as ``-8e-06``, which PostgreSQL refuses."""
        return f"{self.offset // timedelta(microseconds=1)} microseconds"

    def host_now(self) -> datetime:
        """The embedded (SQLite) database's clock: this host's, shifted."""
        return datetime.now(UTC) + self.offset


def utcnow() -> datetime:
    """This process's clock, for what is not the database's business (migration records)."""
    return datetime.now(UTC)
