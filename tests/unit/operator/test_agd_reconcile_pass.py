"""Reconcile passes over a whole life of an AgentDeployment (pass_scenario.py), in memory.

The golden file is every API write the operator made, pass by pass: one entry per named step
of the scenario (in order), each holding that pass's writes with times and the replica's
name normalized. A difference fails on the first step that differs, by name, with only that
step's writes. It is re-recorded (UPDATE_GOLDEN=1) only where behaviour changes on purpose;
`git log` on the file names every re-recording and why. A restructuring leaves it byte for
byte as it is.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from occurrence_operator.kube.metrics import OperatorMetrics
from occurrence_operator.kube.shared_stores import Stores
from occurrence_operator.reconcile.passcontext import PassContext
from occurrence_operator.reconcile.passes import ReconcilePass
from tests.unit.operator.fake_kube import FakeKube
from tests.unit.operator.pass_scenario import AD, Step, scenario

GOLDEN = Path(__file__).parent / "golden" / "pass-scenario-writes.json"


def normalized(writes: Any) -> str:
    text = json.dumps(writes, indent=1, sort_keys=False)
    text = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", "TIME", text)
    text = re.sub(r'"reportingInstance": "[^"]*"', '"reportingInstance": "X"', text)
    # the token Secret's values are random: only their presence is pinned
    text = re.sub(r'"(admin|work)": "[A-Za-z0-9+/=]{40,}"', r'"\1": "TOKEN"', text)
    return re.sub(r'"heartbeatAgeSeconds": \d+', '"heartbeatAgeSeconds": "N"', text) + "\n"


@pytest.fixture
async def stores() -> AsyncIterator[Stores]:
    stores = Stores()
    try:
        yield stores
    finally:
        await stores.close()


async def _run(tmp_path: Path, stores: Stores
               ) -> tuple[FakeKube, list[Step], OperatorMetrics]:
    metrics = OperatorMetrics()

    async def run_pass(kube: FakeKube, stores_: Any, body: dict[str, Any]) -> float | None:
        context = PassContext(kube, stores_, metrics, "operator-0")  # type: ignore[arg-type]
        return await ReconcilePass(context, body).run()

    kube, steps = await scenario(run_pass, f"sqlite:///{tmp_path / 'db.sqlite'}", stores)
    return kube, steps, metrics


def _sorted_keys(value: Any) -> Any:
    """Every mapping's keys sorted (a write's body), the step order kept."""
    return json.loads(json.dumps(value, sort_keys=True))


async def test_each_pass_makes_the_writes_of_its_golden_step(tmp_path: Path,
                                                              stores: Stores) -> None:
    kube, steps, _ = await _run(tmp_path, stores)
    assert [s.end for s in steps[:-1]] == [s.start for s in steps[1:]]
    assert steps[0].start == 0 and steps[-1].end == len(kube.writes), "a write outside a pass"
    recorded = {s.name: _sorted_keys(kube.writes[s.start:s.end]) for s in steps}
    assert len(recorded) == len(steps), "two steps share a name"
    text = normalized(recorded)
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(text)
    golden = json.loads(GOLDEN.read_text())
    actual = json.loads(text)
    assert list(actual) == list(golden), "the scenario's steps changed"
    for name in golden:
        assert actual[name] == golden[name], f"step {name!r}: its writes differ from the golden"
    assert text == GOLDEN.read_text()


async def test_milestones_and_final_status(tmp_path: Path, stores: Stores) -> None:
    kube, _, metrics = await _run(tmp_path, stores)
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
