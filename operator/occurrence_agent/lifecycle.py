"""Presence in the registry: register, recover from a crashed predecessor, heartbeat.

The heartbeat returns the registry row, which is how the runtime learns that the
operator marked it ``draining`` (or ``active`` again): :class:`Presence` calls back on
every state it sees.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from occurrence_store import Store
from occurrence_store.errors import UnknownOccurrence
from occurrence_store.models import Occurrence

log = logging.getLogger("occurrence_agent.lifecycle")

StateCallback = Callable[[Occurrence], Awaitable[None]]


class Presence:
    def __init__(self, store: Store, occurrence_id: str, *, ordinal: int | None,
                 lease_seconds: float, interval: float) -> None:
        self.store = store
        self.occurrence_id = occurrence_id
        self.ordinal = ordinal
        self.lease_seconds = lease_seconds
        self.interval = interval
        self.current: Occurrence | None = None
        self._last_ok: float | None = None

    async def register(self) -> Occurrence:
        """Register (or re-register after a restart) and reset a predecessor's leftovers.

        Only this id's PROCESSING thoughts are reset: a predecessor with the same id
        crashed mid-thought, and nothing else runs under this id, so nothing is lost and
        nothing runs twice at the same time.
        """
        self.current = await self.store.registry.register(
            self.occurrence_id, ordinal=self.ordinal, lease_seconds=self.lease_seconds)
        self._last_ok = asyncio.get_running_loop().time()
        reset = await self.store.scope(self.occurrence_id).reset_processing_thoughts()
        log.info("registered (state %s, version %d); %d thought(s) of a previous run reset to "
                 "pending", self.current.state.value, self.current.version, reset,
                 extra={"event": "registry.registered", "state": self.current.state.value,
                        "reset_thoughts": reset, "ordinal": self.ordinal})
        return self.current

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
                        extra={"event": "registry.reregister"})
            occurrence = await self.store.registry.register(
                self.occurrence_id, ordinal=self.ordinal, lease_seconds=self.lease_seconds)
        self._last_ok = asyncio.get_running_loop().time()
        if self.current is not None and occurrence.state != self.current.state:
            log.info("registry state %s -> %s", self.current.state.value, occurrence.state.value,
                     extra={"event": "registry.state", "state": occurrence.state.value})
        self.current = occurrence
        return occurrence

    async def run(self, on_state: StateCallback) -> None:
        """Heartbeat every ``interval`` until cancelled; report each state seen."""
        while True:
            try:
                await on_state(await self.beat())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("heartbeat failed: %s", exc,
                            extra={"event": "registry.heartbeat_failed"})
            await asyncio.sleep(self.interval)
