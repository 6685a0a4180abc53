-- Fencing, bounded retries, idempotent submission, agent scoping and the database clock.
-- Every new column has a default or is nullable: databases written by a single agent keep
-- working unchanged (their rows belong to the default agent '').
-- The database clock is the host's (occurrence_store/clock.py): occurrence_now() and
-- occurrence_after() are registered on every connection, not stored in the file.

-- Thought retries: how many times a thought was claimed, when it may be claimed again, and
-- the last error that sent it back.
ALTER TABLE thoughts ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE thoughts ADD COLUMN retry_at TEXT;
ALTER TABLE thoughts ADD COLUMN last_error TEXT;

-- The agent a task was submitted to, and its idempotency key (unique per agent).
ALTER TABLE tasks ADD COLUMN agent_id TEXT NOT NULL DEFAULT '';
ALTER TABLE tasks ADD COLUMN idempotency_key TEXT;
CREATE UNIQUE INDEX IF NOT EXISTS uq_tasks_agent_idempotency_key
    ON tasks (agent_id, idempotency_key) WHERE idempotency_key IS NOT NULL;

-- Which agent owns an occurrence id, and the fenced occurrence's grace for in-flight work.
ALTER TABLE occurrences ADD COLUMN agent_id TEXT NOT NULL DEFAULT '';
ALTER TABLE occurrences ADD COLUMN owner_uid TEXT;
ALTER TABLE occurrences ADD COLUMN drain_grace_seconds REAL;

-- Named locks with a lease (PostgreSQL uses advisory locks instead): one operator at a time
-- drives the drain of one AgentDeployment.
CREATE TABLE IF NOT EXISTS occurrence_locks (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    expires_at  TEXT NOT NULL
);
