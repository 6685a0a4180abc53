"""The entry point: open a database, migrate it, and hand out scoped handles."""

from __future__ import annotations

from typing import Any

from occurrence_store.clock import Clock, utcnow
from occurrence_store.database import Database, open_database
from occurrence_store.maintenance import Maintenance
from occurrence_store.migrations import Migrator
from occurrence_store.models import validate_occurrence_id
from occurrence_store.registry import Registry
from occurrence_store.scoped import ScopedStore
from occurrence_store.shared import SharedTasks
from occurrence_store.transfer import Transfers
from occurrence_store.urls import DatabaseURL

__all__ = ["ScopedStore", "Store"]


class Store:
    """One database, shared by all occurrences.

    - ``store.scope(occurrence_id)``: that occurrence's tasks and thoughts;
    - ``store.shared``: decisions taken once for all (``__shared__``);
    - ``store.transfers``: moving work between occurrences, the drain;
    - ``store.registry``: who runs, their state and heartbeat lease;
    - ``store.maintenance``: cleanup; ``store.migrator``: schema.
    """

    def __init__(self, db: Database, *, clock: Clock = utcnow) -> None:
        self.db = db
        self.clock = clock
        self.shared = SharedTasks(db, clock)
        self.transfers = Transfers(db, clock)
        self.registry = Registry(db, clock)
        self.maintenance = Maintenance(db, clock)
        self.migrator = Migrator(db)

    @classmethod
    async def open(cls, url: str | DatabaseURL | None = None, *, migrate: bool = False,
                   clock: Clock = utcnow, **db_options: Any) -> Store:
        """Connect (``url`` ``None`` means the embedded SQLite default) and optionally migrate."""
        store = cls(await open_database(url, **db_options), clock=clock)
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

    def scope(self, occurrence_id: str) -> ScopedStore:
        return ScopedStore(self.db, validate_occurrence_id(occurrence_id), self.clock)
