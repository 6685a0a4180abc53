"""Pure drain planning: quotas and interleaving."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from occurrence_store.balance import balanced_quotas, spread_assignment


@given(st.lists(st.integers(0, 1000), min_size=1, max_size=8), st.integers(0, 5000))
def test_quotas_are_water_filling(loads: list[int], n: int) -> None:
    quotas = balanced_quotas(loads, n)
    assert sum(quotas) == n and all(q >= 0 for q in quotas)
    final = [load + q for load, q in zip(loads, quotas, strict=True)]
    receivers = [f for f, q in zip(final, quotas, strict=True) if q > 0]
    if receivers:
        # everyone who received ends within one of the lowest final load,
        # and nobody who received ends above someone who could have taken more
        assert max(receivers) - min(final) <= 1


def test_quotas_examples() -> None:
    assert balanced_quotas([0, 0, 0], 100) == [34, 33, 33]
    assert balanced_quotas([10, 0], 12) == [1, 11]
    assert balanced_quotas([50, 0], 10) == [0, 10]
    assert balanced_quotas([], 0) == []
    with pytest.raises(ValueError):
        balanced_quotas([], 3)


def test_spread_interleaves() -> None:
    plan = spread_assignment([f"t{i}" for i in range(6)], ["a", "b"], [3, 3])
    assert [target for _, target in plan] == ["a", "b", "a", "b", "a", "b"]
    plan = spread_assignment([f"t{i}" for i in range(4)], ["a", "b"], [1, 3])
    assert sorted(target for _, target in plan) == ["a", "b", "b", "b"]
    with pytest.raises(ValueError):
        spread_assignment(["t"], ["a"], [2])
