"""Mixed-version safety: while a canary rollout is under way (the operator pins the agent's
shared decisions to its stable revision), only occurrences on the stable revision claim the
wakeup or a shutdown decision; a canary follows — and never blocks a fleet with no live
stable occurrence."""

from __future__ import annotations

import pytest

from occurrence_store import NotEligibleToDecide, OccurrenceState, Store
from tests.support.clock import pin_to_midday

AGENT = "ns/web"


async def _fleet(store: Store) -> None:
    await store.registry.register("web-0", agent_id=AGENT, revision="stable")
    await store.registry.register("web-1", agent_id=AGENT, revision="stable")
    await store.registry.register("web-2", agent_id=AGENT, revision="canary")


async def test_a_canary_follows_the_stable_occurrences_decision(store: Store) -> None:
    pin_to_midday(store.clock)  # the hour below stays on one day's decision (CI ran at 23:0x)
    await _fleet(store)
    shared = store.shared_for(AGENT)
    await shared.pin_to_stable("stable")
    assert await shared.pinned_to() == "stable"
    with pytest.raises(NotEligibleToDecide, match="not the stable stable"):
        await shared.try_claim_shared_task("wakeup", "web-2")
    task, won = await shared.try_claim_shared_task("wakeup", "web-1")
    assert won and task.claimed_by == "web-1"
    followed, won = await shared.try_claim_shared_task("wakeup", "web-2")
    assert not won and followed.task_id == task.task_id and followed.claimed_by == "web-1"
    # even once the stable claimer's lease ran out, the canary does not take it over
    store.clock.advance(seconds=3600)
    await store.registry.register("web-0", agent_id=AGENT, revision="stable")  # still live
    followed, won = await shared.try_claim_shared_task("wakeup", "web-2")
    assert not won and followed.claimed_by == "web-1"
    taken, won = await shared.try_claim_shared_task("wakeup", "web-0")
    assert won and taken.claimed_by == "web-0"


async def test_unpinned_or_another_agent_anyone_claims(store: Store) -> None:
    await _fleet(store)
    shared = store.shared_for(AGENT)
    await shared.pin_to_stable("stable")
    await store.registry.register("other-0", agent_id="ns/other", revision="canary")
    _, won = await store.shared_for("ns/other").try_claim_shared_task("wakeup", "other-0")
    assert won  # the pin is per agent
    await shared.pin_to_stable(None)
    assert await shared.pinned_to() is None
    _, won = await shared.try_claim_shared_task("wakeup", "web-2")
    assert won


async def test_no_live_stable_occurrence_lets_a_canary_decide(store: Store) -> None:
    await _fleet(store)
    shared = store.shared_for(AGENT)
    await shared.pin_to_stable("stable")
    for occurrence in ("web-0", "web-1"):
        await store.registry.set_state(occurrence, OccurrenceState.RETIRED)
    _, won = await shared.try_claim_shared_task("wakeup", "web-2")
    assert won  # nobody on the stable revision is left to decide: nobody waits forever


async def test_each_occurrence_reads_its_track_with_its_registry_row(store: Store) -> None:
    await _fleet(store)
    await store.registry.register("other-0", agent_id="ns/other", revision="canary")
    rows = {o.occurrence_id: o for o in await store.registry.list()}
    assert {o: r.track for o, r in rows.items()} == {
        "web-0": "stable", "web-1": "stable", "web-2": "stable", "other-0": "stable"}
    await store.shared_for(AGENT).pin_to_stable("stable")
    rows = {o.occurrence_id: o for o in await store.registry.list()}
    assert {o: r.track for o, r in rows.items()} == {
        "web-0": "stable", "web-1": "stable", "web-2": "canary", "other-0": "stable"}
    beat = await store.registry.heartbeat("web-2")
    assert (beat.pinned_revision, beat.track) == ("stable", "canary")
    await store.shared_for(AGENT).pin_to_stable(None)
    assert (await store.registry.heartbeat("web-2")).track == "stable"
