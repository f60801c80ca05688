-- The history of a job's runs: one row per attempt that ended, written in the statement that
-- records its outcome (the executor) or that gives the run up as lost (the rescuer). Lives in
-- the job's database; GET /api/v1/me/jobs/{id}/attempts reads it. `outcome` is the attempt's,
-- not the job's: a failed attempt may be retried.
CREATE TABLE job_attempts (
  job_id        bigint NOT NULL,
  attempt       integer NOT NULL CHECK (attempt >= 1),
  user_id       bigint NOT NULL,
  started_at    timestamptz NOT NULL,
  finished_at   timestamptz NOT NULL,
  outcome       text NOT NULL CHECK (outcome IN ('succeeded', 'failed', 'lost')),
  error_class   text,
  error_message text,
  http_status   integer,
  duration_ms   integer,
  PRIMARY KEY (job_id, attempt)
);
-- Append-only, like job_history.
ALTER TABLE job_attempts SET (autovacuum_vacuum_insert_scale_factor = 0.05);
