"""What happens to a thought whose attempt did not finish: pure rules, no I/O.

An attempt goes through stages; where it broke decides whether running the handler again
is safe:

- ``load``: the handler never started (reading the task failed) — retry;
- ``handle``: the handler raised — retry, bounded: the handler itself reported the failure;
- ``finish``: the handler returned but its outcome could not be recorded (the database
  went away) — the handler's side effects happened, the record did not: a *stranded*
  thought, retried or failed as ``spec.recovery.inFlight`` says (:class:`InFlightRecovery`);
- ``after``: the outcome is recorded; only the task's follow-up is missing, and the sweep
  adds it. Nothing to retry.

Retries back off exponentially and are bounded: the ``max_attempts``-th failed attempt marks
the thought FAILED with the reason, and its task with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from occurrence_store.models import InFlightRecovery


class Stage(StrEnum):
    LOAD = "load"
    HANDLE = "handle"
    FINISH = "finish"
    AFTER = "after"


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    """Claims a thought gets at most; the last failure marks it FAILED."""
    backoff_seconds: float = 1.0
    """Wait before the second attempt; doubles for each further one."""
    max_backoff_seconds: float = 60.0

    def backoff(self, attempts: int) -> float:
        """Seconds to wait after the ``attempts``-th attempt failed."""
        if self.backoff_seconds <= 0:
            return 0.0
        exponent = min(max(0, attempts - 1), 30)
        return min(self.max_backoff_seconds, self.backoff_seconds * float(2 ** exponent))


def retry_after(stage: Stage, recovery: InFlightRecovery) -> bool | None:
    """Whether a thought whose attempt broke at ``stage`` goes back to pending (``True``),
    fails (``False``), or stays as it is (``None``: its outcome is already recorded)."""
    if stage is Stage.AFTER:
        return None
    if stage is Stage.FINISH:
        return InFlightRecovery(recovery) is InFlightRecovery.RETRY
    return True
