"""A token bucket per caller: how many tasks one credential may submit per second.

A task's own context can make the default handler work for a long time; a caller that
submits without bound fills the database and the backlog of every occurrence it reaches.
The bucket refills at ``rate`` per second up to ``burst``; a refused submission is told when
to retry (``Retry-After``). The clock is injected so the arithmetic is unit-tested.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass
class SubmitLimiter:
    rate: float
    """Submissions per second per caller; 0 disables the limit."""
    burst: int
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    def admit(self, caller: str) -> float:
        """0 if ``caller`` may submit now (and count it), else seconds until it may."""
        if self.rate <= 0:
            return 0.0
        now = self.clock()
        bucket = self._buckets.setdefault(caller, _Bucket(float(self.burst), now))
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate

    @staticmethod
    def retry_after_header(seconds: float) -> str:
        return str(max(1, math.ceil(seconds)))
