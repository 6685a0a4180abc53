"""One owner per occurrence id, one set of decisions per agent, the database's clock."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from occurrence_store import OccurrenceIdConflict, Store, TaskStatus
from occurrence_store import clock as clock_module
from occurrence_store.shared import shared_task_id


async def test_claiming_ids_records_the_agent_and_refuses_another(store: Store) -> None:
    await store.registry.register("agent-0", ordinal=0)  # a legacy pod: no agent yet
    assert await store.registry.claim(["agent-0", "agent-1"], agent_id="ns-a/agent",
                                      owner_uid="uid-a") == []
    rows = {o.occurrence_id: o for o in await store.registry.list()}
    assert rows["agent-0"].agent_id == rows["agent-1"].agent_id == "ns-a/agent"
    assert rows["agent-1"].owner_uid == "uid-a"
    refused = await store.registry.claim(["agent-0", "agent-2"], agent_id="ns-b/agent",
                                         owner_uid="uid-b")
    assert [c.occurrence_id for c in refused] == ["agent-0"]
    assert refused[0].owner == "ns-a/agent" and refused[0].owner_uid == "uid-a"
    assert (await store.registry.get("agent-0")).agent_id == "ns-a/agent"  # untouched
    assert await store.registry.get("agent-2") is None  # all or nothing: the free one too
    # the same AgentDeployment created again (new UID) takes its ids back
    assert await store.registry.claim(["agent-0"], agent_id="ns-a/agent",
                                      owner_uid="uid-a2") == []
    assert (await store.registry.get("agent-0")).owner_uid == "uid-a2"
    # a pod of another agent cannot register under the id
    with pytest.raises(OccurrenceIdConflict, match="belongs to agent 'ns-a/agent'"):
        await store.registry.register("agent-0", agent_id="ns-b/agent")
    assert (await store.registry.get("agent-0")).agent_id == "ns-a/agent"
    # disowned: the other agent may take it
    assert await store.registry.disown(["agent-0"]) == 1
    assert await store.registry.claim(["agent-0"], agent_id="ns-b/agent") == []


async def test_decisions_and_live_counts_are_per_agent(store: Store) -> None:
    await store.registry.register("a-0", agent_id="ns/a")
    await store.registry.register("a-1", agent_id="ns/a")
    await store.registry.register("b-0", agent_id="ns/b")
    assert await store.registry.live_count("ns/a") == 2
    assert await store.registry.live_count("ns/b") == 1
    a, b = store.shared_for("ns/a"), store.shared_for("ns/b")
    shutdown_a, won_a = await a.try_claim_shared_task("shutdown", "a-0")
    shutdown_b, won_b = await b.try_claim_shared_task("shutdown", "b-0")
    assert won_a and won_b and shutdown_a.task_id != shutdown_b.task_id
    assert shutdown_a.task_id.endswith("@ns/a") and shutdown_a.agent_id == "ns/a"
    assert await a.complete_shared_task(shutdown_a.task_id, "a-0")
    assert await a.is_shared_task_completed("shutdown")
    assert not await b.is_shared_task_completed("shutdown")
    assert await store.shared.get_shared_task_status("shutdown") is None  # the default agent's
    assert (await b.get_latest_shared_task("shutdown")).task_id == shutdown_b.task_id


async def test_a_task_squatting_a_shared_id_is_never_taken_for_the_decision(
    store: Store,
) -> None:
    """Written before such ids were refused: the claim says so instead of waiting forever."""
    day = await store.now()
    squat = shared_task_id("wakeup", day)
    async with store.db.connection() as conn:
        await conn.execute(
            "INSERT INTO tasks (task_id, agent_occurrence_id, description, status, created_at, "
            "updated_at) VALUES ($1, 'agent-0', 'old', 'active', occurrence_now(), "
            "occurrence_now())", squat)
    assert await store.shared.get_shared_task(squat) is None
    with pytest.raises(Exception, match="owns a task with that id outside __shared__"):
        await store.shared.try_claim_shared_task("wakeup", "agent-1")
    assert (await store.scope("agent-0").get_task(squat)).status == TaskStatus.ACTIVE


async def test_the_decision_day_is_the_databases(store: Store) -> None:
    today, _ = await store.shared.try_claim_shared_task("wakeup", "agent-0")
    store.clock.advance(days=1)
    tomorrow, won = await store.shared.try_claim_shared_task("wakeup", "agent-0")
    assert won and tomorrow.task_id != today.task_id
    assert tomorrow.task_id == shared_task_id("wakeup", await store.now())


async def test_leases_ignore_a_wrong_client_clock(pg_url: str, monkeypatch) -> None:
    """The process clock is two hours ahead; the lease still comes from the server."""

    class Ahead(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime.now(tz or UTC) + timedelta(hours=2)

    monkeypatch.setattr(clock_module, "datetime", Ahead)
    async with await Store.open(pg_url, migrate=True) as store:
        occ = await store.registry.register("skew-0", lease_seconds=30)
        async with store.db.connection() as conn:
            server_now = await conn.fetchval("SELECT now()")
        assert abs((occ.heartbeat_at - server_now).total_seconds()) < 60
        assert not occ.lease_expired() and await store.registry.live_count() == 1


async def test_two_agents_claiming_the_same_ids_at_once_one_gets_them_all(db_url: str) -> None:
    ids = [f"dup-{k}" for k in range(5)]
    a, b = await Store.open(db_url, migrate=True), await Store.open(db_url)
    try:
        refused = await asyncio.gather(a.registry.claim(ids, agent_id="ns-a/dup"),
                                       b.registry.claim(ids, agent_id="ns-b/dup"))
        assert sorted(len(r) for r in refused) == [0, len(ids)]
        winner = "ns-a/dup" if not refused[0] else "ns-b/dup"
        assert {o.agent_id for o in await a.registry.list()} == {winner}
    finally:
        await a.close()
        await b.close()
