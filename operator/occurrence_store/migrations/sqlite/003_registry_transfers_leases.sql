-- Occurrence registry, transfer audit trail, and leases on shared-task claims.
CREATE TABLE IF NOT EXISTS occurrences (
    occurrence_id     TEXT PRIMARY KEY,
    state             TEXT NOT NULL DEFAULT 'active'
                      CHECK (state IN ('active', 'draining', 'retired')),
    version           INTEGER NOT NULL DEFAULT 1,
    ordinal           INTEGER,
    registered_at     TEXT NOT NULL,
    heartbeat_at      TEXT NOT NULL,
    lease_expires_at  TEXT NOT NULL,
    state_changed_at  TEXT NOT NULL,
    quiesced          INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS task_transfers (
    transfer_id         INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id             TEXT NOT NULL,
    from_occurrence_id  TEXT NOT NULL,
    to_occurrence_id    TEXT NOT NULL,
    reason              TEXT NOT NULL,
    thoughts_moved      INTEGER NOT NULL DEFAULT 0,
    transferred_at      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_task_transfers_task ON task_transfers (task_id, transfer_id);

ALTER TABLE tasks ADD COLUMN claimed_by TEXT;
ALTER TABLE tasks ADD COLUMN lease_expires_at TEXT;
