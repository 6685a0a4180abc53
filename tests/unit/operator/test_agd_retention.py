"""Retention as the pass runs it: at most once an hour per agent, never with 0 days."""

from __future__ import annotations

from pathlib import Path

from occurrence_operator.model.spec import RetentionSpec
from occurrence_operator.reconcile.retention import INTERVAL_SECONDS, retain_if_due
from occurrence_store import Store, TaskStatus


async def test_retention_runs_once_an_hour_and_reports_what_it_deleted(tmp_path: Path) -> None:
    store = await Store.open(f"sqlite:///{tmp_path / 'r.db'}", migrate=True)
    try:
        await store.registry.register("r-0", agent_id="ns/r")
        scope = store.scope("r-0")
        for i in range(3):
            task = await scope.add_task(f"t{i}")
            await scope.update_task_status(task.task_id, TaskStatus.COMPLETED)
        store.clock.advance(days=2)
        now = [1000.0]
        runs: dict[str, float] = {}
        spec = RetentionSpec.model_validate({"finishedDays": 1})
        note = await retain_if_due(store, "ns/r", spec, runs, clock=lambda: now[0])
        assert note is not None and note.startswith("deleted 3 finished task(s) older than 1")
        task = await scope.add_task("late")
        await scope.update_task_status(task.task_id, TaskStatus.COMPLETED)
        store.clock.advance(days=2)
        now[0] += INTERVAL_SECONDS / 2  # not yet: the task stays
        assert await retain_if_due(store, "ns/r", spec, runs, clock=lambda: now[0]) is None
        assert await scope.get_task(task.task_id) is not None
        now[0] += INTERVAL_SECONDS
        assert await retain_if_due(store, "ns/r", spec, runs, clock=lambda: now[0])
        assert await scope.get_task(task.task_id) is None
        keep = RetentionSpec.model_validate({"finishedDays": 0})
        now[0] += 10 * INTERVAL_SECONDS
        assert await retain_if_due(store, "ns/r", keep, {}, clock=lambda: now[0]) is None
    finally:
        await store.close()
