"""Decisions taken once for all occurrences: the day's wakeup and shutdown.

Both ride on the core's shared tasks (``try_claim_shared_task``): the occurrence whose
claim lands performs the wakeup / makes the shutdown decision; the others wait for it
(bounded) and follow. A claimer that dies loses its lease and the next claimer takes over.
The occurrence count comes from the registry (live leases), never from configuration.
Decisions are the agent's own (``agent_id``): another agent sharing the database neither
takes nor obeys them. Their day is the database's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import KW_ONLY, dataclass, field
from datetime import datetime
from typing import Any

from occurrence_agent.handlers import Handler
from occurrence_agent.metrics import AgentMetrics
from occurrence_store import FINISHED_TASK_STATUSES, NotEligibleToDecide, Store
from occurrence_store.models import DEFAULT_AGENT_ID, AgentId, OccurrenceId, Task, TaskStatus
from occurrence_store.shared import SharedTasks

log = logging.getLogger("occurrence_agent.decisions")

WAKEUP = "wakeup"
SHUTDOWN = "shutdown"
_FINISHED = FINISHED_TASK_STATUSES


class WakeupTimeout(RuntimeError):
    """The shared wakeup did not complete within the configured wait."""


@dataclass(frozen=True)
class WakeupOutcome:
    task_id: str
    performed: bool
    waited_seconds: float
    status: TaskStatus
    performed_by: OccurrenceId | None


async def _renew_forever(shared: SharedTasks, task_id: str, occurrence_id: OccurrenceId,
                         lease: float, metrics: AgentMetrics) -> None:
    while True:
        await asyncio.sleep(lease / 3)
        try:
            if not await shared.renew_lease(task_id, occurrence_id, lease):
                log.warning("lost the lease on shared task %s: another occurrence may take it "
                            "over", task_id, extra={"event": "shared.lease_lost",
                                                    "occurrence_id": occurrence_id})
        except Exception as exc:  # retried at the next renewal; the lease has slack for it
            metrics.inc("occurrence_worker_errors_total", stage="shared_lease")
            log.warning("renewing the lease on shared task %s failed: %s", task_id, exc,
                        extra={"event": "shared.renew_failed", "occurrence_id": occurrence_id})


async def _perform(shared: SharedTasks, task: Task, occurrence_id: OccurrenceId, lease: float,
                   work: Callable[[], Awaitable[tuple[dict[str, Any], TaskStatus]]],
                   metrics: AgentMetrics) -> tuple[dict[str, Any], TaskStatus]:
    """Run ``work()`` holding the claim's lease; return (outcome, status) after completing."""
    renewer = asyncio.create_task(
        _renew_forever(shared, task.task_id, occurrence_id, lease, metrics))
    try:
        outcome, status = await work()
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.exception("shared task %s failed", task.task_id, extra={"event": "shared.failed"})
        outcome, status = {"error": f"{type(exc).__name__}: {exc}"[:500]}, TaskStatus.FAILED
    finally:
        renewer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewer
    outcome = {**outcome, "decided_by": occurrence_id}
    await shared.complete_shared_task(task.task_id, occurrence_id, outcome=outcome, status=status)
    return outcome, status


async def wake_up(store: Store, occurrence_id: OccurrenceId, handler: Handler, *,
                  timeout: float, lease_seconds: float, metrics: AgentMetrics,
                  poll_interval: float = 0.5, agent_id: AgentId = DEFAULT_AGENT_ID
                  ) -> WakeupOutcome:
    """Join today's wakeup of ``agent_id``: perform it if this occurrence's claim lands,
    else wait for it."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + timeout
    counted_conflict = False
    shared = store.shared_for(agent_id)
    while True:
        try:
            task, won = await shared.try_claim_shared_task(
                WAKEUP, occurrence_id, lease_seconds=lease_seconds,
                description="Wakeup performed once on behalf of all occurrences",
            )
        except NotEligibleToDecide as exc:
            # a canary during a rollout: a stable occurrence performs the wakeup, we follow
            if not counted_conflict:
                counted_conflict = True
                metrics.inc("occurrence_claim_conflicts_total", kind="shared_task")
                metrics.set("occurrence_wakeup_waiting_since_timestamp_seconds", time.time())
                log.info("waiting for a stable occurrence to perform the wakeup: %s", exc,
                         extra={"event": "wakeup.waiting_for_stable"})
            if loop.time() >= deadline:
                raise WakeupTimeout(f"no stable occurrence performed the wakeup within "
                                    f"{timeout:g}s ({exc})") from None
            await asyncio.sleep(min(poll_interval, max(0.0, deadline - loop.time())))
            continue
        if task.status in _FINISHED:
            return _joined(task, occurrence_id, loop.time() - started, metrics)
        if won or task.claimed_by == occurrence_id:
            # won, or a crashed predecessor with this same id held the claim: carry on.
            occurrences = await store.registry.live_count(agent_id)
            log.info("performing wakeup on behalf of %d occurrence(s)", occurrences,
                     extra={"event": "wakeup.performing", "task_id": task.task_id})

            async def work(n: int = occurrences) -> tuple[dict[str, Any], TaskStatus]:
                result = await handler.wakeup(occurrence_id, n)
                return {"occurrences": n, "result": result}, TaskStatus.COMPLETED

            _, status = await _perform(shared, task, occurrence_id, lease_seconds, work, metrics)
            metrics.set("occurrence_wakeup_performed", 1)
            metrics.set("occurrence_wakeup_waiting_since_timestamp_seconds", 0)
            metrics.set("occurrence_wakeup_wait_seconds", 0)
            log.info("wakeup %s for all", status.value,
                     extra={"event": "wakeup.performed", "task_id": task.task_id})
            return WakeupOutcome(task.task_id, True, 0.0, status, occurrence_id)
        if not counted_conflict:
            counted_conflict = True
            metrics.inc("occurrence_claim_conflicts_total", kind="shared_task")
            metrics.set("occurrence_wakeup_waiting_since_timestamp_seconds", time.time())
            log.info("wakeup claimed by %s; waiting for it", task.claimed_by,
                     extra={"event": "wakeup.waiting", "task_id": task.task_id})
        left = deadline - loop.time()
        if left <= 0:
            raise WakeupTimeout(
                f"wakeup {task.task_id} (claimed by {task.claimed_by}) did not complete "
                f"within {timeout:g}s"
            )
        # Wait at most a lease: if the claimer died meanwhile, the next claim takes over.
        done = await shared.wait_for_shared_task_completion(
            task.task_id, min(left, lease_seconds), poll_interval=poll_interval)
        if done is not None:
            return _joined(done, occurrence_id, loop.time() - started, metrics)


def _joined(task: Task, occurrence_id: OccurrenceId, waited: float,
            metrics: AgentMetrics) -> WakeupOutcome:
    metrics.set("occurrence_wakeup_waiting_since_timestamp_seconds", 0)
    metrics.set("occurrence_wakeup_performed", 0)
    metrics.set("occurrence_wakeup_wait_seconds", waited)
    by = task.outcome.get("decided_by") or task.claimed_by
    level = logging.INFO if task.status == TaskStatus.COMPLETED else logging.ERROR
    log.log(level, "joining after wakeup %s by %s (waited %.3fs)", task.status.value, by, waited,
            extra={"event": "wakeup.joined", "task_id": task.task_id, "performed_by": by})
    return WakeupOutcome(task.task_id, False, waited, task.status, by)


# ----------------------------------------------------------------------------- shutdown


@dataclass(frozen=True)
class ShutdownDecision:
    task_id: str
    accept: bool
    reason: str
    decided_by: str | None
    decided_at: datetime


def _generation_type(generation: int) -> str:
    return SHUTDOWN if generation == 1 else f"{SHUTDOWN}_g{generation}"


def _decision(task: Task) -> ShutdownDecision:
    outcome = task.outcome
    return ShutdownDecision(
        task.task_id, task.status == TaskStatus.COMPLETED and outcome.get("decision") == "accept",
        str(outcome.get("reason", "")), outcome.get("decided_by") or task.claimed_by,
        task.updated_at,
    )


@dataclass(eq=False)
class ShutdownCoordinator:
    """One shutdown decision for all occurrences, any number of times a day.

    The core's shared task ids are per day, so each new request of the day takes the next
    *generation* (``SHUTDOWN``, ``SHUTDOWN_G2``...). An occurrence obeys only decisions
    taken after it registered: yesterday's or this morning's shutdown does not stop a
    fleet that was started again afterwards.
    """

    store: Store
    occurrence_id: OccurrenceId
    handler: Handler
    _: KW_ONLY
    started_at: datetime
    lease_seconds: float
    metrics: AgentMetrics
    agent_id: AgentId = DEFAULT_AGENT_ID
    shared: SharedTasks = field(init=False)
    _day: str = field(default="", init=False)
    _generation: int = field(default=1, init=False)
    _seen: set[str] = field(default_factory=set, init=False)

    def __post_init__(self) -> None:
        self.shared = self.store.shared_for(self.agent_id)

    async def _roll_day(self) -> datetime:
        """The database's today; a new day starts again at generation 1."""
        now = await self.shared.now()
        day = now.strftime("%Y%m%d")
        if day != self._day:
            self._day, self._generation = day, 1
        return now

    async def request(self, reason: str, *, wait: float, caller: str = "runtime"
                      ) -> ShutdownDecision | None:
        """Ask for an agent-wide shutdown; return the decision (``None``: still undecided
        after ``wait`` seconds, another occurrence is deciding). ``caller`` is who asked
        (the API credential's scope), recorded in the decision's context."""
        today = await self._roll_day()
        generation = self._generation
        while True:
            task = await self.shared.get_shared_task(
                self.shared.task_id(_generation_type(generation), today))
            if task is not None and task.status in _FINISHED:
                generation += 1
                continue
            kind = _generation_type(generation)
            task, won = await self.shared.try_claim_shared_task(
                kind, self.occurrence_id, lease_seconds=self.lease_seconds,
                description=f"Shutdown decision for all occurrences: {reason}"[:500],
                context={"reason": reason, "requested_by": self.occurrence_id,
                         "caller": caller},
            )
            if task.status in _FINISHED:  # finished between our read and claim
                generation += 1
                continue
            if won or task.claimed_by == self.occurrence_id:
                return await self._decide(task, reason)
            self.metrics.inc("occurrence_claim_conflicts_total", kind="shared_task")
            done = await self.shared.wait_for_shared_task_completion(task.task_id, wait)
            return _decision(done) if done is not None else None

    async def _decide(self, task: Task, reason: str) -> ShutdownDecision:
        occurrences = await self.store.registry.live_count(self.agent_id)

        async def work() -> tuple[dict[str, Any], TaskStatus]:
            verdict = await self.handler.decide_shutdown(reason, occurrences)
            return ({"decision": "accept" if verdict.accept else "reject",
                     "reason": verdict.reason, "requested_reason": reason,
                     "occurrences": occurrences}, TaskStatus.COMPLETED)

        outcome, status = await _perform(self.shared, task, self.occurrence_id,
                                         self.lease_seconds, work, self.metrics)
        log.info("shutdown decision for %d occurrence(s): %s (%s)", occurrences,
                 outcome.get("decision", status.value), outcome.get("reason", ""),
                 extra={"event": "shutdown.decided", "task_id": task.task_id})
        done = await self.shared.get_shared_task(task.task_id)
        return _decision(done or task)

    async def poll(self) -> ShutdownDecision | None:
        """The newest decision taken since this occurrence started that it has not seen."""
        today = await self._roll_day()
        newest: ShutdownDecision | None = None
        while True:
            task = await self.shared.get_shared_task(
                self.shared.task_id(_generation_type(self._generation), today))
            if task is None or task.status not in _FINISHED:
                return newest
            self._generation += 1
            if task.updated_at >= self.started_at and task.task_id not in self._seen:
                self._seen.add(task.task_id)
                newest = _decision(task)
