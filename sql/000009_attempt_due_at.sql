-- When each attempt was due, so its start lateness (started_at - due_at) is in the history, and
-- an index by start time for the operator view's recent activity (src/jobs/activity.ts). Rows
-- arrive in about start order, so inserts land on the index's right edge; the table is
-- append-only, so the index costs no HOT updates (unlike one on jobs.started_at would).
-- Attempts recorded before this migration have no due_at and count as starts, not lateness.
ALTER TABLE job_attempts ADD COLUMN due_at timestamptz;
CREATE INDEX job_attempts_started_idx ON job_attempts (started_at);
