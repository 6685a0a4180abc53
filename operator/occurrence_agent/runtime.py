"""The runtime of one occurrence, composed: store, presence, wakeup, worker, API.

Also the library entry point for users' own agents::

    config = AgentConfig(occurrence_id="my-agent-0", database_url="postgresql://...")
    async with OccurrenceRuntime(config, handler=MyHandler()) as runtime:
        await runtime.wait_stopped()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path
from typing import Any

from aiohttp import web

from occurrence_agent.auth import TokenFiles, TokenProblem, unauthenticated_bind_problem
from occurrence_agent.config import AgentConfig
from occurrence_agent.decisions import (
    ShutdownCoordinator,
    ShutdownDecision,
    WakeupOutcome,
    WakeupTimeout,
    wake_up,
)
from occurrence_agent.handlers import DefaultHandler, Handler
from occurrence_agent.http_api import KEEPALIVE_SECONDS, Guard, create_app
from occurrence_agent.journal import Journal
from occurrence_agent.lifecycle import Presence
from occurrence_agent.metrics import AgentMetrics
from occurrence_agent.ratelimit import SubmitLimiter
from occurrence_agent.retry import RetryPolicy
from occurrence_agent.schemas import ShutdownRequest, TaskCreate
from occurrence_agent.worker import Worker
from occurrence_store import Store
from occurrence_store.errors import NotEligibleToDecide, OccurrenceIdConflict, StoreError
from occurrence_store.models import (
    InFlightRecovery,
    Occurrence,
    OccurrenceState,
    Task,
    TaskStatus,
    ThoughtStatus,
    Track,
)
from occurrence_store.notify import Listener
from occurrence_store.registry import NOTIFY_CHANNEL
from occurrence_store.scoped import ScopedStore
from occurrence_store.unreachable import DATABASE_ERRORS

log = logging.getLogger("occurrence_agent.runtime")

WORK_GAUGES_TTL_SECONDS = 5.0
"""How long the task and thought counts of `/metrics` are reused (scrapes come every 15-60 s;
a burst of scrapers shares one count)."""


class StartupError(RuntimeError):
    """The runtime cannot start (database, schema, wakeup); the message is one line."""


class OccurrenceRuntime:
    def __init__(self, config: AgentConfig, *, handler: Handler | None = None) -> None:
        self.config = config
        self.occurrence_id = config.occurrence_id
        self.handler: Handler = handler or DefaultHandler(
            config.simulated_work_ms, config.wakeup_steps,
            failure_ratio=config.simulated_failure_ratio)
        self.metrics = AgentMetrics(config.occurrence_id)
        if config.revision:
            self.metrics.set("occurrence_revision_info", 1, revision=config.revision)
        self.track: Track = "stable"
        """The rollout track the registry last reported (see :attr:`Occurrence.track`)."""
        self.journal = Journal(config.journal_path, config.occurrence_id)
        self.store: Store | None = None
        self.presence: Presence | None = None
        self.worker: Worker | None = None
        self._work_gauges_cache: tuple[float, list[tuple[str, dict[str, str], float]]] | None
        self._work_gauges_cache = None
        self._work_gauges_lock = asyncio.Lock()
        self.shutdown: ShutdownCoordinator | None = None
        self.wakeup: WakeupOutcome | None = None
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._draining = False
        self._drained = False
        self._stopping = False
        self._stop_reason = ""
        self._start_task: asyncio.Task[None] | None = None
        self._stop_task: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()
        self._torn_down = False

    # ---------------------------------------------------------------- queries

    @property
    def scoped(self) -> ScopedStore:
        if self.store is None:
            raise StoreError("runtime not started")
        return self.store.scope(self.occurrence_id)

    @property
    def ready(self) -> bool:
        return self.readiness()[0]

    def readiness(self) -> tuple[bool, str]:
        if self._stopping:
            return False, f"shutting down: {self._stop_reason}"
        if self._draining:
            return False, "draining: this occurrence is being drained"
        if self.wakeup is None:
            return False, "waking up: waiting for the shared wakeup"
        if self.worker is not None and not self.worker.healthy:
            return False, f"worker cannot reach the database ({self.worker.last_error})"
        if self.presence is None or not self.presence.lease_alive():
            return False, "registry lease lapsed: database unreachable?"
        return True, "ready"

    def refusal(self) -> str | None:
        """Why new work is refused right now (``None``: accepted)."""
        if self._stopping:
            return f"occurrence {self.occurrence_id} is shutting down; submit elsewhere"
        if self._draining:
            return f"occurrence {self.occurrence_id} is draining; submit elsewhere"
        if self.store is None or self.presence is None:
            return f"occurrence {self.occurrence_id} is starting"
        return None

    def status(self) -> dict[str, Any]:
        ready, reason = self.readiness()
        current = self.presence.current if self.presence else None
        return {
            "occurrence_id": self.occurrence_id, "ordinal": self.config.ordinal,
            "pid": os.getpid(), "port": self.port, "ready": ready, "reason": reason,
            "registry_state": current.state.value if current else None,
            "revision": self.config.revision or None, "track": self.track,
            "draining": self._draining, "quiesced": self._drained, "stopping": self._stopping,
            "wakeup": None if self.wakeup is None else {
                "task_id": self.wakeup.task_id, "performed": self.wakeup.performed,
                "performed_by": self.wakeup.performed_by,
                "waited_seconds": round(self.wakeup.waited_seconds, 3),
                "status": self.wakeup.status.value},
        }

    # ---------------------------------------------------------------- actions

    async def submit(self, body: TaskCreate, idempotency_key: str | None = None
                     ) -> tuple[Task, bool]:
        """Add a task; with a key, the agent's earlier task with that key if there is one.
        Returns ``(task, created)``."""
        task, created = await self.scoped.add_task_once(
            body.description, idempotency_key=idempotency_key, channel_id=body.channel_id,
            priority=body.priority, context=body.context)
        if created:
            self.metrics.inc("occurrence_tasks_submitted_total")
            if self.worker is not None:
                self.worker.poke()
        else:
            self.metrics.inc("occurrence_tasks_deduplicated_total")
        return task, created

    async def request_shutdown(self, body: ShutdownRequest, requested_by: str
                               ) -> tuple[int, dict[str, Any]]:
        if self.shutdown is None:
            return 503, {"error": "not started", "status": 503}
        log.warning("shutdown of every occurrence requested through the API (%s credential): "
                    "%s", requested_by, body.reason,
                    extra={"event": "api.shutdown_requested", "caller": requested_by})
        try:
            decision = await self.shutdown.request(body.reason, wait=body.wait_seconds,
                                                   caller=requested_by)
        except NotEligibleToDecide as exc:  # a canary during a rollout: ask a stable one
            return 409, {"decided": False, "reason": str(exc)}
        if decision is None:
            return 202, {"decided": False, "reason": "another occurrence is still deciding"}
        self._obey(decision)
        return 200, {"decided": True, "accept": decision.accept, "reason": decision.reason,
                     "decided_by": decision.decided_by, "task_id": decision.task_id}

    async def render_metrics(self) -> str:
        extra: list[tuple[str, dict[str, str], float]] = []
        ready, _ = self.readiness()
        extra.append(("occurrence_ready", {}, float(ready)))
        extra.append(("occurrence_draining", {}, float(self._draining or self._stopping)))
        extra.append(("occurrence_worker_healthy", {},
                      float(self.worker is None or self.worker.healthy)))
        if self.store is not None:
            try:
                extra += await self._work_gauges()
            except DATABASE_ERRORS as exc:  # the rest of the metrics matter most right now
                self._count_error("metrics")
                log.warning("metrics without task counts, the database is unreachable: %s",
                            exc, extra={"event": "metrics.database_unavailable"})
        return self.metrics.render(extra)

    async def _work_gauges(self) -> list[tuple[str, dict[str, str], float]]:
        """The database-derived gauges, counted at most once per `WORK_GAUGES_TTL_SECONDS`
        however many scrape at once: `/metrics` is open (no token), and each count set is
        a dozen COUNTs on the pool the worker uses — four parallel scrapers quadrupled an
        authorized request's latency."""
        loop = asyncio.get_running_loop()
        cached = self._work_gauges_cache
        if cached is not None and loop.time() - cached[0] < WORK_GAUGES_TTL_SECONDS:
            return cached[1]
        async with self._work_gauges_lock:  # the others wait for one count, not their own
            cached = self._work_gauges_cache
            if cached is not None and loop.time() - cached[0] < WORK_GAUGES_TTL_SECONDS:
                return cached[1]
            gauges = await self._count_work()
            self._work_gauges_cache = (loop.time(), gauges)
            return gauges

    async def _count_work(self) -> list[tuple[str, dict[str, str], float]]:
        scoped = self.scoped
        gauges: list[tuple[str, dict[str, str], float]] = []
        for status in TaskStatus:
            gauges.append(("occurrence_tasks", {"status": status.value},
                           float(await scoped.count_tasks(status))))
        for tstatus in ThoughtStatus:
            gauges.append(("occurrence_thoughts", {"status": tstatus.value},
                           float(await scoped.count_thoughts(tstatus))))
        assert self.store is not None
        age = await self.store.shared_for(self.config.agent_id).oldest_unfinished_age()
        gauges.append(("occurrence_shared_decision_age_seconds", {}, age))
        return gauges

    # ------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> OccurrenceRuntime:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop("context exit")

    async def start(self) -> None:
        """Open the store, register, serve the API, join the wakeup, start working."""
        try:
            await self._start()
        except BaseException:
            await self._teardown()
            raise

    async def _start(self) -> None:
        config = self.config
        guard = self._guard()  # before anything: an open door beyond loopback never starts
        log.info("starting: database %s, pid %d", config.redacted_database_url, os.getpid(),
                 extra={"event": "runtime.starting", "ordinal": config.ordinal})
        try:
            self.store = await Store.open(config.database_url, migrate=config.should_migrate,
                                          application_name=f"occurrence-agent:{self.occurrence_id}")
            pending = [m for m in await self.store.migrator.status() if not m.applied]
        except StoreError as exc:
            raise StartupError(str(exc)) from None
        if pending:
            raise StartupError(
                f"database schema is not migrated ({len(pending)} migration(s) pending): run "
                "`occurrence-store migrate` or start with --migrate")
        self.presence = Presence(self.store, self.occurrence_id, ordinal=config.ordinal,
                                 lease_seconds=config.lease_seconds,
                                 interval=config.effective_heartbeat_interval,
                                 agent_id=config.agent_id, revision=config.revision,
                                 on_error=lambda exc: self._count_error("heartbeat"))
        try:
            occurrence = await self.presence.register()
        except OccurrenceIdConflict as exc:
            raise StartupError(str(exc)) from None
        self._draining = occurrence.state != OccurrenceState.ACTIVE
        self._follow_track(occurrence.track)
        self.worker = Worker(self.scoped, self.handler, max_active_tasks=config.max_active_tasks,
                             concurrency=config.thought_concurrency,
                             poll_interval=config.poll_interval, metrics=self.metrics,
                             journal=self.journal,
                             retry=RetryPolicy(config.max_thought_attempts,
                                               config.retry_backoff_seconds,
                                               config.retry_backoff_max_seconds),
                             recovery=InFlightRecovery(config.in_flight_recovery))
        # A predecessor with this id stopped mid-thought; nothing else runs under this id.
        await self.worker.reclaim("left processing by a previous run of this occurrence")
        self.shutdown = ShutdownCoordinator(self.store, self.occurrence_id, self.handler,
                                            started_at=occurrence.registered_at,
                                            lease_seconds=config.shared_lease_seconds,
                                            metrics=self.metrics, agent_id=config.agent_id)
        await self._serve(guard)
        self._tasks["heartbeat"] = asyncio.create_task(self.presence.run(self._on_state))
        self._tasks["fence-listener"] = asyncio.create_task(self._fence_listener().run())
        try:
            self.wakeup = await wake_up(self.store, self.occurrence_id, self.handler,
                                        timeout=config.wakeup_timeout,
                                        lease_seconds=config.shared_lease_seconds,
                                        metrics=self.metrics,
                                        poll_interval=min(0.5, config.poll_interval),
                                        agent_id=config.agent_id)
        except WakeupTimeout as exc:
            raise StartupError(str(exc)) from None
        if self._draining:
            self._spawn(self._drain(self._grace(occurrence)))
        self._tasks["worker"] = asyncio.create_task(self._run_worker())
        log.info("started: serving on port %s, %s", self.port, self.readiness()[1],
                 extra={"event": "runtime.started", "port": self.port})

    def _count_error(self, stage: str) -> None:
        self.metrics.inc("occurrence_worker_errors_total", stage=stage)

    def _fence_listener(self) -> Listener:
        """PostgreSQL tells every listener which occurrence was fenced; on ours, heartbeat
        now, so the fence is obeyed in milliseconds (the heartbeat poll stays underneath)."""
        assert self.store is not None and self.presence is not None
        presence = self.presence

        def on_payload(payload: str) -> None:
            if payload == self.occurrence_id:
                presence.poke()

        def on_error(exc: BaseException) -> None:
            self._count_error("listener")
            log.warning("fence notifications lost, reconnecting (the heartbeat still polls): "
                        "%s", exc, extra={"event": "registry.listen_failed",
                                          "occurrence_id": self.occurrence_id})

        return Listener(self.store.db, NOTIFY_CHANNEL, on_payload, on_error=on_error)

    async def _run_worker(self) -> None:
        assert self.worker is not None
        if self._draining:
            self.worker.pause()  # registered while draining: stay fenced
        await self.worker.run()

    def _guard(self) -> Guard:
        """The API's tokens and submission limit; refuses an open door beyond loopback."""
        config = self.config

        def token_files_broken(problem: TokenProblem) -> None:
            self._count_error("tokens")
            log.warning("token files changed but cannot be used, keeping the previous "
                        "tokens: %s", problem, extra={"event": "api.tokens_unreadable"})

        tokens = TokenFiles(config.token_dir, on_error=token_files_broken)
        try:
            loaded = tokens.load()
        except TokenProblem as exc:
            raise StartupError(str(exc)) from None
        problem = unauthenticated_bind_problem(config.listen_host, loaded)
        if problem is not None:
            raise StartupError(problem)
        return Guard(tokens, SubmitLimiter(config.submit_rate, config.submit_burst),
                     request_seconds=config.request_timeout,
                     on_refusal=lambda reason: self.metrics.inc(
                         "occurrence_api_refusals_total", reason=reason))

    async def _serve(self, guard: Guard) -> None:
        app = create_app(self, guard)
        self._runner = web.AppRunner(app, access_log=logging.getLogger("aiohttp.access")
                                     if self.config.access_log else None,
                                     handle_signals=False, shutdown_timeout=2.0,
                                     keepalive_timeout=KEEPALIVE_SECONDS)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.listen_host, self.config.port)
        try:
            await site.start()
        except OSError as exc:
            raise StartupError(
                f"cannot listen on {self.config.listen_host}:{self.config.port}: {exc.strerror}"
            ) from None
        addresses = self._runner.addresses
        self.port = int(addresses[0][1]) if addresses else self.config.port
        if self.config.port_file is not None:
            _write_atomically(self.config.port_file, f"{self.port}\n")

    def _follow_track(self, track: Track) -> None:
        """Follow the rollout track the registry reports (logged when it changes)."""
        if track != self.track:
            log.info("on the %s track", track, extra={"event": "runtime.track"})
            self.track = track
        for each in ("canary", "stable"):
            self.metrics.set("occurrence_track", 1 if each == track else 0, track=each)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _on_state(self, occurrence: Occurrence) -> None:
        if self._stopping:
            return
        self._follow_track(occurrence.track)
        if occurrence.state != OccurrenceState.ACTIVE:
            if not self._draining:
                self._draining = True
                self._spawn(self._drain(self._grace(occurrence)))
            elif self._drained and not occurrence.quiesced and self.store is not None:
                await self.store.registry.set_quiesced(self.occurrence_id, True)
        elif self._draining and self.wakeup is not None:
            log.info("registry says active again: resuming work",
                     extra={"event": "runtime.resumed"})
            self._draining = self._drained = False
            if self.worker is not None:
                self.worker.resume()
        if self.shutdown is not None and self.wakeup is not None:
            decision = await self.shutdown.poll()
            if decision is not None:
                self._obey(decision)

    def _obey(self, decision: ShutdownDecision) -> None:
        if decision.accept:
            log.info("obeying shared shutdown decision by %s: %s", decision.decided_by,
                     decision.reason, extra={"event": "shutdown.obeying",
                                             "task_id": decision.task_id})
            self.request_stop(f"shared shutdown decision by {decision.decided_by}")
        else:
            log.info("shared shutdown rejected by %s: %s", decision.decided_by, decision.reason,
                     extra={"event": "shutdown.rejected", "task_id": decision.task_id})

    def _grace(self, occurrence: Occurrence) -> float:
        """How long in-flight work may go on once fenced: the fence's own grace (the
        operator's drain mode sets it), else ``--drain-timeout``."""
        if occurrence.drain_grace_seconds is not None:
            return max(0.0, occurrence.drain_grace_seconds)
        return self.config.drain_timeout

    async def _drain(self, grace: float) -> None:
        """Registry said draining: stop taking work, finish or release, report quiesced."""
        log.info("draining: refusing new work, finishing in-flight work within %gs", grace,
                 extra={"event": "runtime.draining", "grace_seconds": grace})
        await self._quiesce(grace)
        if self._draining and not self._stopping:
            self._drained = True

    async def _quiesce(self, grace: float) -> None:
        assert self.store is not None
        if self.worker is not None:
            await self.worker.quiesce(grace)
        else:
            await self.scoped.reset_processing_thoughts()
        await self.store.registry.set_quiesced(self.occurrence_id, True)
        log.info("quiesced: no work in flight", extra={"event": "runtime.quiesced"})

    # ----------------------------------------------------------------- stop

    def request_stop(self, reason: str) -> None:
        """Begin a graceful stop (signal handlers, shared shutdown). Idempotent."""
        if self._stop_task is None:
            self._stop_task = asyncio.create_task(self.stop(reason))

    async def stop(self, reason: str = "stop requested") -> None:
        """Refuse new work, finish or release in-flight work (bounded), report quiesced."""
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping, self._stop_reason = True, reason
        log.info("stopping (%s): finishing in-flight work within %gs", reason,
                 self.config.drain_timeout, extra={"event": "runtime.stopping"})
        if self._start_task is not None and not self._start_task.done():
            self._start_task.cancel()
            await asyncio.wait([self._start_task])
        try:
            if not self._torn_down and self.store is not None and self.presence is not None \
                    and self.presence.current is not None:
                await self._quiesce(self.config.drain_timeout)
        except Exception as exc:
            self._count_error("stop")
            log.warning("could not quiesce cleanly: %s", exc, extra={"event": "runtime.stop_error"})
        finally:
            await self._teardown()
        log.info("stopped", extra={"event": "runtime.stopped"})

    async def _teardown(self) -> None:
        if self._torn_down:
            return
        self._torn_down = True
        if self.worker is not None:
            self.worker.stop()
        for task in [*self._tasks.values(), *self._background]:
            task.cancel()
        await asyncio.gather(*self._tasks.values(), *self._background, return_exceptions=True)
        if self._runner is not None:
            with contextlib.suppress(Exception):
                await self._runner.cleanup()
        if self.store is not None:
            with contextlib.suppress(Exception):
                await self.store.close()
        self.journal.close()
        self._stopped.set()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def run(self) -> None:
        """Start, then run until :meth:`request_stop` (or a shared shutdown) completes.

        Raises :class:`StartupError` if the runtime cannot start.
        """
        self._start_task = asyncio.create_task(self.start())
        await asyncio.wait([self._start_task])
        if not self._start_task.cancelled() and self._start_task.exception() is not None:
            raise self._start_task.exception()  # type: ignore[misc]
        await self._stopped.wait()


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
