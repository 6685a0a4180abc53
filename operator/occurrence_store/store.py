"""The entry point: open a database, migrate it, and hand out scoped handles."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from occurrence_store.clock import DatabaseClock
from occurrence_store.database import Database, fetch_now, open_database
from occurrence_store.locks import Locks
from occurrence_store.maintenance import Maintenance
from occurrence_store.migrations import Migrator
from occurrence_store.models import (
    DEFAULT_AGENT_ID,
    AgentId,
    OccurrenceId,
    validate_occurrence_id,
)
from occurrence_store.outcomes import Outcomes
from occurrence_store.registry import Registry
from occurrence_store.requeue import Requeues
from occurrence_store.scoped import ScopedStore
from occurrence_store.shared import SharedTasks
from occurrence_store.transfer import Transfers
from occurrence_store.unscoped import UnscopedReads
from occurrence_store.urls import DatabaseURL

__all__ = ["ScopedStore", "Store"]


class Store:
    """One database, shared by all occurrences.

    - ``store.scope(occurrence_id)``: that occurrence's tasks and thoughts;
    - ``store.shared`` / ``store.shared_for(agent_id)``: decisions taken once for all
      occurrences of an agent (``__shared__``);
    - ``store.transfers``: moving work between occurrences, the drain;
    - ``store.registry``: who runs, their state and heartbeat lease;
    - ``store.unscoped``: explicit reads across occurrences, for operations;
    - ``store.locks``: named locks (one drain driver per AgentDeployment);
    - ``store.maintenance``: cleanup; ``store.migrator``: schema;
    - ``store.outcomes``: what some occurrences' work came to lately (rollout gates).
    - ``store.requeues``: the tasks a rolled-back revision failed, given back once.

    Time is the database's (:mod:`occurrence_store.clock`); ``store.clock`` can shift it.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self.clock: DatabaseClock = db.clock
        self.shared = SharedTasks(db)
        self.transfers = Transfers(db)
        self.registry = Registry(db)
        self.unscoped = UnscopedReads(db)
        self.locks = Locks(db)
        self.maintenance = Maintenance(db)
        self.migrator = Migrator(db)
        self.outcomes = Outcomes(db)
        self.requeues = Requeues(db)

    @classmethod
    async def open(cls, url: str | DatabaseURL | None = None, *, migrate: bool = False,
                   clock: DatabaseClock | None = None, **db_options: Any) -> Store:
        """Connect (``url`` ``None`` means the embedded SQLite default) and optionally migrate.

        ``db_options`` go to the backend: ``application_name`` (PostgreSQL), pool sizes...
        """
        store = cls(await open_database(url, clock=clock, **db_options))
        if migrate:
            try:
                await store.migrator.migrate()
            except BaseException:
                await store.close()
                raise
        return store

    async def close(self) -> None:
        await self.db.close()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def dialect(self) -> str:
        return self.db.dialect

    def scope(self, occurrence_id: OccurrenceId) -> ScopedStore:
        return ScopedStore(self.db, validate_occurrence_id(occurrence_id))

    def shared_for(self, agent_id: AgentId = DEFAULT_AGENT_ID) -> SharedTasks:
        """The shared decisions of one agent (``store.shared`` is the default agent's)."""
        return self.shared if agent_id == self.shared.agent_id else SharedTasks(self.db, agent_id)

    async def now(self) -> datetime:
        """The database's clock."""
        async with self.db.connection() as conn:
            return await fetch_now(conn)
