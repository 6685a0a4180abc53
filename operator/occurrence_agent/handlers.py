"""What the runtime does with a thought, a wakeup and a shutdown request: pluggable.

Users' agents implement :class:`Handler` (or subclass :class:`BaseHandler`). The
:class:`DefaultHandler` does deterministic simulated work so that tests and demos are
meaningful: a task's ``context`` may ask for ``work_ms`` (time per thought), ``thoughts``
(how many chained thoughts before the task completes) and ``fail`` (finish as failed).
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from occurrence_store.models import Task, Thought

Action = Literal["complete", "ponder", "fail", "defer"]

MAX_WORK_MS = 600_000
MAX_THOUGHTS_PER_TASK = 50


@dataclass(frozen=True)
class Decision:
    """A handler's verdict on one thought.

    ``complete``/``fail``/``defer`` finish the task with that status; ``ponder`` adds a
    follow-up thought (``follow_up`` is its content) and keeps the task active.
    """

    action: Action
    result: dict[str, Any] = field(default_factory=dict)
    follow_up: str | None = None


@dataclass(frozen=True)
class ShutdownVerdict:
    accept: bool
    reason: str


@runtime_checkable
class Handler(Protocol):
    async def handle(self, task: Task, thought: Thought) -> Decision:
        """Work one thought of ``task``. May be cancelled (drain timeout, SIGTERM)."""
        ...

    async def wakeup(self, occurrence_id: str, occurrences: int) -> dict[str, Any]:
        """The wakeup ritual, run by one occurrence on behalf of ``occurrences``."""
        ...

    async def decide_shutdown(self, reason: str, occurrences: int) -> ShutdownVerdict:
        """The shutdown decision every occurrence obeys."""
        ...


class BaseHandler:
    """Defaults for wakeup (nothing to do) and shutdown (accept); override :meth:`handle`."""

    async def handle(self, task: Task, thought: Thought) -> Decision:
        return Decision("complete")

    async def wakeup(self, occurrence_id: str, occurrences: int) -> dict[str, Any]:
        return {}

    async def decide_shutdown(self, reason: str, occurrences: int) -> ShutdownVerdict:
        return ShutdownVerdict(True, f"accepted: {reason}" if reason else "accepted")


def _bounded_int(value: Any, default: int, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    if value != value:  # NaN
        return default
    return int(min(max(value, low), high))


class DefaultHandler(BaseHandler):
    """Simulated, deterministic work: sleep, then a digest of the task and thought depth.

    `failure_ratio` (AGENT_SIMULATED_FAILURE_RATIO) fails that share of tasks, chosen by a
    hash of the task id (so a task fails the same way wherever it runs): a stand-in for a
    bad version, to try canary rollouts with."""

    def __init__(self, work_ms: int = 50, wakeup_steps: int = 3, *,
                 failure_ratio: float = 0.0) -> None:
        self.work_ms = work_ms
        self.wakeup_steps = wakeup_steps
        self.failure_ratio = failure_ratio

    def plan(self, task: Task) -> tuple[int, int, bool]:
        """(work_ms per thought, thoughts for the task, fail?) from the task's context."""
        ctx = task.context if isinstance(task.context, dict) else {}
        work_ms = _bounded_int(ctx.get("work_ms"), self.work_ms, 0, MAX_WORK_MS)
        thoughts = _bounded_int(ctx.get("thoughts"), 1, 1, MAX_THOUGHTS_PER_TASK)
        return work_ms, thoughts, ctx.get("fail") is True or self._fails(task.task_id)

    def _fails(self, task_id: str) -> bool:
        if self.failure_ratio <= 0:
            return False
        bucket = int.from_bytes(hashlib.sha256(task_id.encode("utf-8", "surrogatepass"))
                                .digest()[:4], "big") / 2**32
        return bucket < self.failure_ratio

    async def handle(self, task: Task, thought: Thought) -> Decision:
        work_ms, thoughts, fail = self.plan(task)
        if work_ms:
            await asyncio.sleep(work_ms / 1000)
        digest = hashlib.sha256(
            f"{task.task_id}|{task.description}|{thought.thought_depth}".encode(
                "utf-8", "surrogatepass")
        ).hexdigest()[:16]
        result = {"digest": digest, "depth": thought.thought_depth, "work_ms": work_ms}
        if thought.thought_depth + 1 < thoughts:
            return Decision("ponder", result,
                            follow_up=f"step {thought.thought_depth + 2} of {thoughts}")
        return Decision("fail" if fail else "complete", result)

    async def wakeup(self, occurrence_id: str, occurrences: int) -> dict[str, Any]:
        steps = []
        for step in range(self.wakeup_steps):
            if self.work_ms:
                await asyncio.sleep(self.work_ms / 1000)
            steps.append(f"affirmation {step + 1} of {self.wakeup_steps}")
        return {"steps": steps}
