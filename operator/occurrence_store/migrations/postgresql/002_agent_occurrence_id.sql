-- Occurrence isolation: every task and thought has an owner. Rows that already exist
-- belong to the single instance that wrote them: 'default'.
-- Thoughts of one task are found through idx_thoughts_source_task (a task's thoughts share
-- its owner), so no (occurrence, task) index: each index on agent_occurrence_id is paid
-- again for every row a drain moves.
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS agent_occurrence_id TEXT NOT NULL DEFAULT 'default';
ALTER TABLE thoughts ADD COLUMN IF NOT EXISTS agent_occurrence_id TEXT NOT NULL DEFAULT 'default';

-- Ordered as "pending tasks for activation" reads them, so the hot query is an index
-- range scan that stops after LIMIT rows instead of sorting an occurrence's whole backlog.
CREATE INDEX IF NOT EXISTS idx_tasks_occurrence_status
    ON tasks (agent_occurrence_id, status, priority DESC, created_at, task_id);
CREATE INDEX IF NOT EXISTS idx_tasks_occurrence_channel
    ON tasks (agent_occurrence_id, channel_id, status);
CREATE INDEX IF NOT EXISTS idx_thoughts_occurrence_status
    ON thoughts (agent_occurrence_id, status, created_at);
