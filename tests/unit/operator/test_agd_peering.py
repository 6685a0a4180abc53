"""Peering: the priority tie-breaker, the peering objects, and the pause gate."""

from __future__ import annotations

import asyncio

import pytest

from occurrence_operator.cli import PRIORITY_SPREAD, build_parser, peering_priority
from occurrence_operator.kube import may_act
from occurrence_operator.kube.peering import peering_objects


def test_same_priority_replicas_get_distinct_kopf_priorities_and_order_is_kept() -> None:
    assert peering_priority(0, 7) == 7
    assert peering_priority(2, 999) == 2 * PRIORITY_SPREAD + 999
    # any tie-breaker of a higher --priority beats every tie-breaker of a lower one
    assert peering_priority(1, 0) > peering_priority(0, PRIORITY_SPREAD - 1)
    drawn = {peering_priority(0) for _ in range(50)}
    assert len(drawn) > 1 and all(0 <= p < PRIORITY_SPREAD for p in drawn)


def test_cli_accepts_peering_and_priority() -> None:
    args = build_parser().parse_args(["-n", "a", "--peering", "p", "--priority", "3"])
    assert (args.peering, args.priority, args.namespaces) == ("p", 3, ["a"])


def test_peering_objects_cluster_wide_and_per_namespace() -> None:
    [(path, body)] = peering_objects("occ", [], clusterwide=True)
    assert path == "/apis/kopf.dev/v1/clusterkopfpeerings"
    assert body["kind"] == "ClusterKopfPeering" and body["metadata"] == {"name": "occ"}
    found = peering_objects("occ", ["a", "team-*", "b", "a"], clusterwide=False)
    assert [p for p, _ in found] == [
        "/apis/kopf.dev/v1/namespaces/a/kopfpeerings",
        "/apis/kopf.dev/v1/namespaces/b/kopfpeerings",
    ]
    assert all(b["kind"] == "KopfPeering" for _, b in found)


async def test_gate_interrupts_only_the_bound_task_once_stopped() -> None:
    stopped = False
    assert may_act.allowed()  # unbound (no daemon): always

    async def worker() -> str:
        token = may_act.bind(lambda: not stopped)
        try:
            may_act.check()
            await asyncio.sleep(0.01)
            may_act.check()
            return "finished"
        finally:
            may_act.unbind(token)

    assert await asyncio.create_task(worker()) == "finished"
    task = asyncio.create_task(worker())
    await asyncio.sleep(0)
    stopped = True
    with pytest.raises(may_act.Interrupted):
        await task
    assert may_act.allowed()  # the caller's context was never bound
    assert not issubclass(may_act.Interrupted, Exception)  # not swallowed by `except Exception`
