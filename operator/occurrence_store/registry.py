"""The occurrence registry: who runs, in what state, and whether its lease is alive.

Heartbeats extend a lease (renew at most every third of the TTL). State changes are
optimistic: the writer names the version it read, and a stale writer gets
:class:`VersionConflict` with nothing overwritten. Rows are never deleted by the core:
a departed occurrence becomes ``retired`` only after its work was reassigned.
"""

from __future__ import annotations

from datetime import timedelta

from occurrence_store.clock import Clock
from occurrence_store.database import Database, Row
from occurrence_store.errors import UnknownOccurrence, VersionConflict
from occurrence_store.models import (
    Occurrence,
    OccurrenceState,
    TaskStatus,
    validate_occurrence_id,
)

DEFAULT_LEASE_SECONDS = 30.0

_COLUMNS = (
    "o.occurrence_id, o.state, o.version, o.ordinal, o.registered_at, o.heartbeat_at, "
    "o.lease_expires_at, o.state_changed_at, o.quiesced"
)
_WITH_COUNTS = (
    f"SELECT {_COLUMNS}, "
    "(SELECT COUNT(*) FROM tasks t WHERE t.agent_occurrence_id = o.occurrence_id "
    " AND t.status = $1) AS pending_tasks, "
    "(SELECT COUNT(*) FROM tasks t WHERE t.agent_occurrence_id = o.occurrence_id "
    " AND t.status = $2) AS active_tasks "
    "FROM occurrences o"
)


def _occurrence(row: Row) -> Occurrence:
    return Occurrence.model_validate(row)


class Registry:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self._now = clock

    async def register(
        self, occurrence_id: str, *, ordinal: int | None = None,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
    ) -> Occurrence:
        """Insert or refresh this occurrence's row and start its lease.

        A ``draining`` state survives re-registration (a pod restarting mid-drain must stay
        fenced); a ``retired`` occurrence that comes back (scale-up reusing its ordinal)
        becomes ``active`` again with a new version.
        """
        validate_occurrence_id(occurrence_id)
        now = self._now()
        lease = now + timedelta(seconds=lease_seconds)
        async with self.db.transaction() as conn:
            await conn.execute(
                "INSERT INTO occurrences AS o (occurrence_id, state, version, ordinal, "
                "registered_at, heartbeat_at, lease_expires_at, state_changed_at, quiesced) "
                "VALUES ($1, $2, 1, $3, $4, $4, $5, $4, $6) "
                "ON CONFLICT (occurrence_id) DO UPDATE SET "
                "  heartbeat_at = excluded.heartbeat_at, "
                "  lease_expires_at = excluded.lease_expires_at, "
                "  ordinal = COALESCE(excluded.ordinal, o.ordinal), "
                "  quiesced = CASE WHEN o.state = $7 THEN o.quiesced ELSE excluded.quiesced END, "
                "  registered_at = excluded.registered_at, "
                "  state = CASE WHEN o.state = $8 THEN $2 ELSE o.state END, "
                "  state_changed_at = CASE WHEN o.state = $8 THEN excluded.state_changed_at "
                "                     ELSE o.state_changed_at END, "
                "  version = CASE WHEN o.state = $8 THEN o.version + 1 ELSE o.version END",
                occurrence_id, OccurrenceState.ACTIVE.value, ordinal, now, lease, False,
                OccurrenceState.DRAINING.value, OccurrenceState.RETIRED.value,
            )
            row = await self._get(conn, occurrence_id)
        assert row is not None
        return row

    async def heartbeat(self, occurrence_id: str, *,
                        lease_seconds: float = DEFAULT_LEASE_SECONDS) -> Occurrence:
        """Extend the lease; the returned row tells the runtime its current state."""
        now = self._now()
        async with self.db.connection() as conn:
            row = await conn.fetchrow(
                "UPDATE occurrences SET heartbeat_at = $1, lease_expires_at = $2 "
                "WHERE occurrence_id = $3 RETURNING occurrence_id",
                now, now + timedelta(seconds=lease_seconds), occurrence_id,
            )
            if row is None:
                raise UnknownOccurrence(f"occurrence {occurrence_id!r} is not registered")
            occurrence = await self._get(conn, occurrence_id)
        assert occurrence is not None
        return occurrence

    async def set_state(
        self, occurrence_id: str, state: OccurrenceState, *, expected_version: int | None = None
    ) -> Occurrence:
        """Change the lifecycle state.

        With ``expected_version`` the write lands only if the row still has that version,
        else :class:`VersionConflict`. Without it, a missing row is created in ``state``
        (the operator fences an occurrence whose pod never registered).
        """
        validate_occurrence_id(occurrence_id)
        state = OccurrenceState(state)
        now = self._now()
        async with self.db.transaction() as conn:
            if expected_version is None:
                await conn.execute(
                    "INSERT INTO occurrences AS o (occurrence_id, state, version, registered_at, "
                    "heartbeat_at, lease_expires_at, state_changed_at, quiesced) "
                    "VALUES ($1, $2, 1, $3, $3, $3, $3, $4) ON CONFLICT (occurrence_id) DO UPDATE "
                    "SET state = excluded.state, version = o.version + 1, "
                    "state_changed_at = excluded.state_changed_at, "
                    "quiesced = CASE WHEN o.state = excluded.state THEN o.quiesced "
                    "           ELSE excluded.quiesced END "
                    "WHERE o.state <> excluded.state",
                    occurrence_id, state.value, now, False,
                )
            else:
                row = await conn.fetchrow(
                    "UPDATE occurrences SET state = $1, version = version + 1, "
                    "state_changed_at = $2, quiesced = $3 "
                    "WHERE occurrence_id = $4 AND version = $5 RETURNING occurrence_id",
                    state.value, now, False, occurrence_id, expected_version,
                )
                if row is None:
                    actual = await conn.fetchval(
                        "SELECT version FROM occurrences WHERE occurrence_id = $1", occurrence_id
                    )
                    raise VersionConflict(
                        occurrence_id, expected_version, int(actual) if actual else None
                    )
            occurrence = await self._get(conn, occurrence_id)
        assert occurrence is not None
        return occurrence

    async def set_quiesced(self, occurrence_id: str, quiesced: bool = True) -> bool:
        """The runtime reports that it stopped working (in-flight done or released)."""
        async with self.db.connection() as conn:
            row = await conn.fetchrow(
                "UPDATE occurrences SET quiesced = $1 WHERE occurrence_id = $2 "
                "RETURNING occurrence_id",
                quiesced, occurrence_id,
            )
        return row is not None

    async def _get(self, conn, occurrence_id: str) -> Occurrence | None:
        row = await conn.fetchrow(
            _WITH_COUNTS + " WHERE o.occurrence_id = $3",
            TaskStatus.PENDING.value, TaskStatus.ACTIVE.value, occurrence_id,
        )
        return _occurrence(row) if row else None

    async def get(self, occurrence_id: str) -> Occurrence | None:
        async with self.db.connection() as conn:
            return await self._get(conn, occurrence_id)

    async def list(self, *, state: OccurrenceState | None = None) -> list[Occurrence]:
        sql = _WITH_COUNTS
        args: list[object] = [TaskStatus.PENDING.value, TaskStatus.ACTIVE.value]
        if state is not None:
            sql += " WHERE o.state = $3"
            args.append(OccurrenceState(state).value)
        async with self.db.connection() as conn:
            rows = await conn.fetch(
                sql + " ORDER BY COALESCE(o.ordinal, 2147483647), o.occurrence_id", *args
            )
        return [_occurrence(r) for r in rows]

    async def expired(self) -> list[Occurrence]:
        """Non-retired occurrences whose lease ran out: crashed or stuck."""
        now = self._now()
        return [o for o in await self.list() if o.state != OccurrenceState.RETIRED
                and o.lease_expired(now)]

    async def live_count(self) -> int:
        """How many occurrences hold a live lease and are not retired."""
        now = self._now()
        async with self.db.connection() as conn:
            value = await conn.fetchval(
                "SELECT COUNT(*) FROM occurrences WHERE state <> $1 AND lease_expires_at >= $2",
                OccurrenceState.RETIRED.value, now,
            )
        return int(value or 0)
