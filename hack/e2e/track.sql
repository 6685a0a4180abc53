-- Installed by the e2e scenario into the example's database after the migrations Job: a
-- record of every status change of every thought, written by the database itself in the
-- transaction that makes the change, so that "no thought completed twice" and "how many
-- thoughts ran twice" are read from the database, whatever the agents log or lose.
CREATE TABLE IF NOT EXISTS e2e_thought_events (
    event_id     BIGSERIAL PRIMARY KEY,
    thought_id   TEXT NOT NULL,
    task_id      TEXT NOT NULL,
    old_status   TEXT,
    new_status   TEXT NOT NULL,
    occurrence   TEXT NOT NULL,
    at           TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE OR REPLACE FUNCTION e2e_track_thought() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.status IS DISTINCT FROM OLD.status THEN
        INSERT INTO e2e_thought_events (thought_id, task_id, old_status, new_status, occurrence)
        VALUES (NEW.thought_id, NEW.source_task_id,
                CASE WHEN TG_OP = 'UPDATE' THEN OLD.status END, NEW.status,
                NEW.agent_occurrence_id);
    END IF;
    RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS e2e_track_thought ON thoughts;
CREATE TRIGGER e2e_track_thought AFTER INSERT OR UPDATE ON thoughts
    FOR EACH ROW EXECUTE FUNCTION e2e_track_thought();
-- what the load generator was told (loaded from its log at the end)
CREATE TABLE IF NOT EXISTS e2e_submitted (
    task_id      TEXT PRIMARY KEY,
    occurrence   TEXT NOT NULL,
    seq          INTEGER NOT NULL
);
