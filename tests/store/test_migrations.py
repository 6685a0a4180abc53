"""Migrations: fresh databases, databases with rows, edits, concurrency, failures."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime

import pytest

from occurrence_store import MigrationError, Store, TaskStatus
from occurrence_store.migrations import Migration, Migrator, load_migrations

LATEST = len(load_migrations("sqlite"))


async def _tables(store: Store) -> set[str]:
    async with store.db.connection() as conn:
        if store.dialect == "postgresql":
            rows = await conn.fetch(
                "SELECT tablename AS name FROM pg_tables WHERE schemaname = 'public'")
        else:
            rows = await conn.fetch("SELECT name FROM sqlite_master WHERE type = 'table'")
    return {r["name"] for r in rows}


async def test_fresh_database(db_url: str) -> None:
    store = await Store.open(db_url)
    try:
        applied = await store.migrator.migrate()
        assert [m.version for m in applied] == list(range(1, LATEST + 1))
        assert {"tasks", "thoughts", "occurrences", "task_transfers",
                "schema_migrations"} <= await _tables(store)
        assert await store.migrator.migrate() == []  # idempotent
        statuses = await store.migrator.status()
        assert all(s.applied and s.checksum_ok for s in statuses)
        assert await store.migrator.current_version() == LATEST
    finally:
        await store.close()


async def test_existing_rows_backfilled_to_default(db_url: str) -> None:
    store = await Store.open(db_url)
    try:
        await store.migrator.migrate(target=1)
        now = datetime.now(UTC)  # the schema before 004 has no database clock
        async with store.db.connection() as conn:
            for i in range(5):
                await conn.execute(
                    "INSERT INTO tasks (task_id, description, status, created_at, updated_at) "
                    "VALUES ($1, 'old', 'pending', $2, $2)", f"old-{i}", now)
            await conn.execute(
                "INSERT INTO thoughts (thought_id, source_task_id, status, content, created_at, "
                "updated_at) VALUES ('th-old', 'old-0', 'pending', 'x', $1, $1)", now)
        await store.migrator.migrate()
        legacy = store.scope("default")
        assert await legacy.count_tasks(TaskStatus.PENDING) == 5
        assert len(await legacy.get_thoughts_by_task("old-0")) == 1
        assert len(await legacy.activate_pending_tasks(2)) == 2
        assert await store.scope("agent-0").count_tasks() == 0
    finally:
        await store.close()


async def test_edited_migration_is_an_error(db_url: str) -> None:
    store = await Store.open(db_url, migrate=True)
    try:
        edited = [dataclasses.replace(m, sql=m.sql + "\n-- edited") if m.version == 2 else m
                  for m in load_migrations(store.dialect)]
        with pytest.raises(MigrationError, match="was edited after it was applied"):
            await Migrator(store.db, edited).migrate()
        statuses = await Migrator(store.db, edited).status()
        assert [s.checksum_ok for s in statuses] == [s.version != 2 for s in statuses]
    finally:
        await store.close()


async def test_unknown_applied_migration_is_an_error(db_url: str) -> None:
    store = await Store.open(db_url, migrate=True)
    try:
        older_code = load_migrations(store.dialect)[:2]
        with pytest.raises(MigrationError, match="does not know"):
            await Migrator(store.db, older_code).migrate()
    finally:
        await store.close()


async def test_failed_migration_leaves_schema_unchanged(db_url: str) -> None:
    store = await Store.open(db_url, migrate=True)
    try:
        broken = Migration(LATEST + 1, "broken", "CREATE TABLE half_done (x INTEGER);\n"
                                        "ALTER TABLE no_such_table ADD COLUMN y INTEGER;\n")
        with pytest.raises(MigrationError,
                           match=f"{LATEST + 1:03d}_broken failed and was rolled back"):
            await Migrator(store.db, [*load_migrations(store.dialect), broken]).migrate()
        assert "half_done" not in await _tables(store)
        assert await store.migrator.current_version() == LATEST
    finally:
        await store.close()


async def test_concurrent_migrators_serialize(db_url: str) -> None:
    stores = [await Store.open(db_url) for _ in range(5)]
    try:
        results = await asyncio.gather(*(s.migrator.migrate() for s in stores))
        # every migration was applied by exactly one of the five
        assert sorted(m.version for r in results for m in r) == list(range(1, LATEST + 1))
        async with stores[0].db.connection() as conn:
            rows = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert [r["version"] for r in rows] == list(range(1, LATEST + 1))
    finally:
        for s in stores:
            await s.close()


def test_every_dialect_has_the_same_migrations() -> None:
    pg = [(m.version, m.name) for m in load_migrations("postgresql")]
    lite = [(m.version, m.name) for m in load_migrations("sqlite")]
    assert pg == lite and pg[0] == (1, "initial_schema")


async def test_a_single_agent_database_keeps_working_after_004(db_url: str) -> None:
    """Rows written before agents, attempts and the database clock get defaults and go on."""
    store = await Store.open(db_url)
    try:
        await store.migrator.migrate(target=3)
        now = datetime.now(UTC)
        async with store.db.connection() as conn:
            await conn.execute(
                "INSERT INTO occurrences (occurrence_id, state, version, registered_at, "
                "heartbeat_at, lease_expires_at, state_changed_at) "
                "VALUES ('agent-0', 'active', 1, $1, $1, $1, $1)", now)
            await conn.execute(
                "INSERT INTO tasks (task_id, agent_occurrence_id, description, status, "
                "created_at, updated_at) VALUES ('old-0', 'agent-0', 'old', 'active', $1, $1)",
                now)
            await conn.execute(
                "INSERT INTO thoughts (thought_id, source_task_id, agent_occurrence_id, status, "
                "content, created_at, updated_at) VALUES ('th-0', 'old-0', 'agent-0', "
                "'pending', 'x', $1, $1)", now)
        await store.migrator.migrate()
        row = await store.registry.get("agent-0")
        assert row is not None and row.agent_id == "" and row.owner_uid is None
        [thought] = await store.scope("agent-0").claim_pending_thoughts(5)
        assert thought.thought_id == "th-0" and thought.attempts == 1
        task = await store.scope("agent-0").get_task("old-0")
        assert task.agent_id == "" and task.idempotency_key is None
        decision, won = await store.shared.try_claim_shared_task("wakeup", "agent-0")
        assert won and "@" not in decision.task_id  # the default agent keeps the old ids
        assert await store.registry.live_count() == 0  # its old lease is long over
    finally:
        await store.close()
