-- A job's attempt budget as created, set when it is first retried from `failed` (NULL: its
-- max_attempts is still the one it was created with). Each retry grants that many more attempts.
ALTER TABLE jobs ADD COLUMN attempt_budget integer;
ALTER TABLE job_history ADD COLUMN attempt_budget integer;

CREATE OR REPLACE FUNCTION jobs_move_finished() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO job_history (id, shard_id, user_id, message, target, status, execute_at, due_at, attempt,
    max_attempts, last_error, idempotency_key, trace_context, dispatch_epoch, deadline_at, created_at,
    updated_at, started_at, finished_at, attempt_budget)
  SELECT id, shard_id, user_id, message, target, status, execute_at, due_at, attempt,
    max_attempts, last_error, idempotency_key, trace_context, dispatch_epoch, deadline_at, created_at,
    updated_at, started_at, finished_at, attempt_budget
  FROM changed WHERE status IN ('succeeded', 'failed', 'cancelled');
  DELETE FROM jobs j USING changed c WHERE j.id = c.id AND c.status IN ('succeeded', 'failed', 'cancelled');
  RETURN NULL;
END $$;

CREATE OR REPLACE VIEW all_jobs AS
  SELECT id, shard_id, user_id, message, target, status, execute_at, due_at, attempt, max_attempts,
    last_error, idempotency_key, trace_context, dispatch_epoch, deadline_at, created_at, updated_at,
    started_at, finished_at, attempt_budget
  FROM jobs
  UNION ALL
  SELECT id, shard_id, user_id, message, target, status, execute_at, due_at, attempt, max_attempts,
    last_error, idempotency_key, trace_context, dispatch_epoch, deadline_at, created_at, updated_at,
    started_at, finished_at, attempt_budget
  FROM job_history;

-- Operators list dead-lettered jobs of every user, newest first (GET /api/v1/admin/jobs).
CREATE INDEX job_history_failed_idx ON job_history (id DESC) WHERE status = 'failed';

-- The retention loop deletes idempotency keys older than IDEMPOTENCY_KEY_TTL (src/db/maintenance.ts).
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);
