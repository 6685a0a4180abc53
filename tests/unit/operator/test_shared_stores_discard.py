"""One broken pool is closed once: a pass that saw an older Store fail leaves a fresh one."""

from __future__ import annotations

from pathlib import Path

from occurrence_operator.kube.shared_stores import Stores


async def test_discarding_a_store_that_was_already_replaced_keeps_the_new_one(
        tmp_path: Path) -> None:
    stores = Stores()
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    try:
        first = await stores.get(url)
        await stores.discard(url, first)  # the pass that saw it fail
        second = await stores.get(url)  # reopened by the next pass
        assert second is not first
        await stores.discard(url, first)  # a late pass that also saw the first one fail
        assert await stores.get(url) is second
        await stores.discard(url, second)
        assert await stores.get(url) is not second
    finally:
        await stores.close()
