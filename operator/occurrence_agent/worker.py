"""The work loop: activate pending tasks, seed thoughts, run them through the handler.

Only this occurrence's work is touched (everything goes through its :class:`ScopedStore`).
A thought is completed with a guarded write (``expected_status=PROCESSING``): if a drain
released or moved it meanwhile the write changes nothing and the result is dropped, so
no thought is ever completed twice.

Crash windows (between activating a task and seeding its thought, between completing the
last thought and completing the task, between completing a pondering thought and adding
its follow-up) are closed by :meth:`Worker.sweep`, run at start and periodically: it
finishes what the thoughts of each active task say should have happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from typing import Any

from occurrence_agent.handlers import Decision, Handler
from occurrence_agent.journal import Journal
from occurrence_agent.metrics import Metrics
from occurrence_store.errors import NotOwnedError
from occurrence_store.models import Task, TaskStatus, Thought, ThoughtStatus
from occurrence_store.scoped import ScopedStore

log = logging.getLogger("occurrence_agent.worker")

_FINAL: dict[str, tuple[ThoughtStatus, TaskStatus]] = {
    "complete": (ThoughtStatus.COMPLETED, TaskStatus.COMPLETED),
    "fail": (ThoughtStatus.FAILED, TaskStatus.FAILED),
    "defer": (ThoughtStatus.DEFERRED, TaskStatus.DEFERRED),
}
_UNFINISHED = (ThoughtStatus.PENDING, ThoughtStatus.PROCESSING)
SWEEP_EVERY = 20  # loop iterations between sweeps


class Worker:
    def __init__(self, scoped: ScopedStore, handler: Handler, *, max_active_tasks: int,
                 concurrency: int, poll_interval: float, metrics: Metrics,
                 journal: Journal, on_error: Callable[[BaseException], None] | None = None
                 ) -> None:
        self.scoped = scoped
        self.handler = handler
        self.max_active_tasks = max_active_tasks
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self.metrics = metrics
        self.journal = journal
        self._on_error = on_error
        self._paused = False
        self._stopped = False
        self._wake = asyncio.Event()
        self._step_lock = asyncio.Lock()
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._loops = 0

    # ---------------------------------------------------------------- control

    def poke(self) -> None:
        """New work may be there (a task was submitted): do not wait for the poll."""
        self._wake.set()

    @property
    def paused(self) -> bool:
        return self._paused

    def pause(self) -> None:
        """Take no new work (in-flight work goes on); :meth:`quiesce` also waits for it."""
        self._paused = True

    def resume(self) -> None:
        self._paused = False
        self.poke()

    async def quiesce(self, timeout: float) -> dict[str, int]:
        """Stop taking work; let in-flight thoughts finish within ``timeout``, then cancel
        the rest and release every thought still PROCESSING back to pending."""
        self._paused = True
        self.poke()
        finished_in_time = True
        try:
            await asyncio.wait_for(self._step_lock.acquire(), timeout)
        except TimeoutError:
            finished_in_time = False
            for task in list(self._inflight.values()):
                task.cancel()
            await self._step_lock.acquire()
        try:
            released = await self.scoped.reset_processing_thoughts()
        finally:
            self._step_lock.release()
        if released:
            self.metrics.inc("occurrence_thoughts_processed_total", released, result="released")
        log.info("quiesced: in-flight work %s, %d thought(s) released",
                 "finished" if finished_in_time else "cancelled at the drain timeout", released,
                 extra={"event": "worker.quiesced", "released": released})
        return {"released": released, "finished_in_time": int(finished_in_time)}

    def stop(self) -> None:
        self._stopped = True
        self.poke()

    # ------------------------------------------------------------------- loop

    async def run(self) -> None:
        await self._guarded(self.sweep)
        while not self._stopped:
            did_work = False
            if not self._paused:
                async with self._step_lock:
                    if not self._paused and not self._stopped:
                        did_work = bool(await self._guarded(self.step))
                        self._loops += 1
                        if self._loops % SWEEP_EVERY == 0:
                            await self._guarded(self.sweep)
            if not did_work:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_interval)

    async def _guarded(self, step: Callable[[], Any]) -> Any:
        try:
            return await step()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a database hiccup must not kill the loop
            log.warning("work loop step failed: %s", exc, exc_info=True,
                        extra={"event": "worker.error"})
            if self._on_error is not None:
                self._on_error(exc)
            await asyncio.sleep(self.poll_interval)
            return 0

    async def step(self) -> int:
        """One round: activate, seed, claim and run a batch. Returns thoughts worked."""
        await self.activate()
        claimed = await self.scoped.claim_pending_thoughts(self.concurrency)
        if not claimed:
            return 0
        tasks = {t.thought_id: asyncio.create_task(self._process(t)) for t in claimed}
        self._inflight.update(tasks)
        try:
            await asyncio.gather(*tasks.values(), return_exceptions=True)
        finally:
            for thought_id in tasks:
                self._inflight.pop(thought_id, None)
        return len(claimed)

    async def activate(self) -> list[Task]:
        room = self.max_active_tasks - await self.scoped.count_tasks(TaskStatus.ACTIVE)
        if room <= 0:
            return []
        activated = await self.scoped.activate_pending_tasks(room)
        for task in activated:
            await self._seed(task)
        if activated:
            log.debug("activated %d task(s)", len(activated), extra={"event": "worker.activated"})
        return activated

    async def _seed(self, task: Task) -> None:
        with contextlib.suppress(NotOwnedError):  # moved away meanwhile: not ours to seed
            await self.scoped.add_thought(task.task_id, task.description,
                                          thought_type="seed", thought_depth=0)

    # ---------------------------------------------------------------- thoughts

    async def _process(self, thought: Thought) -> None:
        task = await self.scoped.get_task(thought.source_task_id)
        if task is None:  # moved away between claim and now
            self._conflict(thought, "task moved away")
            return
        self.journal.record("thought_started", thought_id=thought.thought_id,
                            task_id=task.task_id)
        try:
            decision = await self.handler.handle(task, thought)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("handler failed on thought %s", thought.thought_id,
                          extra={"event": "thought.handler_error", "task_id": task.task_id})
            decision = Decision("fail", {"error": f"{type(exc).__name__}: {exc}"[:500]})
        await self._finish(task, thought, decision)

    async def _finish(self, task: Task, thought: Thought, decision: Decision) -> None:
        thought_status = _FINAL.get(decision.action, (ThoughtStatus.COMPLETED, None))[0]
        final_action: dict[str, Any] = {
            "action": decision.action, "result": decision.result,
            "by": self.scoped.occurrence_id, "pid": os.getpid(),
        }
        if decision.action == "ponder":
            final_action["follow_up"] = decision.follow_up or ""
        landed = await self.scoped.update_thought_status(
            thought.thought_id, thought_status, final_action=final_action,
            expected_status=ThoughtStatus.PROCESSING,
        )
        if not landed:
            self._conflict(thought, "released or moved before completion")
            return
        self.journal.record("thought_completed", thought_id=thought.thought_id,
                            task_id=task.task_id, action=decision.action)
        self.metrics.inc("occurrence_thoughts_processed_total", result=thought_status.value)
        log.debug("thought %s %s", thought.thought_id, decision.action,
                  extra={"event": "thought.finished", "task_id": task.task_id})
        await self._after(task, thought, final_action)

    async def _after(self, task: Task, thought: Thought, final_action: dict[str, Any]) -> None:
        """What a finished thought implies for its task: a follow-up, or the task's end."""
        action = final_action.get("action")
        if action == "ponder":
            with contextlib.suppress(NotOwnedError):
                await self.scoped.add_thought(
                    task.task_id, str(final_action.get("follow_up") or "follow-up"),
                    thought_type="follow_up", thought_depth=thought.thought_depth + 1,
                    parent_thought_id=thought.thought_id,
                )
            return
        task_status = _FINAL.get(str(action), (None, TaskStatus.COMPLETED))[1]
        outcome = {"action": action, "result": final_action.get("result", {}),
                   "by": self.scoped.occurrence_id, "thought_id": thought.thought_id}
        if await self.scoped.update_task_status(task.task_id, task_status, outcome=outcome):
            self.metrics.inc("occurrence_tasks_finished_total", status=task_status.value)
            self.journal.record("task_finished", task_id=task.task_id, status=task_status.value)
            log.info("task %s %s", task.task_id, task_status.value,
                     extra={"event": "task.finished", "task_id": task.task_id,
                            "status": task_status.value})

    def _conflict(self, thought: Thought, why: str) -> None:
        self.metrics.inc("occurrence_claim_conflicts_total", kind="thought")
        self.journal.record("thought_lost", thought_id=thought.thought_id,
                            task_id=thought.source_task_id)
        log.info("dropped result of thought %s: %s", thought.thought_id, why,
                 extra={"event": "thought.conflict", "task_id": thought.source_task_id})

    # ------------------------------------------------------------------- sweep

    async def sweep(self) -> int:
        """Repair active tasks whose thoughts are all finished (crash windows, transfers).

        Must run when no thought of this process is in flight (the loop holds the lock).
        """
        repaired = 0
        for task in await self.scoped.get_tasks_by_status(TaskStatus.ACTIVE):
            thoughts = await self.scoped.get_thoughts_by_task(task.task_id)
            if any(t.status in _UNFINISHED for t in thoughts):
                continue
            if not thoughts:
                await self._seed(task)
            else:
                last = max(thoughts, key=lambda t: (t.thought_depth, t.created_at, t.thought_id))
                action = last.final_action.get("action")
                if action is None:  # finished by someone else without a verdict: complete
                    action = {"failed": "fail", "deferred": "defer"}.get(
                        last.status.value, "complete")
                await self._after(task, last, {**last.final_action, "action": action})
            repaired += 1
        if repaired:
            log.info("sweep repaired %d active task(s)", repaired,
                     extra={"event": "worker.sweep", "repaired": repaired})
        return repaired
