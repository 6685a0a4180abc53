-- Occurrence registry, transfer audit trail, and leases on shared-task claims.
CREATE TABLE IF NOT EXISTS occurrences (
    occurrence_id     TEXT PRIMARY KEY,
    state             TEXT NOT NULL DEFAULT 'active'
                      CHECK (state IN ('active', 'draining', 'retired')),
    version           BIGINT NOT NULL DEFAULT 1,
    ordinal           INTEGER,
    registered_at     TIMESTAMPTZ NOT NULL,
    heartbeat_at      TIMESTAMPTZ NOT NULL,
    lease_expires_at  TIMESTAMPTZ NOT NULL,
    state_changed_at  TIMESTAMPTZ NOT NULL,
    quiesced          BOOLEAN NOT NULL DEFAULT FALSE
);

CREATE TABLE IF NOT EXISTS task_transfers (
    transfer_id         BIGSERIAL PRIMARY KEY,
    task_id             TEXT NOT NULL,
    from_occurrence_id  TEXT NOT NULL,
    to_occurrence_id    TEXT NOT NULL,
    reason              TEXT NOT NULL,
    thoughts_moved      INTEGER NOT NULL DEFAULT 0,
    transferred_at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_task_transfers_task ON task_transfers (task_id, transfer_id);

ALTER TABLE tasks ADD COLUMN IF NOT EXISTS claimed_by TEXT;
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS lease_expires_at TIMESTAMPTZ;
