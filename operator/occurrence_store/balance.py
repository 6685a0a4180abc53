"""Pure planning of where a departing occurrence's tasks go. No I/O.

Two steps: :func:`balanced_quotas` decides *how many* tasks each survivor receives so
that final loads are as even as possible (water-filling: the least loaded get more);
:func:`spread_assignment` decides *which* tasks, interleaving so that each survivor gets a
fair share of old and new work rather than one taking the whole oldest block.
"""

from __future__ import annotations

from collections.abc import Sequence

from occurrence_store.models import OccurrenceId


def balanced_quotas(loads: Sequence[int], n: int) -> list[int]:
    """How many of ``n`` new tasks each survivor gets, given its current ``loads``.

    Final loads differ by at most one wherever the starting loads allow it; a survivor
    already above the level gets nothing. Ties go to the earlier survivor.
    """
    if n < 0:
        raise ValueError("n must be >= 0")
    k = len(loads)
    if k == 0:
        if n:
            raise ValueError("no survivors to receive tasks")
        return []
    # Find the highest level h with sum(max(0, h - L)) <= n, by binary search.
    lo, hi = min(loads), min(loads) + n
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if sum(max(0, mid - load) for load in loads) <= n:
            lo = mid
        else:
            hi = mid - 1
    level = lo
    quotas = [max(0, level - load) for load in loads]
    remaining = n - sum(quotas)
    for i in range(k):
        if remaining == 0:
            break
        if loads[i] + quotas[i] == level:
            quotas[i] += 1
            remaining -= 1
    assert remaining == 0 and sum(quotas) == n
    return quotas


def spread_slots(quotas: Sequence[int]) -> list[int]:
    """The target index of each of ``sum(quotas)`` positions, honouring ``quotas`` exactly.

    Target ``i``'s slots sit at evenly spaced positions ``(j + 0.5) / quota_i``; merging all
    slots by position interleaves the targets in proportion to their quotas (so any prefix
    is close to proportional too).
    """
    return [i for _, i in sorted(
        ((j + 0.5) / q, i) for i, q in enumerate(quotas) if q for j in range(q))]


def spread_assignment(task_ids: Sequence[str], targets: Sequence[OccurrenceId],
                      quotas: Sequence[int]) -> list[tuple[str, OccurrenceId]]:
    """Pair each task (in the given order) with a target, honouring ``quotas`` exactly
    (:func:`spread_slots`)."""
    if len(targets) != len(quotas):
        raise ValueError("one quota per target")
    if sum(quotas) != len(task_ids):
        raise ValueError(f"quotas add up to {sum(quotas)}, not {len(task_ids)} tasks")
    return [(task_id, targets[i])
            for task_id, i in zip(task_ids, spread_slots(quotas), strict=True)]
