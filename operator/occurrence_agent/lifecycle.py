"""Presence in the registry: register, heartbeat, and learn of a fence at once.

The heartbeat returns the registry row, which is how the runtime learns that the
operator marked it ``draining`` (or ``active`` again): :class:`Presence` calls back on
every state it sees. :meth:`Presence.poke` beats right away instead of at the next
interval — the runtime pokes it when PostgreSQL notifies a fence of this occurrence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import KW_ONLY, dataclass, field

from occurrence_store import Store
from occurrence_store.errors import UnknownOccurrence
from occurrence_store.models import DEFAULT_AGENT_ID, AgentId, Occurrence, OccurrenceId

log = logging.getLogger("occurrence_agent.lifecycle")

StateCallback = Callable[[Occurrence], Awaitable[None]]


@dataclass(eq=False)
class Presence:
    """This occurrence in the registry: registers it, renews its lease every ``interval``
    seconds, and follows the state the operator gives it."""

    store: Store
    occurrence_id: OccurrenceId
    _: KW_ONLY
    ordinal: int | None
    lease_seconds: float
    interval: float
    agent_id: AgentId = DEFAULT_AGENT_ID
    revision: str | None = None
    on_error: Callable[[BaseException], None] | None = None
    current: Occurrence | None = field(default=None, init=False)
    _last_ok: float | None = field(default=None, init=False)
    _poked: asyncio.Event = field(default_factory=asyncio.Event, init=False)

    async def register(self) -> Occurrence:
        """Register (or re-register after a restart); raises ``OccurrenceIdConflict`` if
        the id belongs to another agent."""
        self.current = await self.store.registry.register(
            self.occurrence_id, ordinal=self.ordinal, lease_seconds=self.lease_seconds,
            agent_id=self.agent_id, revision=self.revision)
        self._last_ok = asyncio.get_running_loop().time()
        log.info("registered (state %s, version %d)", self.current.state.value,
                 self.current.version,
                 extra={"event": "registry.registered", "state": self.current.state.value,
                        "ordinal": self.ordinal, "occurrence_id": self.occurrence_id})
        return self.current

    def poke(self) -> None:
        """Heartbeat now (the registry row changed): the state callback runs right after."""
        self._poked.set()

    def lease_alive(self) -> bool:
        """Whether our last successful heartbeat is still within the lease."""
        if self._last_ok is None:
            return False
        return asyncio.get_running_loop().time() - self._last_ok < self.lease_seconds

    async def beat(self) -> Occurrence:
        try:
            occurrence = await self.store.registry.heartbeat(
                self.occurrence_id, lease_seconds=self.lease_seconds)
        except UnknownOccurrence:
            log.warning("registry row vanished; registering again",
                        extra={"event": "registry.reregister", "occurrence_id": self.occurrence_id})
            occurrence = await self.store.registry.register(
                self.occurrence_id, ordinal=self.ordinal, lease_seconds=self.lease_seconds,
                agent_id=self.agent_id, revision=self.revision)
        self._last_ok = asyncio.get_running_loop().time()
        if self.current is not None and occurrence.state != self.current.state:
            log.info("registry state %s -> %s", self.current.state.value, occurrence.state.value,
                     extra={"event": "registry.state", "state": occurrence.state.value,
                            "occurrence_id": self.occurrence_id})
        self.current = occurrence
        return occurrence

    async def run(self, on_state: StateCallback) -> None:
        """Heartbeat every ``interval`` (or when poked) until cancelled; report each state."""
        while True:
            self._poked.clear()  # before the beat: a poke during it beats again at once
            try:
                await on_state(await self.beat())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("heartbeat failed: %s", exc,
                            extra={"event": "registry.heartbeat_failed",
                                   "occurrence_id": self.occurrence_id})
                if self.on_error is not None:
                    self.on_error(exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poked.wait(), self.interval)
