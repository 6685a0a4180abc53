"""The work loop: activate pending tasks, seed thoughts, run them through the handler.

Only this occurrence's work is touched (everything goes through its :class:`ScopedStore`).
A thought is completed with a guarded write (``expected_status=PROCESSING``): if a drain
released or moved it meanwhile the write changes nothing and the result is dropped, so
no thought is ever completed twice.

No error is silent and no thought is left behind:

- every error of an attempt is logged (with the occurrence, task and thought) and counted in
  ``occurrence_worker_errors_total{stage}``; the thought goes back to pending with backoff,
  or FAILED with the reason once its attempts are used up (:mod:`occurrence_agent.retry`);
- if even that write fails, the thought stays PROCESSING with nobody working on it: the
  periodic :meth:`Worker.sweep` reclaims every PROCESSING thought of this occurrence that no
  coroutine of this process is working on;
- :attr:`Worker.healthy` turns false after consecutive database failures, and the runtime's
  readiness with it.

Crash windows (between activating a task and seeding its thought, between completing the
last thought and completing the task, between completing a pondering thought and adding
its follow-up) are closed by the same sweep: it finishes what the thoughts of each active
task say should have happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

from occurrence_agent.handlers import Decision, Handler
from occurrence_agent.journal import Journal
from occurrence_agent.metrics import AgentMetrics
from occurrence_agent.retry import RetryPolicy, Stage, retry_after
from occurrence_store.errors import NotOwnedError
from occurrence_store.models import InFlightRecovery, Task, TaskStatus, Thought, ThoughtStatus
from occurrence_store.scoped import ScopedStore

log = logging.getLogger("occurrence_agent.worker")

_FINAL: dict[str, tuple[ThoughtStatus, TaskStatus]] = {
    "complete": (ThoughtStatus.COMPLETED, TaskStatus.COMPLETED),
    "fail": (ThoughtStatus.FAILED, TaskStatus.FAILED),
    "defer": (ThoughtStatus.DEFERRED, TaskStatus.DEFERRED),
}
_UNFINISHED = (ThoughtStatus.PENDING, ThoughtStatus.PROCESSING)


def _thought_status(action: object) -> ThoughtStatus:
    """The status a thought is recorded with for a handler's action (``ponder``: completed)."""
    return _FINAL.get(str(action), (ThoughtStatus.COMPLETED, None))[0]


_RECORDED = (ThoughtStatus.COMPLETED, ThoughtStatus.FAILED, ThoughtStatus.DEFERRED)
SWEEP_EVERY = 20  # loop iterations between sweeps
UNHEALTHY_AFTER = 3
"""Consecutive failed database operations after which the worker reports itself unhealthy."""


@dataclass
class _Attempt:
    """How far one attempt at a thought got (what its error handling needs to know)."""

    stage: Stage = Stage.LOAD
    task: Task | None = None
    final_action: dict[str, Any] | None = None


@dataclass(eq=False)
class Worker:
    """Claims this occurrence's work and runs its thoughts through the handler, at most
    ``concurrency`` at once and ``max_active_tasks`` tasks active."""

    scoped: ScopedStore
    handler: Handler
    _: KW_ONLY
    max_active_tasks: int
    concurrency: int
    poll_interval: float
    metrics: AgentMetrics
    journal: Journal
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    recovery: InFlightRecovery = InFlightRecovery.RETRY
    on_error: Callable[[BaseException], None] | None = None
    _paused: bool = field(default=False, init=False)
    _stopped: bool = field(default=False, init=False)
    _wake: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _step_lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)
    _inflight: dict[str, asyncio.Task[None]] = field(default_factory=dict, init=False)
    _loops: int = field(default=0, init=False)
    _failures: int = field(default=0, init=False)
    _last_error: str = field(default="", init=False)

    def __post_init__(self) -> None:
        self.recovery = InFlightRecovery(self.recovery)  # also from its value ("retry")

    # ---------------------------------------------------------------- control

    def poke(self) -> None:
        """New work may be there (a task was submitted): do not wait for the poll."""
        self._wake.set()

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def healthy(self) -> bool:
        """False after :data:`UNHEALTHY_AFTER` database failures in a row (reset by a success)."""
        return self._failures < UNHEALTHY_AFTER

    @property
    def last_error(self) -> str:
        return self._last_error

    @property
    def loops(self) -> int:
        """Rounds of the work loop so far (the first sweep runs before the first)."""
        return self._loops

    def pause(self) -> None:
        """Take no new work (in-flight work goes on); :meth:`quiesce` also waits for it."""
        self._paused = True

    def resume(self) -> None:
        self._paused = False
        self.poke()

    async def settled(self) -> None:
        """Wait for the step in progress, if any: after :meth:`pause` no new one starts, so
        from then on nothing is activated or seeded until :meth:`resume`."""
        async with self._step_lock:
            pass

    async def quiesce(self, timeout: float) -> dict[str, int]:
        """Stop taking work; let in-flight thoughts finish within ``timeout``, then cancel
        the rest and take every thought still PROCESSING out of processing (back to pending,
        or FAILED under ``recovery=fail``)."""
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
            released = await self._release_stranded("released: in flight when the occurrence "
                                                    "was fenced or stopped", "released")
        finally:
            self._step_lock.release()
        self._log(logging.INFO, "quiesced: in-flight work %s, %d thought(s) released",
                  "finished" if finished_in_time else "cancelled at the drain timeout", released,
                  event="worker.quiesced", released=released)
        return {"released": released, "finished_in_time": int(finished_in_time)}

    def stop(self) -> None:
        self._stopped = True
        self.poke()

    # ------------------------------------------------------------------- loop

    async def run(self) -> None:
        await self._guarded("sweep", self.sweep)
        while not self._stopped:
            did_work = False
            if not self._paused:
                async with self._step_lock:
                    if not self._paused and not self._stopped:
                        did_work = bool(await self._guarded("step", self.step))
                        self._loops += 1
                        if self._loops % SWEEP_EVERY == 0:
                            await self._guarded("sweep", self.sweep)
            if not did_work:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_interval)

    async def _guarded(self, stage: str, step: Callable[[], Awaitable[Any]]) -> Any:
        try:
            result = await step()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a database hiccup must not kill the loop
            self._failed(stage, exc)
            await asyncio.sleep(self.poll_interval)
            return 0
        self._failures = 0
        return result

    def _failed(self, stage: str, exc: BaseException, thought: Thought | None = None) -> None:
        """Every error of the loop: one log line and one count, and the health it costs."""
        self._failures += 1
        self._last_error = f"{stage}: {type(exc).__name__}: {exc}"[:300]
        self.metrics.inc("occurrence_worker_errors_total", stage=stage)
        extra: dict[str, Any] = {"event": "worker.error", "stage": stage,
                                 "consecutive_failures": self._failures}
        if thought is not None:
            extra.update(thought_id=thought.thought_id, task_id=thought.source_task_id,
                         attempt=thought.attempts)
        self._log(logging.WARNING, "work loop %s failed: %s: %s", stage, type(exc).__name__, exc,
                  exc_info=exc, **extra)
        if self.on_error is not None:
            self.on_error(exc)

    def _log(self, level: int, msg: str, *args: Any, exc_info: Any = None, **extra: Any) -> None:
        log.log(level, msg, *args, exc_info=exc_info,
                extra={"occurrence_id": self.scoped.occurrence_id, **extra})

    async def step(self) -> int:
        """One round: activate, seed, claim and run a batch. Returns thoughts worked."""
        await self.activate()
        claimed = await self.scoped.claim_pending_thoughts(self.concurrency)
        if not claimed:
            return 0
        tasks = {t.thought_id: asyncio.create_task(self._process(t)) for t in claimed}
        self._inflight.update(tasks)
        try:
            results = await asyncio.gather(*tasks.values(), return_exceptions=True)
        finally:
            for thought_id in tasks:
                self._inflight.pop(thought_id, None)
        for thought, result in zip(claimed, results, strict=True):
            if isinstance(result, Exception):  # _process handles its errors: this is a bug
                self._failed("process", result, thought)
        return len(claimed)

    async def activate(self) -> list[Task]:
        room = self.max_active_tasks - await self.scoped.count_tasks(TaskStatus.ACTIVE)
        if room <= 0:
            return []
        activated = await self.scoped.activate_pending_tasks(room)
        for task in activated:
            await self._seed(task)
        if activated:
            self._log(logging.DEBUG, "activated %d task(s)", len(activated),
                      event="worker.activated")
        return activated

    async def _seed(self, task: Task) -> None:
        try:
            await self.scoped.add_thought(task.task_id, task.description,
                                          thought_type="seed", thought_depth=0)
        except NotOwnedError:  # moved away meanwhile: not ours to seed (the store logged it)
            self.metrics.inc("occurrence_claim_conflicts_total", kind="seed")

    # ---------------------------------------------------------------- thoughts

    async def _process(self, thought: Thought) -> None:
        attempt = _Attempt()
        try:
            await self._attempt(thought, attempt)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._attempt_failed(thought, attempt, exc)

    async def _attempt(self, thought: Thought, attempt: _Attempt) -> None:
        task = await self.scoped.get_task(thought.source_task_id)
        if task is None:  # moved away between claim and now
            self._conflict(thought, "task moved away")
            return
        attempt.task = task
        self.journal.record("thought_started", thought_id=thought.thought_id,
                            task_id=task.task_id, attempt=thought.attempts)
        attempt.stage = Stage.HANDLE
        decision = await self.handler.handle(task, thought)
        attempt.stage = Stage.FINISH
        attempt.final_action = self._final_action(thought, decision)
        landed = await self.scoped.update_thought_status(
            thought.thought_id, _thought_status(decision.action),
            final_action=attempt.final_action, expected_status=ThoughtStatus.PROCESSING,
        )
        if not landed:
            self._conflict(thought, "released or moved before completion")
            return
        attempt.stage = Stage.AFTER
        await self._recorded(task.task_id, thought, attempt.final_action)

    def _final_action(self, thought: Thought, decision: Decision) -> dict[str, Any]:
        final_action: dict[str, Any] = {
            "action": decision.action, "result": decision.result,
            "by": self.scoped.occurrence_id, "pid": os.getpid(), "attempt": thought.attempts,
        }
        if decision.action == "ponder":
            final_action["follow_up"] = decision.follow_up or ""
        return final_action

    async def _recorded(self, task_id: str, thought: Thought,
                        final_action: dict[str, Any]) -> None:
        """The thought's outcome is in the database: count it, then act on it."""
        status = _thought_status(final_action.get("action"))
        self.journal.record("thought_completed", thought_id=thought.thought_id, task_id=task_id,
                            action=final_action.get("action"), attempt=thought.attempts)
        self.metrics.inc("occurrence_thoughts_processed_total", result=status.value)
        self._log(logging.DEBUG, "thought %s %s", thought.thought_id, final_action.get("action"),
                  event="thought.finished", task_id=task_id)
        await self._after(task_id, thought, final_action)

    async def _attempt_failed(self, thought: Thought, attempt: _Attempt,
                              exc: Exception) -> None:
        """An attempt broke: log and count it, then give the thought back (or fail it).

        If giving it back fails too, the thought stays PROCESSING with no coroutine on it,
        and the next sweep reclaims it.
        """
        if attempt.stage is Stage.HANDLE:  # the handler's own failure, not the database's
            self.metrics.inc("occurrence_worker_errors_total", stage="handler")
            self._log(logging.ERROR, "handler failed on thought %s (attempt %d)",
                      thought.thought_id, thought.attempts, exc_info=exc,
                      event="thought.handler_error", task_id=thought.source_task_id,
                      thought_id=thought.thought_id, attempt=thought.attempts)
        else:
            self._failed(attempt.stage.value, exc, thought)
        reason = f"attempt {thought.attempts} failed at {attempt.stage.value}: " \
                 f"{type(exc).__name__}: {exc}"[:500]
        try:
            if attempt.stage is Stage.FINISH and await self._landed(thought, attempt):
                return
            retry = retry_after(attempt.stage, self.recovery)
            if retry is None:  # outcome recorded: the sweep finishes the task
                return
            await self._give_back(thought, reason, retry)
        except asyncio.CancelledError:
            raise
        except Exception as again:
            self._failed("recover", again, thought)

    async def _landed(self, thought: Thought, attempt: _Attempt) -> bool:
        """Did the completion commit although its reply was lost? Then carry on from it."""
        current = await self.scoped.get_thought(thought.thought_id)
        mine = (current is not None and current.status in _RECORDED
                and current.final_action.get("by") == self.scoped.occurrence_id
                and current.final_action.get("attempt") == thought.attempts)
        if mine:
            assert current is not None
            self._log(logging.INFO, "completion of thought %s had committed; carrying on",
                      thought.thought_id, event="thought.landed", task_id=thought.source_task_id)
            await self._recorded(thought.source_task_id, thought, current.final_action)
        return mine

    async def _give_back(self, thought: Thought, reason: str, retry: bool) -> None:
        backoff = self.retry.backoff(thought.attempts)
        changed = await self.scoped.release_thoughts(
            thought_ids=[thought.thought_id], reason=reason, fail=not retry,
            max_attempts=self.retry.max_attempts, backoff_seconds=backoff)
        if not changed:  # released or moved by a drain meanwhile: nothing of ours to do
            self._conflict(thought, "released or moved before it could be retried")
            return
        now = changed[0]
        if now.status is ThoughtStatus.PENDING:
            self.metrics.inc("occurrence_thoughts_processed_total", result="retried")
            self._log(logging.WARNING, "thought %s back to pending, retried in %.1fs "
                      "(attempt %d of %d): %s", thought.thought_id, backoff, thought.attempts,
                      self.retry.max_attempts, reason, event="thought.retry",
                      task_id=thought.source_task_id, thought_id=thought.thought_id)
            return
        self.metrics.inc("occurrence_thoughts_processed_total",
                         result="exhausted" if retry else "stranded_failed")
        self._log(logging.ERROR, "thought %s FAILED after %d attempt(s): %s", thought.thought_id,
                  thought.attempts, reason, event="thought.failed",
                  task_id=thought.source_task_id, thought_id=thought.thought_id)
        await self._after(thought.source_task_id, now, now.final_action)

    async def _after(self, task_id: str, thought: Thought, final_action: dict[str, Any]) -> None:
        """What a finished thought implies for its task: a follow-up, or the task's end."""
        action = final_action.get("action")
        if action == "ponder":
            try:
                await self.scoped.add_thought(
                    task_id, str(final_action.get("follow_up") or "follow-up"),
                    thought_type="follow_up", thought_depth=thought.thought_depth + 1,
                    parent_thought_id=thought.thought_id,
                )
            except NotOwnedError:  # the task moved away: its new owner's sweep adds it
                self.metrics.inc("occurrence_claim_conflicts_total", kind="follow_up")
            return
        task_status = _FINAL.get(str(action), (None, TaskStatus.COMPLETED))[1]
        outcome = {"action": action, "result": final_action.get("result", {}),
                   "by": self.scoped.occurrence_id, "thought_id": thought.thought_id}
        if final_action.get("reason"):
            outcome["reason"] = final_action["reason"]
        if await self.scoped.update_task_status(task_id, task_status, outcome=outcome):
            self.metrics.inc("occurrence_tasks_finished_total", status=task_status.value)
            self.journal.record("task_finished", task_id=task_id, status=task_status.value)
            self._log(logging.INFO, "task %s %s", task_id, task_status.value,
                      event="task.finished", task_id=task_id, status=task_status.value)

    def _conflict(self, thought: Thought, why: str) -> None:
        self.metrics.inc("occurrence_claim_conflicts_total", kind="thought")
        self.journal.record("thought_lost", thought_id=thought.thought_id,
                            task_id=thought.source_task_id)
        self._log(logging.INFO, "dropped result of thought %s: %s", thought.thought_id, why,
                  event="thought.conflict", task_id=thought.source_task_id)

    # ------------------------------------------------------------------- sweep

    async def _release_stranded(self, reason: str, result: str) -> int:
        """PROCESSING thoughts of this occurrence that no coroutine here works on: back to
        pending, or FAILED under ``recovery=fail`` (their handler may have run)."""
        released = await self.scoped.release_thoughts(
            reason=reason, exclude=list(self._inflight),
            fail=self.recovery is InFlightRecovery.FAIL, max_attempts=self.retry.max_attempts)
        for thought in released:
            self.metrics.inc("occurrence_thoughts_processed_total",
                             result=result if thought.status is ThoughtStatus.PENDING
                             else "stranded_failed")
        return len(released)

    async def reclaim(self, why: str = "stranded: processing with nobody working on it") -> int:
        """Take back this occurrence's PROCESSING thoughts that nothing here is working on
        (a crashed predecessor's, a claim whose reply was lost, a give-back that failed)."""
        reclaimed = await self._release_stranded(why, "reclaimed")
        if reclaimed:
            self._log(logging.WARNING, "reclaimed %d stranded thought(s) (%s): %s", reclaimed,
                      self.recovery.value, why, event="worker.reclaimed", reclaimed=reclaimed)
        return reclaimed

    async def sweep(self) -> int:
        """Reclaim stranded thoughts, then repair active tasks whose thoughts are all
        finished (crash windows, transfers, lost replies). Returns tasks repaired.

        Runs when no thought of this process is in flight (the loop holds the lock).
        """
        await self.reclaim()
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
                await self._after(task.task_id, last, {**last.final_action, "action": action})
            repaired += 1
        if repaired:
            self._log(logging.INFO, "sweep repaired %d active task(s)", repaired,
                      event="worker.sweep", repaired=repaired)
        return repaired
