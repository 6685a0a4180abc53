"""Reconcile passes over a whole life of an AgentDeployment (pass_scenario.py), in memory.

The golden file is every API write the operator made, in order, with times and the
replica's name normalized. It was first recorded before the reconcile was split into pass /
scheduling / migrations / status derivation, and re-recorded (UPDATE_GOLDEN=1) only where
behaviour changed on purpose: the rendered NetworkPolicy and token Secret, the spec's
maxima, `status.backlog` (in writes that were made anyway). A restructuring (the split,
the drain's `Sizing`) leaves it byte for byte as it is; `git log` on the file names every
re-recording and why.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from occurrence_operator.metrics import OperatorMetrics
from occurrence_operator.passcontext import PassContext
from occurrence_operator.reconcile import ReconcilePass
from occurrence_operator.stores import Stores
from tests.unit.operator.fake_kube import FakeKube
from tests.unit.operator.pass_scenario import AD, scenario

GOLDEN = Path(__file__).parent / "golden" / "pass-scenario-writes.json"


def normalized(writes: list[Any]) -> str:
    text = json.dumps(writes, indent=1, sort_keys=True)
    text = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", "TIME", text)
    text = re.sub(r'"reportingInstance": "[^"]*"', '"reportingInstance": "X"', text)
    # the token Secret's values are random: only their presence is pinned
    text = re.sub(r'"(admin|work)": "[A-Za-z0-9+/=]{40,}"', r'"\1": "TOKEN"', text)
    return re.sub(r'"heartbeatAgeSeconds": \d+', '"heartbeatAgeSeconds": N', text) + "\n"


@pytest.fixture
async def stores() -> AsyncIterator[Stores]:
    stores = Stores()
    try:
        yield stores
    finally:
        await stores.close()


async def _run(tmp_path: Path, stores: Stores) -> tuple[FakeKube, OperatorMetrics]:
    metrics = OperatorMetrics()

    async def run_pass(kube: FakeKube, stores_: Any, ad: dict[str, Any]) -> float | None:
        context = PassContext(kube, stores_, metrics, "operator-0")  # type: ignore[arg-type]
        return await ReconcilePass(context, ad).run()

    kube = await scenario(run_pass, f"sqlite:///{tmp_path / 'db.sqlite'}", stores)
    return kube, metrics


async def test_the_writes_are_those_of_the_golden_file(tmp_path: Path, stores: Stores) -> None:
    kube, _ = await _run(tmp_path, stores)
    text = normalized(kube.writes)
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()


async def test_milestones_and_final_status(tmp_path: Path, stores: Stores) -> None:
    kube, metrics = await _run(tmp_path, stores)
    reasons = [reason for _, reason in kube.events()]
    assert reasons[:3] == ["TokensCreated", "StatefulSetCreated", "Ready"]
    for earlier, later in [("DrainStarted", "DrainComplete"), ("DrainComplete", "Rebalanced"),
                           ("Rebalanced", "SkipDrainIgnored"),
                           ("MigrationsStarted", "MigrationsSucceeded"),
                           ("DatabaseUnavailable", "DrainBypassed")]:
        assert reasons.index(earlier) < reasons.index(later), (earlier, later)
    status = kube.objects[AD]["status"]
    assert status["phase"] == "Degraded" and status["scaleDown"]["phase"] == "Done"
    assert status["rebalance"]["phase"] == "Done" and status["rebalance"]["moved"] == 4
    assert "annotations" not in kube.objects[AD]["metadata"] or not (
        kube.objects[AD]["metadata"]["annotations"])
    transferred = sum(sample.value for family in metrics.registry.collect()
                      if family.name == "occurrence_operator_tasks_transferred"
                      for sample in family.samples if sample.name.endswith("_total"))
    assert transferred == 13
