-- GET /tasks pages through one occurrence's tasks in creation order (keyset: created_at,
-- task_id): this index serves each page from where the last ended, so a page costs the same
-- on an occurrence with a million tasks as on one with ten.
CREATE INDEX IF NOT EXISTS idx_tasks_occurrence_created
    ON tasks (agent_occurrence_id, created_at, task_id);

-- Retention deletes one agent's finished tasks oldest first, in batches.
CREATE INDEX IF NOT EXISTS idx_tasks_agent_retention ON tasks (agent_id, updated_at)
    WHERE status IN ('completed', 'failed', 'rejected');
