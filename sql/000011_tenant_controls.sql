-- Tenant controls (docs/architecture.md, "A slow or greedy tenant costs the others nothing").
-- users.max_running: the most jobs of the user running (or dispatched to run) at once across the
-- cluster; NULL: the configured default (USER_MAX_RUNNING), or none. users.paused: the user's due
-- jobs wait in the database, none is dispatched, until resumed.
ALTER TABLE users ADD COLUMN max_running integer CHECK (max_running >= 1 AND max_running <= 1000000);
ALTER TABLE users ADD COLUMN paused boolean NOT NULL DEFAULT false;
-- jobs.priority: inside one user, which due job goes next (0 high, 1 normal, 2 low); fair share
-- still decides which user. A constant default: no table rewrite.
ALTER TABLE jobs ADD COLUMN priority smallint NOT NULL DEFAULT 1 CHECK (priority BETWEEN 0 AND 2);
-- A finished job keeps its priority (its page shows it; a retry from `failed` brings it back):
-- job_history carries it too (rows finished before this were all normal), the move copies it,
-- and all_jobs shows it (a view may only gain columns at its end).
ALTER TABLE job_history ADD COLUMN priority smallint NOT NULL DEFAULT 1 CHECK (priority BETWEEN 0 AND 2);

CREATE OR REPLACE FUNCTION jobs_move_finished() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO job_history (id, shard_id, user_id, message, target, status, execute_at, due_at, attempt,
    max_attempts, last_error, idempotency_key, trace_context, dispatch_epoch, deadline_at, created_at,
    updated_at, started_at, finished_at, attempt_budget, kind, priority)
  SELECT id, shard_id, user_id, message, target, status, execute_at, due_at, attempt,
    max_attempts, last_error, idempotency_key, trace_context, dispatch_epoch, deadline_at, created_at,
    updated_at, started_at, finished_at, attempt_budget, kind, priority
  FROM changed WHERE status IN ('succeeded', 'failed', 'cancelled');
  DELETE FROM jobs j USING changed c WHERE j.id = c.id AND c.status IN ('succeeded', 'failed', 'cancelled');
  RETURN NULL;
END $$;

CREATE OR REPLACE VIEW all_jobs AS
  SELECT id, shard_id, user_id, message, target, status, execute_at, due_at, attempt, max_attempts,
    last_error, idempotency_key, trace_context, dispatch_epoch, deadline_at, created_at, updated_at,
    started_at, finished_at, attempt_budget,
    coalesce(kind, CASE WHEN target IS NULL THEN 'log' ELSE 'http' END) AS kind, priority
  FROM jobs
  UNION ALL
  SELECT id, shard_id, user_id, message, target, status, execute_at, due_at, attempt, max_attempts,
    last_error, idempotency_key, trace_context, dispatch_epoch, deadline_at, created_at, updated_at,
    started_at, finished_at, attempt_budget,
    coalesce(kind, CASE WHEN target IS NULL THEN 'log' ELSE 'http' END) AS kind, priority
  FROM job_history;
