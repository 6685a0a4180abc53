"""When reconciles run: one worker per AgentDeployment, woken by events, requeues, resyncs.

Each AgentDeployment has one worker: `Reconciler.serve`, run as its Kopf daemon
(kopf_handlers.py). All reconciles of the object happen in that worker, one at a time
(`ReconcilePass`, passes.py); the informers' events (of the AgentDeployment and of
the objects it owns) only wake it up (`trigger`). Kopf stops (and cancels) daemons when peering
pauses this replica, so a paused replica has no timer, retry or queued trigger left that
could reconcile or drain: there is no scheduling outside the daemon. `gate` turns a stop
that races with a pass into `Interrupted` before the next write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

from ..kube import may_act
from ..kube.agd_object import agd_path
from ..kube.shared_stores import CONNECTIONS_PER_PASS, POOL_SIZE
from ..model.wellknown import agent_id
from .passcontext import PassContext
from .passes import RETRY_SECONDS, ReconcilePass

log = logging.getLogger(__name__)


@dataclass
class _WakeState:
    """Why one AgentDeployment's worker should run next."""

    signal: asyncio.Event = field(default_factory=asyncio.Event)
    """Set by `trigger`: reconcile as soon as the object's worker is free."""
    due: float | None = None
    """Loop time of a requeue the last pass asked for."""


MAX_CONCURRENT_PASSES = (POOL_SIZE - 2) // CONNECTIONS_PER_PASS
"""Passes that run at once, over all AgentDeployments (10). A thousand woken together (an
operator start, a shared Secret changed, a mass scale-down) queue here instead of at the
database pool, where waits past its acquire timeout would read as an unavailable database."""


def namespace_share(max_concurrent: int) -> int:
    """Slots one namespace (one tenant) may hold at once when the operator serves several:
    half of them (at least one). A tenant whose database is slow or unreachable — every pass
    of its AgentDeployments waiting out timeouts — then only ever holds its share; the other
    half stays for everyone else. (Serving one namespace, it has them all: no one to share
    with.)"""
    return max(1, max_concurrent // 2)


PASS_DEADLINE_SECONDS = 300
"""Longest one pass may hold a slot. A tenant whose database stalls every statement (or a
bug) would otherwise hold one of the `MAX_CONCURRENT_PASSES` for as long as it likes, and
every other AgentDeployment's passes queue behind it. Statements are bounded too (the
operator's `lock_timeout`/`statement_timeout`, the pool's acquire timeout); this bounds
the sum."""


class Reconciler:
    def __init__(self, context: PassContext, resync_seconds: float,
                 max_concurrent: int = MAX_CONCURRENT_PASSES, *,
                 one_namespace: bool = False) -> None:
        self.context = context
        self.resync_seconds = resync_seconds
        """Periodic re-check of every AgentDeployment, also when nothing woke it up."""
        self._wake_states: dict[tuple[str, str], _WakeState] = {}
        self._slots = asyncio.Semaphore(max_concurrent)
        self._share = max_concurrent if one_namespace else namespace_share(max_concurrent)
        self._namespace_slots: dict[str, asyncio.Semaphore] = {}
        """Per watched namespace: its share of the slots, taken before a global one (so a
        namespace waiting on its share holds none of the others)."""
        self._closing: set[asyncio.Task[None]] = set()
        """Pools of deleted AgentDeployments being closed (held: the loop keeps weak refs)."""

    async def serve(
        self, namespace: str, name: str, stopped: Any, resync_seconds: float | None = None
    ) -> None:
        """The object's worker: reconcile when woken, when a requeue is due, and every
        `resync_seconds`; until `stopped` (Kopf's daemon flag) is set or it is cancelled."""
        loop = asyncio.get_running_loop()
        resync = self.resync_seconds if resync_seconds is None else resync_seconds
        wake = self._wake_state(namespace, name)
        wake.signal.set()  # (re)started: reconcile now (after a pause: resume the drain)
        token = may_act.bind(lambda: not stopped)
        try:
            while not stopped:
                timeout = resync
                if wake.due is not None:
                    timeout = min(timeout, max(0.0, wake.due - loop.time()))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.signal.wait(), timeout)
                if stopped:
                    break
                wake.signal.clear()
                wake.due = None
                requeue = await self.run_once(namespace, name)
                if requeue is not None:
                    wake.due = loop.time() + max(0.1, requeue)
        except may_act.Interrupted:
            log.info("%s/%s: stopped mid-reconcile (%s)", namespace, name, _reason_of(stopped))
        finally:
            may_act.unbind(token)

    async def run_once(self, namespace: str, name: str) -> float | None:
        """One reconcile; returns the requeue delay it asks for (None: just resync)."""
        metrics = self.context.metrics
        try:
            share = self._namespace_slots.setdefault(namespace,
                                                     asyncio.Semaphore(self._share))
            async with share, self._slots:
                async with asyncio.timeout(PASS_DEADLINE_SECONDS):
                    requeue = await self._reconcile(namespace, name)
            metrics.reconciled("success")
            return requeue
        except TimeoutError:
            log.warning("reconcile of %s/%s ran past its %ss deadline: stopped, retrying "
                        "(every step is idempotent; a drain resumes from its record)",
                        namespace, name, PASS_DEADLINE_SECONDS)
            metrics.reconciled("timeout")
            return RETRY_SECONDS
        except (asyncio.CancelledError, may_act.Interrupted):
            raise
        except Exception:
            log.exception("reconcile of %s/%s failed; retrying", namespace, name)
            metrics.reconciled("error")
            return RETRY_SECONDS

    def trigger(self, namespace: str, name: str) -> None:
        """Wake the object's worker (a no-op for the API while this replica is paused)."""
        self._wake_state(namespace, name).signal.set()

    def forget(self, namespace: str, name: str, uid: str | None = None) -> None:
        """The AgentDeployment is gone (the informer's DELETED, on the loop): its wake state,
        its gauges, its autoscaler's and retention's memory and, if nobody else uses it, its
        database pool go too (nothing kept per object outlives it)."""
        self._wake_states.pop((namespace, name), None)
        self.context.metrics.forget(namespace, name)
        self.context.retention_runs.pop(agent_id(namespace, name), None)
        if uid is not None:
            self.context.autoscalers.pop(uid, None)
        task = asyncio.get_running_loop().create_task(
            self.context.stores.forget(namespace, name))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """Nothing of ours runs outside the Kopf daemons (which Kopf stops at exit)."""
        self._wake_states.clear()

    def _wake_state(self, namespace: str, name: str) -> _WakeState:
        return self._wake_states.setdefault((namespace, name), _WakeState())

    async def _reconcile(self, namespace: str, name: str) -> float | None:
        body = await self.context.kube.get(agd_path(namespace, name))
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        return await ReconcilePass(self.context, body).run()


def _reason_of(stopped: Any) -> str:
    reason = getattr(stopped, "reason", None)
    return getattr(reason, "name", None) or str(reason or "stopped")
