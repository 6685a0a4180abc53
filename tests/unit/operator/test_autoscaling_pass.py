"""The autoscaler inside a reconcile pass, against `FakeKube` and a SQLite store: the size
goes through the scale subresource and the same pass sizes the StatefulSet from it; a
second autoscaler stops it; autoscaling off removes its status."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from occurrence_operator.kube.metrics import OperatorMetrics
from occurrence_operator.kube.shared_stores import Stores
from occurrence_operator.reconcile.passcontext import PassContext
from occurrence_operator.reconcile.passes import ReconcilePass
from occurrence_store import Store
from tests.unit.operator.fake_kube import FakeKube
from tests.unit.operator.pass_scenario import AD, NAME, NS, SECRET, STS

HPA = f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers/other"
AUTOSCALING = {"minReplicas": 1, "maxReplicas": 5, "targetBacklogPerOccurrence": 10,
               "intervalSeconds": 1}


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[tuple[FakeKube, PassContext, Store]]:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    kube = FakeKube()
    kube.put(SECRET, {"metadata": {"name": "db"},
                      "data": {"url": base64.b64encode(url.encode()).decode()}})
    kube.put(AD, {
        "apiVersion": "occurrence.dev/v1alpha1", "kind": "AgentDeployment",
        "metadata": {"name": NAME, "namespace": NS, "uid": "ad-uid", "generation": 1},
        "spec": {"replicas": 1, "image": "registry.example/agent:1",
                 "database": {"secretRef": {"name": "db"}}, "migrations": {"enabled": False},
                 "autoscaling": AUTOSCALING}})
    stores = Stores()
    store = await Store.open(url, migrate=True)
    context = PassContext(kube, stores, OperatorMetrics(), "operator-0")  # type: ignore[arg-type]
    try:
        yield kube, context, store
    finally:
        await store.close()
        await stores.close()


async def _pass(kube: FakeKube, context: PassContext, *, measure: bool = True) -> None:
    memory = context.autoscalers.get("ad-uid")
    if memory is not None and measure:  # as if the interval had passed
        memory.measured_at = memory.conflict_checked_at = None
    body = await kube.get(AD)
    assert body is not None
    await ReconcilePass(context, body).run()


def _scale_writes(kube: FakeKube) -> list[int]:
    return [body["spec"]["replicas"] for verb, path, body in kube.writes
            if verb == "PATCH" and path == AD + "/scale"]


def _status(kube: FakeKube) -> dict[str, Any]:
    return dict(kube.objects[AD].get("status") or {})


async def test_the_pass_scales_through_the_subresource_and_sizes_from_it(world: Any) -> None:
    kube, context, store = world
    await _pass(kube, context)
    assert kube.objects[STS]["spec"]["replicas"] == 1
    assert _status(kube)["autoscaling"]["reason"] == "WithinTarget"
    await store.scope(f"{NAME}-0").add_tasks([f"t{i}" for i in range(45)])

    await _pass(kube, context)
    assert _scale_writes(kube) == [5]  # ceil(45 / 10), within one step of 4
    assert kube.objects[AD]["spec"]["replicas"] == 5
    assert kube.objects[STS]["spec"]["replicas"] == 5  # the same pass used the new size
    decided = _status(kube)["autoscaling"]
    assert (decided["observedBacklog"], decided["desiredReplicas"], decided["reason"]) == (
        45, 5, "ScaledUp")
    assert "lastScaleTime" in decided
    assert ("Normal", "ScaledUp") in kube.events()
    assert "occurrence_operator_autoscaler_scales_total" in context.metrics.render()

    await _pass(kube, context, measure=False)  # before the interval: nothing new is written
    assert _scale_writes(kube) == [5]


async def test_a_second_autoscaler_stops_it(world: Any) -> None:
    kube, context, store = world
    kube.put(HPA, {"metadata": {"name": "other"}, "spec": {"scaleTargetRef": {
        "apiVersion": "occurrence.dev/v1alpha1", "kind": "AgentDeployment", "name": NAME}}})
    await store.registry.claim([f"{NAME}-0"], agent_id=f"{NS}/{NAME}", owner_uid="ad-uid")
    await store.scope(f"{NAME}-0").add_tasks([f"t{i}" for i in range(45)])
    await _pass(kube, context)
    assert _scale_writes(kube) == []
    degraded = [c for c in _status(kube)["conditions"] if c["type"] == "Degraded"]
    assert [(c["status"], c["reason"]) for c in degraded] == [("True", "AutoscalerConflict")]
    assert f"HorizontalPodAutoscaler {NS}/other" in degraded[0]["message"]
    assert ("Warning", "AutoscalerConflict") in kube.events()

    kube.delete_object(HPA)
    await _pass(kube, context)
    assert _scale_writes(kube) == [5]


async def test_an_hpa_for_another_target_is_no_conflict(world: Any) -> None:
    kube, context, _ = world
    kube.put(HPA, {"metadata": {"name": "other"}, "spec": {"scaleTargetRef": {
        "apiVersion": "apps/v1", "kind": "Deployment", "name": NAME}}})
    await _pass(kube, context)
    assert _status(kube)["autoscaling"]["reason"] == "WithinTarget"


async def test_turning_autoscaling_off_removes_its_status(world: Any) -> None:
    kube, context, _ = world
    await _pass(kube, context)
    assert "autoscaling" in _status(kube)
    del kube.objects[AD]["spec"]["autoscaling"]
    await _pass(kube, context)
    assert "autoscaling" not in _status(kube)



async def test_a_standing_conflict_is_looked_at_again_once_a_minute_not_every_interval(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from occurrence_operator.autoscaling import controller
    from occurrence_operator.kube.agd_object import AgentDeploymentObject
    from occurrence_operator.model.spec import AutoscalingSpec

    looks: list[float] = []

    async def other_autoscaler(kube: object, namespace: str, name: str) -> str:
        looks.append(now)
        return f"HorizontalPodAutoscaler {namespace}/other"

    monkeypatch.setattr(controller, "find_other_autoscaler", other_autoscaler)
    agd = AgentDeploymentObject(FakeKube(), {"metadata": {  # type: ignore[arg-type]
        "name": NAME, "namespace": NS, "uid": "ad-uid"}}, "test")
    memory = controller.Memory()
    spec = AutoscalingSpec.model_validate(AUTOSCALING)  # intervalSeconds 1
    reasons = set()
    for now in (1000.0 + second for second in range(130)):  # a pass every second
        report = await controller.Autoscaler(agd, spec, memory, OperatorMetrics(),
                                             f"{NS}/{NAME}").run(
            None, current=1, draining=False, now=now)  # type: ignore[arg-type]
        reasons.add(report.status.reason if report.status else None)
    assert looks == [1000.0, 1060.0, 1120.0]  # two LISTs each time, not every second
    assert reasons == {"AutoscalerConflict"}
