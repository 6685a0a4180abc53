"""The occurrence registry: who runs, for which agent, in what state, with a live lease?

Heartbeats extend a lease. State changes are optimistic: the writer names the version it
read, and a stale writer gets :class:`VersionConflict` with nothing overwritten. A fence
(any state but ``active``) is announced on PostgreSQL with ``NOTIFY`` in the fence's own
transaction, so a fenced runtime learns of it in milliseconds; it polls its row anyway.
Each id belongs to one agent (``agent_id``, the AgentDeployment ``<namespace>/<name>``): a
runtime or operator of another agent is refused with :class:`OccurrenceIdConflict`. Rows are
never deleted by the core: a departed occurrence becomes ``retired`` once its work moved.
All times are the database's (:mod:`occurrence_store.clock`).
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence

from occurrence_store.clock import NOW_SQL, after_sql
from occurrence_store.database import Connection, Database, Row
from occurrence_store.errors import (
    OccurrenceIdConflict,
    StoreError,
    UnknownOccurrence,
    VersionConflict,
)
from occurrence_store.models import (
    DEFAULT_AGENT_ID,
    AgentId,
    Occurrence,
    OccurrenceId,
    OccurrenceState,
    TaskStatus,
    validate_occurrence_id,
)

DEFAULT_LEASE_SECONDS = 30.0
NOTIFY_CHANNEL = "occurrence_registry"
"""PostgreSQL channel of fence notifications; the payload is the occurrence id."""

_COLUMNS = (
    "o.occurrence_id, o.state, o.version, o.ordinal, o.registered_at, o.heartbeat_at, "
    "o.lease_expires_at, o.state_changed_at, o.quiesced, o.agent_id, o.owner_uid, "
    "o.drain_grace_seconds, o.revision"
)
_WITH_COUNTS = (
    f"SELECT {_COLUMNS}, {NOW_SQL} AS observed_at, "
    "(SELECT COUNT(*) FROM tasks t WHERE t.agent_occurrence_id = o.occurrence_id "
    " AND t.status = :pending) AS pending_tasks, "
    "(SELECT COUNT(*) FROM tasks t WHERE t.agent_occurrence_id = o.occurrence_id "
    " AND t.status = :active) AS active_tasks, "
    "(SELECT r.stable_revision FROM agent_rollouts r WHERE r.agent_id = o.agent_id) "
    " AS pinned_revision "
    "FROM occurrences o"
)
_COUNTED = {"pending": TaskStatus.PENDING.value, "active": TaskStatus.ACTIVE.value}
"""The parameters of :data:`_WITH_COUNTS`."""
_BACKLOG = (
    "SELECT COUNT(*) FROM occurrences o JOIN tasks t ON t.agent_occurrence_id = o.occurrence_id "
    "WHERE o.agent_id = :agent_id AND t.status IN (:pending, :active)"
)
_GET = _WITH_COUNTS + " WHERE o.occurrence_id = :occurrence_id"

# A draining state survives re-registration; a retired occurrence comes back active.
_REGISTER = (
    "INSERT INTO occurrences AS o (occurrence_id, state, version, ordinal, "
    "registered_at, heartbeat_at, lease_expires_at, state_changed_at, quiesced, "
    f"agent_id, revision) VALUES (:occurrence_id, :active, 1, :ordinal, {NOW_SQL}, {NOW_SQL}, "
    f"{after_sql(':lease')}, {NOW_SQL}, :quiesced, :agent_id, :revision) "
    "ON CONFLICT (occurrence_id) DO UPDATE SET "
    "  revision = excluded.revision, "
    "  heartbeat_at = excluded.heartbeat_at, "
    "  lease_expires_at = excluded.lease_expires_at, "
    "  ordinal = COALESCE(excluded.ordinal, o.ordinal), "
    "  quiesced = CASE WHEN o.state = :draining THEN o.quiesced ELSE excluded.quiesced END, "
    "  registered_at = excluded.registered_at, "
    "  agent_id = CASE WHEN excluded.agent_id = '' THEN o.agent_id "
    "             ELSE excluded.agent_id END, "
    "  state = CASE WHEN o.state = :retired THEN :active ELSE o.state END, "
    "  state_changed_at = CASE WHEN o.state = :retired THEN excluded.state_changed_at "
    "                     ELSE o.state_changed_at END, "
    "  version = CASE WHEN o.state = :retired THEN o.version + 1 ELSE o.version END "
    "WHERE o.agent_id IN ('', excluded.agent_id) OR excluded.agent_id = ''"
)
_RESERVE = (
    "INSERT INTO occurrences (occurrence_id, state, version, registered_at, "
    "heartbeat_at, lease_expires_at, state_changed_at, quiesced, agent_id, "
    f"owner_uid) VALUES (:occurrence_id, :active, 1, {NOW_SQL}, {NOW_SQL}, {NOW_SQL}, "
    f"{NOW_SQL}, :quiesced, :agent_id, :owner_uid) ON CONFLICT (occurrence_id) DO NOTHING"
)
_TAKE_OWNERSHIP = (
    "UPDATE occurrences SET agent_id = :agent_id, owner_uid = COALESCE(:owner_uid, owner_uid) "
    "WHERE occurrence_id = :occurrence_id AND agent_id IN ('', :agent_id)"
)
_DISOWN = ("UPDATE occurrences SET agent_id = '', owner_uid = NULL "
           "WHERE occurrence_id = $1 AND (agent_id <> '' OR owner_uid IS NOT NULL) "
           "RETURNING occurrence_id")
_HEARTBEAT = (f"UPDATE occurrences SET heartbeat_at = {NOW_SQL}, "
              f"lease_expires_at = {after_sql('$1')} WHERE occurrence_id = $2 "
              "RETURNING occurrence_id")
_FENCE_OR_CREATE = (
    "INSERT INTO occurrences AS o (occurrence_id, state, version, registered_at, "
    "heartbeat_at, lease_expires_at, state_changed_at, quiesced, "
    f"drain_grace_seconds) VALUES (:occurrence_id, :state, 1, {NOW_SQL}, {NOW_SQL}, "
    f"{NOW_SQL}, {NOW_SQL}, :quiesced, :grace) ON CONFLICT (occurrence_id) DO UPDATE "
    "SET state = excluded.state, version = o.version + 1, "
    "state_changed_at = excluded.state_changed_at, "
    "drain_grace_seconds = excluded.drain_grace_seconds, "
    "quiesced = CASE WHEN o.state = excluded.state THEN o.quiesced "
    "           ELSE excluded.quiesced END "
    "WHERE o.state <> excluded.state "
    "OR COALESCE(o.drain_grace_seconds, -1) <> "
    "COALESCE(excluded.drain_grace_seconds, -1)"
)
_SET_STATE_IF_VERSION = (
    f"UPDATE occurrences SET state = :state, version = version + 1, "
    f"state_changed_at = {NOW_SQL}, quiesced = :quiesced, drain_grace_seconds = :grace "
    "WHERE occurrence_id = :occurrence_id AND version = :version RETURNING occurrence_id"
)
_VERSION = "SELECT version FROM occurrences WHERE occurrence_id = $1"
_SET_QUIESCED = ("UPDATE occurrences SET quiesced = $1 WHERE occurrence_id = $2 "
                 "RETURNING occurrence_id")
_LIST_ORDER = " ORDER BY COALESCE(o.ordinal, 2147483647), o.occurrence_id"
_LIVE_COUNT = (f"SELECT COUNT(*) FROM occurrences WHERE state <> :retired "
               f"AND lease_expires_at >= {NOW_SQL}")


MAX_REVISION = 253
"""The longest revision kept (a Kubernetes label value is at most 63; room for others)."""


def _revision(revision: str | None) -> str | None:
    if revision is None or revision == "":
        return None
    if len(revision) > MAX_REVISION or not revision.isprintable():
        raise StoreError(f"revision must be 1-{MAX_REVISION} printable characters")
    return revision


def _occurrence(row: Row) -> Occurrence:
    return Occurrence.model_validate(row)


class Registry:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def register(
        self, occurrence_id: OccurrenceId, *, ordinal: int | None = None,
        lease_seconds: float = DEFAULT_LEASE_SECONDS, agent_id: AgentId = DEFAULT_AGENT_ID,
        revision: str | None = None,
    ) -> Occurrence:
        """Insert or refresh this occurrence's row and start its lease.

        A ``draining`` state survives re-registration (a pod restarting mid-drain must stay
        fenced); a ``retired`` occurrence that comes back (scale-up reusing its ordinal)
        becomes ``active`` again with a new version. An id owned by another agent raises
        :class:`OccurrenceIdConflict` and changes nothing. ``revision`` is what the process
        runs (its pod's controller-revision-hash): every status it sets from now on is
        stamped with it.
        """
        validate_occurrence_id(occurrence_id)
        retired, draining = OccurrenceState.RETIRED.value, OccurrenceState.DRAINING.value
        async with self.db.transaction() as conn:
            await conn.execute(
                _REGISTER, occurrence_id=occurrence_id, active=OccurrenceState.ACTIVE.value,
                ordinal=ordinal, lease=float(lease_seconds), quiesced=False, agent_id=agent_id,
                draining=draining, retired=retired, revision=_revision(revision),
            )
            row = await self._get(conn, occurrence_id)
        assert row is not None
        _check_owner(row, agent_id)
        return row

    async def claim(self, occurrence_ids: Sequence[OccurrenceId], *, agent_id: AgentId,
                    owner_uid: str | None = None) -> list[OccurrenceIdConflict]:
        """Make ``agent_id`` the owner of ``occurrence_ids``; return the ids refused.

        All or nothing: when every id is unowned (or unknown: a row is reserved for it) or
        already ``agent_id``'s, all are taken; ``owner_uid`` (the AgentDeployment's UID) is
        recorded, and replaced when an AgentDeployment of the same namespace and name is
        created again. If any belongs to another agent, none is taken and each such id comes
        back as an :class:`OccurrenceIdConflict`.
        """
        if not agent_id:
            raise ValueError("claiming occurrence ids needs an agent id")
        ids = [validate_occurrence_id(i) for i in dict.fromkeys(occurrence_ids)]
        if not ids:
            return []
        try:
            async with self.db.transaction() as conn:
                refused = _refused(ids, await _owners(conn, ids), agent_id)
                if refused:  # all or nothing: not even the free ids are taken
                    return refused
                await self._take(conn, ids, agent_id, owner_uid)
                refused = _refused(ids, await _owners(conn, ids), agent_id)
                if refused:  # another agent claimed some meanwhile: take none
                    raise _ClaimLost(refused)
        except _ClaimLost as lost:
            return lost.refused
        return []

    async def _take(self, conn: Connection, ids: Sequence[OccurrenceId], agent_id: AgentId,
                    owner_uid: str | None) -> None:
        owners = await _owners(conn, ids)
        for occurrence_id in ids:
            current = owners.get(occurrence_id)
            if current is None:
                await conn.execute(
                    _RESERVE, occurrence_id=occurrence_id, active=OccurrenceState.ACTIVE.value,
                    quiesced=False, agent_id=agent_id, owner_uid=owner_uid,
                )
            elif current[0] == "" or (owner_uid is not None and current[1] != owner_uid):
                await conn.execute(_TAKE_OWNERSHIP, agent_id=agent_id, owner_uid=owner_uid,
                                   occurrence_id=occurrence_id)

    async def disown(self, occurrence_ids: Sequence[OccurrenceId]) -> int:
        """Forget the owner of ``occurrence_ids`` (its agent is gone for good); return how
        many rows changed. The next agent to claim or register them takes them."""
        ids = [validate_occurrence_id(i) for i in dict.fromkeys(occurrence_ids)]
        changed = 0
        async with self.db.transaction() as conn:
            for occurrence_id in ids:
                row = await conn.fetchrow(_DISOWN, occurrence_id)
                changed += row is not None
        return changed

    async def heartbeat(self, occurrence_id: OccurrenceId, *,
                        lease_seconds: float = DEFAULT_LEASE_SECONDS) -> Occurrence:
        """Extend the lease; the returned row tells the runtime its current state."""
        async with self.db.connection() as conn:
            row = await conn.fetchrow(_HEARTBEAT, float(lease_seconds), occurrence_id)
            if row is None:
                raise UnknownOccurrence(f"occurrence {occurrence_id!r} is not registered")
            occurrence = await self._get(conn, occurrence_id)
        assert occurrence is not None
        return occurrence

    async def set_state(
        self, occurrence_id: OccurrenceId, state: OccurrenceState, *,
        expected_version: int | None = None,
        grace_seconds: float | None = None,
    ) -> Occurrence:
        """Change the lifecycle state.

        With ``expected_version`` the write lands only if the row still has that version,
        else :class:`VersionConflict`. Without it, a missing row is created in ``state``
        (the operator fences an occurrence whose pod never registered). ``grace_seconds``
        (with a fence) tells the runtime how long its in-flight work may go on before it
        releases it. Any state but ``active`` is a fence: on PostgreSQL the transaction
        notifies ``occurrence_registry`` with the id, and the runtime reacts at once.
        """
        validate_occurrence_id(occurrence_id)
        state = OccurrenceState(state)
        grace = None if grace_seconds is None else float(grace_seconds)
        async with self.db.transaction() as conn:
            if expected_version is None:
                await conn.execute(_FENCE_OR_CREATE, occurrence_id=occurrence_id,
                                   state=state.value, quiesced=False, grace=grace)
            else:
                row = await conn.fetchrow(
                    _SET_STATE_IF_VERSION, state=state.value, quiesced=False, grace=grace,
                    occurrence_id=occurrence_id, version=expected_version,
                )
                if row is None:
                    actual = await conn.fetchval(_VERSION, occurrence_id)
                    raise VersionConflict(
                        occurrence_id, expected_version, int(actual) if actual else None
                    )
            await self.db.notify(conn, NOTIFY_CHANNEL, occurrence_id)
            occurrence = await self._get(conn, occurrence_id)
        assert occurrence is not None
        return occurrence

    async def set_quiesced(self, occurrence_id: OccurrenceId, quiesced: bool = True) -> bool:
        """The runtime reports that it stopped working (in-flight done or released)."""
        async with self.db.connection() as conn:
            row = await conn.fetchrow(_SET_QUIESCED, quiesced, occurrence_id)
        return row is not None

    async def _get(self, conn: Connection, occurrence_id: OccurrenceId) -> Occurrence | None:
        row = await conn.fetchrow(_GET, **_COUNTED, occurrence_id=occurrence_id)
        return _occurrence(row) if row else None

    async def get(self, occurrence_id: OccurrenceId) -> Occurrence | None:
        async with self.db.connection() as conn:
            return await self._get(conn, occurrence_id)

    async def list(self, *, state: OccurrenceState | None = None,
                   agent_id: AgentId | None = None) -> list[Occurrence]:
        """Every occurrence (of one state, of one agent when given), with its work counts."""
        sql = _WITH_COUNTS
        params: dict[str, object] = dict(_COUNTED)
        where = []
        if state is not None:
            params["state"] = OccurrenceState(state).value
            where.append("o.state = :state")
        if agent_id is not None:
            params["agent_id"] = agent_id
            where.append("o.agent_id = :agent_id")
        if where:
            sql += " WHERE " + " AND ".join(where)
        async with self.db.connection() as conn:
            rows = await conn.fetch(sql + _LIST_ORDER, **params)
        return [_occurrence(r) for r in rows]

    async def expired(self) -> builtins.list[Occurrence]:
        """Non-retired occurrences whose lease ran out: crashed or stuck."""
        return [o for o in await self.list() if o.state != OccurrenceState.RETIRED
                and o.lease_expired()]

    async def backlog(self, agent_id: AgentId) -> int:
        """Pending and active tasks of every occurrence of ``agent_id`` (whatever its state:
        work parked on a stopped occurrence counts), in one indexed count."""
        async with self.db.connection() as conn:
            value = await conn.fetchval(_BACKLOG, **_COUNTED, agent_id=agent_id)
        return int(value or 0)

    async def live_count(self, agent_id: AgentId | None = None, *,
                         revision: str | None = None) -> int:
        """How many occurrences (of ``agent_id`` when given; registered on ``revision`` when
        given) hold a live lease and are not retired: the number of occurrences a shared
        decision is taken for, or whether a revision still runs anywhere."""
        sql = _LIVE_COUNT
        params: dict[str, object] = {"retired": OccurrenceState.RETIRED.value}
        if agent_id is not None:
            sql += " AND agent_id = :agent_id"
            params["agent_id"] = agent_id
        if revision is not None:
            sql += " AND revision = :revision"
            params["revision"] = revision
        async with self.db.connection() as conn:
            value = await conn.fetchval(sql, **params)
        return int(value or 0)


class _ClaimLost(Exception):
    def __init__(self, refused: list[OccurrenceIdConflict]) -> None:
        self.refused = refused


def _refused(ids: Sequence[OccurrenceId], owners: dict[OccurrenceId, tuple[AgentId, str | None]],
             agent_id: AgentId) -> list[OccurrenceIdConflict]:
    return [OccurrenceIdConflict(i, owners[i][0], agent_id, owners[i][1])
            for i in ids if i in owners and owners[i][0] not in ("", agent_id)]


async def _owners(conn: Connection, ids: Sequence[OccurrenceId]
                  ) -> dict[OccurrenceId, tuple[AgentId, str | None]]:
    rows = await conn.fetch(
        "SELECT occurrence_id, agent_id, owner_uid FROM occurrences "
        f"WHERE occurrence_id IN ({', '.join(f'${i}' for i in range(1, len(ids) + 1))})", *ids)
    return {r["occurrence_id"]: (r["agent_id"], r["owner_uid"]) for r in rows}


def _check_owner(row: Occurrence, agent_id: AgentId) -> None:
    if agent_id and row.agent_id not in ("", agent_id):
        raise OccurrenceIdConflict(row.occurrence_id, row.agent_id, agent_id, row.owner_uid)
