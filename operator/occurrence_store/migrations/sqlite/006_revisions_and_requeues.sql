-- The revision (the StatefulSet's controller-revision-hash) behind each status change, and
-- the failed work a rolled-back revision gave back. Nullable columns: processes outside
-- Kubernetes report no revision and write NULL, as every row written before this migration.

-- The revision the occurrence's process runs, reported when it registers.
ALTER TABLE occurrences ADD COLUMN revision TEXT;
-- The revision of the occurrence that last set the row's status: for a finished task or
-- thought, the revision that finished it (rollout gates count per revision, not per pod).
ALTER TABLE tasks ADD COLUMN revision TEXT;
ALTER TABLE thoughts ADD COLUMN revision TEXT;

-- One row per task a rolled-back revision had failed and that went back to pending: at most
-- once per (task, revision), which is what makes giving back idempotent.
CREATE TABLE IF NOT EXISTS task_requeues (
    task_id           TEXT NOT NULL,
    revision          TEXT NOT NULL,
    agent_id          TEXT NOT NULL,
    occurrence_id     TEXT NOT NULL,
    reason            TEXT NOT NULL,
    previous_outcome  TEXT,
    requeued_at       TEXT NOT NULL,
    PRIMARY KEY (task_id, revision)
);
CREATE INDEX IF NOT EXISTS idx_task_requeues_agent ON task_requeues (agent_id, requeued_at);
-- Giving back looks for one agent's failed tasks of one revision.
CREATE INDEX IF NOT EXISTS idx_tasks_agent_failed_revision ON tasks (agent_id, revision)
    WHERE status = 'failed';

-- While a canary rollout is under way, only occurrences on the agent's stable revision
-- claim its shared decisions (wakeup, shutdown); a canary follows them. The operator sets
-- the row when a rollout starts and deletes it when none is under way.
CREATE TABLE IF NOT EXISTS agent_rollouts (
    agent_id         TEXT PRIMARY KEY,
    stable_revision  TEXT NOT NULL
);
