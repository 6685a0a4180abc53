-- Fencing, bounded retries, idempotent submission, agent scoping and the database clock.
-- Every new column has a default or is nullable: databases written by a single agent keep
-- working unchanged (their rows belong to the default agent '').

-- The database clock (occurrence_store/clock.py): leases, heartbeats, retries, claim expiry
-- and the shared decision's day all come from the server. `occurrence.clock_offset` is
-- unset outside tests.
CREATE OR REPLACE FUNCTION occurrence_now() RETURNS timestamptz
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT now() + COALESCE(NULLIF(current_setting('occurrence.clock_offset', true), '')::interval,
                                  interval '0 seconds') $$;

CREATE OR REPLACE FUNCTION occurrence_after(seconds double precision) RETURNS timestamptz
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT occurrence_now() + make_interval(secs => seconds) $$;

-- Thought retries: how many times a thought was claimed, when it may be claimed again, and
-- the last error that sent it back.
ALTER TABLE thoughts ADD COLUMN IF NOT EXISTS attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE thoughts ADD COLUMN IF NOT EXISTS retry_at TIMESTAMPTZ;
ALTER TABLE thoughts ADD COLUMN IF NOT EXISTS last_error TEXT;

-- The agent (AgentDeployment "<namespace>/<name>", '' for the default agent) a task was
-- submitted to, and its idempotency key: unique per agent, so a retried submission finds
-- the task the first one created, whichever occurrence it reached.
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS agent_id TEXT NOT NULL DEFAULT '';
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS idempotency_key TEXT;
CREATE UNIQUE INDEX IF NOT EXISTS uq_tasks_agent_idempotency_key
    ON tasks (agent_id, idempotency_key) WHERE idempotency_key IS NOT NULL;

-- Which agent owns an occurrence id (and the UID of the AgentDeployment that claimed it),
-- and how long a fenced occurrence may let its in-flight work finish before releasing it.
ALTER TABLE occurrences ADD COLUMN IF NOT EXISTS agent_id TEXT NOT NULL DEFAULT '';
ALTER TABLE occurrences ADD COLUMN IF NOT EXISTS owner_uid TEXT;
ALTER TABLE occurrences ADD COLUMN IF NOT EXISTS drain_grace_seconds DOUBLE PRECISION;
