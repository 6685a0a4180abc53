-- GET /tasks pages through one occurrence's tasks in creation order (keyset: created_at,
-- task_id): this index serves each page from where the last ended, so a page costs the same
-- on an occurrence with a million tasks as on one with ten.
CREATE INDEX IF NOT EXISTS idx_tasks_occurrence_created
    ON tasks (agent_occurrence_id, created_at, task_id);
