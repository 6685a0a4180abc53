"""Occurrence registry: leases, states, optimistic versioning."""

from __future__ import annotations

import pytest

from occurrence_store import OccurrenceState, Store, TaskStatus, UnknownOccurrence, VersionConflict


@pytest.fixture
def clocked(store: Store):
    """The store and its database clock, which the tests move by hand."""
    return store, store.clock


async def test_register_and_heartbeat_lease(clocked) -> None:
    store, clock = clocked
    occ = await store.registry.register("agent-0", ordinal=0, lease_seconds=30)
    assert occ.state == OccurrenceState.ACTIVE and occ.version == 1 and occ.ordinal == 0
    assert not occ.lease_expired()
    clock.advance(seconds=20)
    occ = await store.registry.heartbeat("agent-0", lease_seconds=30)
    assert occ.heartbeat_age() < 1
    clock.advance(seconds=31)
    assert [o.occurrence_id for o in await store.registry.expired()] == ["agent-0"]
    assert await store.registry.live_count() == 0
    await store.registry.heartbeat("agent-0")
    assert await store.registry.expired() == []
    assert await store.registry.live_count() == 1


async def test_heartbeat_of_unknown_occurrence(clocked) -> None:
    store, _ = clocked
    with pytest.raises(UnknownOccurrence):
        await store.registry.heartbeat("ghost")


async def test_optimistic_state_change(clocked) -> None:
    store, _ = clocked
    occ = await store.registry.register("agent-1")
    draining = await store.registry.set_state("agent-1", OccurrenceState.DRAINING,
                                              expected_version=occ.version)
    assert draining.state == OccurrenceState.DRAINING and draining.version == occ.version + 1
    with pytest.raises(VersionConflict) as err:
        await store.registry.set_state("agent-1", OccurrenceState.ACTIVE,
                                       expected_version=occ.version)
    assert err.value.actual == draining.version
    assert (await store.registry.get("agent-1")).state == OccurrenceState.DRAINING


async def test_draining_survives_restart_and_retired_comes_back(clocked) -> None:
    store, _ = clocked
    await store.registry.register("agent-2")
    await store.registry.set_state("agent-2", OccurrenceState.DRAINING)
    await store.registry.set_quiesced("agent-2")
    again = await store.registry.register("agent-2")  # pod restarted mid-drain
    assert again.state == OccurrenceState.DRAINING and again.quiesced
    retired = await store.registry.set_state("agent-2", OccurrenceState.RETIRED)
    back = await store.registry.register("agent-2")  # scale-up reuses the ordinal
    assert back.state == OccurrenceState.ACTIVE and back.version == retired.version + 1
    assert not back.quiesced


async def test_set_state_creates_missing_row_and_same_state_is_noop(clocked) -> None:
    store, _ = clocked
    occ = await store.registry.set_state("never-started", OccurrenceState.DRAINING)
    assert occ.state == OccurrenceState.DRAINING and occ.version == 1
    same = await store.registry.set_state("never-started", OccurrenceState.DRAINING)
    assert same.version == 1


async def test_list_with_pending_counts(clocked) -> None:
    store, _ = clocked
    await store.registry.register("agent-0", ordinal=0)
    await store.registry.register("agent-1", ordinal=1)
    await store.scope("agent-1").add_tasks(["a", "b", "c"])
    await store.scope("agent-1").activate_pending_tasks(1)
    listed = {o.occurrence_id: o for o in await store.registry.list()}
    assert (listed["agent-1"].pending_tasks, listed["agent-1"].active_tasks) == (2, 1)
    assert listed["agent-0"].pending_tasks == 0
    await store.registry.set_state("agent-0", OccurrenceState.RETIRED)
    assert [o.occurrence_id for o in await store.registry.list(state=OccurrenceState.ACTIVE)] == [
        "agent-1"
    ]


async def test_backlog_counts_pending_and_active_work_of_one_agent(clocked) -> None:
    store, _ = clocked
    assert await store.registry.claim(["a-0", "a-1"], agent_id="ns/a", owner_uid=None) == []
    assert await store.registry.claim(["b-0"], agent_id="ns/b", owner_uid=None) == []
    first = await store.scope("a-0").add_tasks(["p1", "p2", "done"])
    await store.scope("a-0").complete_tasks([first[2]])
    await store.scope("a-1").add_task("running", status=TaskStatus.ACTIVE)
    await store.scope("a-1").add_task("refused", status=TaskStatus.REJECTED)
    await store.scope("b-0").add_tasks(["other agent"] * 5)
    # a retired occurrence's parked work still counts (scale to zero parks it on <name>-0)
    await store.registry.set_state("a-1", OccurrenceState.RETIRED)
    assert await store.registry.backlog("ns/a") == 3
    assert await store.registry.backlog("ns/b") == 5
    assert await store.registry.backlog("ns/none") == 0


@pytest.mark.parametrize("delta", [{"microseconds": 8}, {"microseconds": -8},
                                   {"days": -1, "microseconds": 3}, {"seconds": 1e-6}])
async def test_tiny_and_negative_clock_offsets_reach_the_database(clocked, delta) -> None:
    """A float offset written with ``str`` was ``-8e-06 seconds``, which PostgreSQL refuses."""
    store, clock = clocked
    before = await store.now()
    clock.advance(**delta)
    shifted = await store.now()
    expected = clock.offset
    # the database's own clock moved on a little between the two reads; the shift is exact
    assert abs((shifted - before) - expected).total_seconds() < 5
