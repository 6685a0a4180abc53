"""One tenant's database cannot stall another's: opening is per URL, a pool nobody uses is
closed, and a pass has a deadline. Real sockets and real SQLite files; the Kubernetes side of
the deadline test is `FakeKube`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from occurrence_operator.kube.metrics import OperatorMetrics
from occurrence_operator.kube.shared_stores import Stores
from occurrence_operator.reconcile import scheduling
from occurrence_operator.reconcile.passcontext import PassContext
from occurrence_operator.reconcile.scheduling import Reconciler
from occurrence_store import Store
from tests.unit.operator.fake_kube import FakeKube


@pytest.fixture
async def silent_server() -> AsyncIterator[int]:
    """A TCP server that accepts connections and never answers (a hung database host)."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for writer in held:
            writer.close()


async def test_a_database_that_never_answers_does_not_hold_up_another(
        tmp_path: Path, silent_server: int) -> None:
    stores = Stores()
    healthy = f"sqlite:///{tmp_path / 'healthy.db'}"
    await (await Store.open(healthy, migrate=True)).close()
    bad = f"postgresql://u@127.0.0.1:{silent_server}/db"
    try:
        stuck = asyncio.create_task(stores.get(bad, user=("a", "bad")))
        await asyncio.sleep(0.2)  # the bad open is under way, holding its own lock
        t0 = time.monotonic()
        store = await stores.get(healthy, user=("b", "good"))
        waited = time.monotonic() - t0
        assert await store.registry.list() == []
        assert not stuck.done() and waited < 5, waited  # (before: the whole connect timeout)
        stuck.cancel()
        with pytest.raises(asyncio.CancelledError):
            await stuck
    finally:
        await stores.close()


async def test_a_pool_nobody_uses_any_more_is_closed(tmp_path: Path) -> None:
    stores = Stores()
    first, second = (f"sqlite:///{tmp_path / n}" for n in ("first.db", "second.db"))
    try:
        a = await stores.get(first, user=("ns", "a"))
        assert await stores.get(first, user=("ns", "b")) is a
        await stores.get(second, user=("ns", "a"))  # a moved to another database
        assert stores.open_urls == 2  # b still uses the first
        await stores.forget("ns", "b")  # b deleted: nobody uses the first
        assert stores.open_urls == 1
        await stores.forget("ns", "a")
        assert stores.open_urls == 0
        assert await stores.get(first, user=("ns", "c")) is not a  # reopened on demand
    finally:
        await stores.close()


class _StalledKube(FakeKube):
    """Reading the AgentDeployment never finishes (a stalled pass)."""

    async def get(self, path: str, **_: Any) -> dict[str, Any] | None:
        await asyncio.sleep(3600)
        return None


async def test_a_stalled_pass_gives_its_slot_back_at_its_deadline(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scheduling, "PASS_DEADLINE_SECONDS", 0.3)
    metrics = OperatorMetrics()
    context = PassContext(_StalledKube(), Stores(), metrics, "op-0")  # type: ignore[arg-type]
    reconciler = Reconciler(context, resync_seconds=300, max_concurrent=1)
    t0 = time.monotonic()
    assert await reconciler.run_once("ns", "stuck") == scheduling.RETRY_SECONDS
    assert time.monotonic() - t0 < 2
    assert 'occurrence_operator_reconciles_total{result="timeout"} 1.0' in metrics.render()
    # the one slot is free again: the next pass of another object gets it at once
    assert await asyncio.wait_for(reconciler.run_once("ns", "next"), 2) == \
        scheduling.RETRY_SECONDS


async def test_an_operator_in_a_pod_refuses_a_tenants_sqlite_url() -> None:
    import base64

    from occurrence_operator.kube.secrets import SecretProblem, database_url
    from occurrence_operator.model.spec import SecretKeyRef

    kube = FakeKube()
    kube.put("/api/v1/namespaces/t/secrets/db", {"metadata": {"name": "db"}, "data": {
        "url": base64.b64encode(b"sqlite:////tmp/fill-the-operators-disk.db").decode()}})
    ref = SecretKeyRef(name="db")
    assert (await database_url(kube, "t", ref)).startswith("sqlite:")  # a local operator
    with pytest.raises(SecretProblem) as refused:
        await database_url(kube, "t", ref, allow_sqlite=False)  # type: ignore[arg-type]
    assert refused.value.reason == "InvalidDatabaseURL"
    assert "an AgentDeployment needs PostgreSQL" in str(refused.value)


class _NamespaceStalls:
    """Every read in namespace `slow` stalls (its database, say, never answers); in any
    other namespace the AgentDeployment is gone at once (a pass that ends)."""

    def __init__(self) -> None:
        self.stalled = 0

    async def get(self, path: str, **_: Any) -> dict[str, Any] | None:
        if "/namespaces/slow/" in path:
            self.stalled += 1
            await asyncio.sleep(3600)
        return None


async def test_one_namespace_holds_at_most_its_share_of_the_slots() -> None:
    kube = _NamespaceStalls()
    context = PassContext(kube, Stores(), OperatorMetrics(), "op-0")  # type: ignore[arg-type]
    reconciler = Reconciler(context, resync_seconds=300, max_concurrent=4)
    assert scheduling.namespace_share(4) == 2 and scheduling.namespace_share(1) == 1
    stuck = [asyncio.create_task(reconciler.run_once("slow", f"a{i}")) for i in range(10)]
    try:
        await asyncio.sleep(0.2)
        assert kube.stalled == 2  # its share; the eight others wait for it, holding nothing
        # another tenant's passes still run, two at a time and more
        done = await asyncio.wait_for(asyncio.gather(
            *(reconciler.run_once("fast", f"b{i}") for i in range(5))), 2)
        assert done == [None] * 5
        # serving one namespace, it is nobody's share: all four slots for it
        alone = Reconciler(context, resync_seconds=300, max_concurrent=4, one_namespace=True)
        stuck += [asyncio.create_task(alone.run_once("slow", f"c{i}")) for i in range(6)]
        await asyncio.sleep(0.2)
        assert kube.stalled == 2 + 4
    finally:
        for task in stuck:
            task.cancel()
        await asyncio.gather(*stuck, return_exceptions=True)


async def test_nothing_kept_per_agentdeployment_outlives_it() -> None:
    from occurrence_operator import autoscaling

    context = PassContext(_StalledKube(), Stores(), OperatorMetrics(),  # type: ignore[arg-type]
                          "op-0")
    reconciler = Reconciler(context, resync_seconds=300)
    for k in range(200):
        reconciler.trigger("ns", f"agd-{k}")
        context.retention_runs[f"ns/agd-{k}"] = 1.0
        context.autoscalers[f"uid-{k}"] = autoscaling.Memory()
        context.metrics.set_status("ns", f"agd-{k}", desired=1, ready=1, conditions=[])
    for k in range(200):
        reconciler.forget("ns", f"agd-{k}", f"uid-{k}")
    await asyncio.sleep(0)  # the pools' closing tasks (none were opened)
    assert reconciler._wake_states == {}
    assert context.retention_runs == {} and context.autoscalers == {}
    assert 'name="agd-' not in context.metrics.render()
