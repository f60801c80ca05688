-- What runs a job: its handler's kind (src/executor/handlers.ts registers one handler per kind).
-- Unfinished jobs get theirs now (`jobs` holds only those); finished rows from before this
-- migration keep none, and all_jobs shows `log` for them without a target, `http` with.
ALTER TABLE jobs ADD COLUMN kind text;
UPDATE jobs SET kind = CASE WHEN target IS NULL THEN 'log' ELSE 'http' END;
-- The API always names the kind; a row written without one is a log job.
ALTER TABLE jobs ALTER COLUMN kind SET DEFAULT 'log', ALTER COLUMN kind SET NOT NULL;
ALTER TABLE job_history ADD COLUMN kind text;

CREATE OR REPLACE FUNCTION jobs_move_finished() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO job_history (id, shard_id, user_id, message, target, status, execute_at, due_at, attempt,
    max_attempts, last_error, idempotency_key, trace_context, dispatch_epoch, deadline_at, created_at,
    updated_at, started_at, finished_at, attempt_budget, kind)
  SELECT id, shard_id, user_id, message, target, status, execute_at, due_at, attempt,
    max_attempts, last_error, idempotency_key, trace_context, dispatch_epoch, deadline_at, created_at,
    updated_at, started_at, finished_at, attempt_budget, kind
  FROM changed WHERE status IN ('succeeded', 'failed', 'cancelled');
  DELETE FROM jobs j USING changed c WHERE j.id = c.id AND c.status IN ('succeeded', 'failed', 'cancelled');
  RETURN NULL;
END $$;

CREATE OR REPLACE VIEW all_jobs AS
  SELECT id, shard_id, user_id, message, target, status, execute_at, due_at, attempt, max_attempts,
    last_error, idempotency_key, trace_context, dispatch_epoch, deadline_at, created_at, updated_at,
    started_at, finished_at, attempt_budget,
    coalesce(kind, CASE WHEN target IS NULL THEN 'log' ELSE 'http' END) AS kind
  FROM jobs
  UNION ALL
  SELECT id, shard_id, user_id, message, target, status, execute_at, due_at, attempt, max_attempts,
    last_error, idempotency_key, trace_context, dispatch_epoch, deadline_at, created_at, updated_at,
    started_at, finished_at, attempt_budget,
    coalesce(kind, CASE WHEN target IS NULL THEN 'log' ELSE 'http' END) AS kind
  FROM job_history;
