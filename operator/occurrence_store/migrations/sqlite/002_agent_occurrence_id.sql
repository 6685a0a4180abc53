-- Occurrence isolation: every task and thought has an owner. Rows that already exist
-- belong to the single instance that wrote them: 'default'.
ALTER TABLE tasks ADD COLUMN agent_occurrence_id TEXT NOT NULL DEFAULT 'default';
ALTER TABLE thoughts ADD COLUMN agent_occurrence_id TEXT NOT NULL DEFAULT 'default';

CREATE INDEX IF NOT EXISTS idx_tasks_occurrence_status
    ON tasks (agent_occurrence_id, status, created_at);
CREATE INDEX IF NOT EXISTS idx_tasks_occurrence_channel
    ON tasks (agent_occurrence_id, channel_id, status);
CREATE INDEX IF NOT EXISTS idx_thoughts_occurrence_status
    ON thoughts (agent_occurrence_id, status, created_at);
CREATE INDEX IF NOT EXISTS idx_thoughts_occurrence_task
    ON thoughts (agent_occurrence_id, source_task_id);
