"""Numbered SQL migrations per dialect, each applied in one transaction with its record.

Files live in ``migrations/<dialect>/NNN_name.sql``. ``schema_migrations`` records the
version, name and SHA-256 of each applied file; an applied file whose text changed
afterwards is an error, never silently skipped. Concurrent migrators serialize on a
transaction-scoped advisory lock (PostgreSQL) or ``BEGIN IMMEDIATE`` (SQLite); each one
re-reads what is applied after taking the lock, so a migration never runs twice.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from importlib import resources

from occurrence_store.clock import utcnow
from occurrence_store.database import Connection, Database, Row
from occurrence_store.errors import MigrationError

_RECORD_MIGRATION = ("INSERT INTO schema_migrations (version, name, checksum, applied_at) "
                     "VALUES (:version, :name, :checksum, :applied_at)")
_FILE_RE = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    checksum    TEXT NOT NULL,
    applied_at  {ts} NOT NULL
)
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True)
class MigrationStatus:
    version: int
    name: str
    applied: bool
    applied_at: datetime | None
    checksum_ok: bool


def load_migrations(dialect: str) -> list[Migration]:
    folder = resources.files("occurrence_store").joinpath("migrations", dialect)
    found: list[Migration] = []
    for entry in folder.iterdir():
        match = _FILE_RE.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration numbers for {dialect}: {versions}")
    return found


class Migrator:
    def __init__(self, db: Database, migrations: list[Migration] | None = None) -> None:
        self.db = db
        self.migrations = migrations if migrations is not None else load_migrations(db.dialect)

    async def _lock(self, conn: Connection) -> None:
        await self.db.lock_migrations(conn)
        await conn.execute(_CREATE_TABLE.format(ts=self.db.timestamp_type))

    async def _applied(self, conn: Connection) -> dict[int, Row]:
        rows = await conn.fetch(
            "SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version"
        )
        return {int(r["version"]): r for r in rows}

    def _verify(self, applied: dict[int, Row]) -> None:
        known = {m.version: m for m in self.migrations}
        for version, row in applied.items():
            migration = known.get(version)
            if migration is None:
                raise MigrationError(
                    f"database has migration {version:03d} ({row['name']}) that this version "
                    "of the code does not know: is an older image running against a newer schema?"
                )
            if migration.checksum != row["checksum"]:
                raise MigrationError(
                    f"migration {version:03d}_{migration.name} was edited after it was applied "
                    f"(checksum {row['checksum'][:12]} in the database, "
                    f"{migration.checksum[:12]} in the file): add a new migration instead"
                )

    async def status(self) -> list[MigrationStatus]:
        async with self.db.transaction() as conn:
            await self._lock(conn)
            applied = await self._applied(conn)
        out = []
        for m in self.migrations:
            row = applied.get(m.version)
            out.append(
                MigrationStatus(
                    version=m.version,
                    name=m.name,
                    applied=row is not None,
                    applied_at=_as_datetime(row["applied_at"]) if row else None,
                    checksum_ok=row is None or row["checksum"] == m.checksum,
                )
            )
        return out

    async def migrate(self, target: int | None = None) -> list[Migration]:
        """Apply every pending migration up to ``target`` (all if None); return those applied.

        Each migration is its own transaction with its ``schema_migrations`` row: a failure
        rolls that migration back whole and stops, leaving earlier ones applied.
        """
        async with self.db.transaction() as conn:
            await self._lock(conn)
            self._verify(await self._applied(conn))
        done: list[Migration] = []
        for migration in self.migrations:
            if target is not None and migration.version > target:
                break
            async with self.db.transaction() as conn:
                await self._lock(conn)
                applied = await self._applied(conn)
                if migration.version in applied:
                    continue  # another migrator got here first
                try:
                    await conn.execute_script(migration.sql)
                except Exception as exc:
                    raise MigrationError(
                        f"migration {migration.version:03d}_{migration.name} failed and was "
                        f"rolled back: {str(exc).splitlines()[0] if str(exc) else exc!r}"
                    ) from exc
                await conn.execute(_RECORD_MIGRATION, version=migration.version,
                                   name=migration.name, checksum=migration.checksum,
                                   applied_at=utcnow())
            done.append(migration)
        return done

    async def current_version(self) -> int:
        statuses = await self.status()
        applied = [s.version for s in statuses if s.applied]
        return max(applied, default=0)


def _as_datetime(value: object) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))
