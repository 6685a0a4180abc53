"""Keep a test's daily shared decisions on one calendar day, whenever the suite runs."""

from __future__ import annotations

from datetime import UTC, datetime

from occurrence_store.clock import DatabaseClock


def pin_to_midday(clock: DatabaseClock) -> None:
    """Shift ``clock`` to about 12:00 UTC today.

    Shared decision ids carry the database's date (``WAKEUP_SHARED_20261201``): a test that
    advances the clock by minutes would, run just before midnight, roll into the next day and
    meet a fresh, claimable decision. Shifting to midday leaves twelve hours either side.
    """
    now = datetime.now(UTC)
    clock.advance(seconds=(now.replace(hour=12, minute=0, second=0) - now).total_seconds())
