-- Base tables, as a single-instance agent had them (no occurrence column yet).
CREATE TABLE IF NOT EXISTS tasks (
    task_id                 TEXT PRIMARY KEY,
    channel_id              TEXT NOT NULL DEFAULT '',
    description             TEXT NOT NULL,
    status                  TEXT NOT NULL,
    priority                INTEGER NOT NULL DEFAULT 0,
    created_at              TIMESTAMPTZ NOT NULL,
    updated_at              TIMESTAMPTZ NOT NULL,
    parent_task_id          TEXT,
    context_json            TEXT,
    outcome_json            TEXT,
    updated_info_available  BOOLEAN NOT NULL DEFAULT FALSE,
    updated_info_content    TEXT
);

CREATE TABLE IF NOT EXISTS thoughts (
    thought_id         TEXT PRIMARY KEY,
    source_task_id     TEXT NOT NULL,
    thought_type       TEXT NOT NULL DEFAULT 'standard',
    status             TEXT NOT NULL,
    content            TEXT NOT NULL,
    round_number       INTEGER NOT NULL DEFAULT 0,
    thought_depth      INTEGER NOT NULL DEFAULT 0,
    parent_thought_id  TEXT,
    created_at         TIMESTAMPTZ NOT NULL,
    updated_at         TIMESTAMPTZ NOT NULL,
    context_json       TEXT,
    final_action_json  TEXT
);

CREATE INDEX IF NOT EXISTS idx_tasks_status ON tasks (status);
CREATE INDEX IF NOT EXISTS idx_thoughts_source_task ON thoughts (source_task_id);
