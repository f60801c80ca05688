-- Finished jobs live apart from the ones the scheduler and executor work on. `jobs` holds only
-- waiting and in-flight rows (created, scheduled, running, retrying): it churns (an insert,
-- three updates and a delete per job) but stays small, so its indexes, scans and vacuums cost
-- what the work in flight costs, not what the history holds. `job_history` is append-only.
--
-- The move is one rule, here: every statement that makes rows terminal (succeeded, failed,
-- cancelled) in `jobs` moves them, in the same transaction, into `job_history`. The statements
-- that decide the transitions stay as they are, each one guarded UPDATE; readers that want a job
-- whatever its state read `all_jobs`, whose single snapshot shows each job exactly once.

CREATE TABLE job_history (
  id              bigint PRIMARY KEY,
  shard_id        integer NOT NULL,
  user_id         bigint NOT NULL,
  message         text NOT NULL,
  target          jsonb,
  status          job_status NOT NULL CHECK (status IN ('succeeded', 'failed', 'cancelled')),
  execute_at      timestamptz NOT NULL,
  due_at          timestamptz NOT NULL,
  attempt         integer NOT NULL,
  max_attempts    integer NOT NULL,
  last_error      text,
  idempotency_key text,
  trace_context   jsonb,
  dispatch_epoch  bigint,
  deadline_at     timestamptz CHECK (deadline_at IS NULL),
  created_at      timestamptz NOT NULL,
  updated_at      timestamptz NOT NULL,
  started_at      timestamptz,
  finished_at     timestamptz NOT NULL
);
-- GET /me/jobs reads a user's jobs newest first from both tables (a merge of two index scans).
CREATE INDEX job_history_user_idx ON job_history (user_id, id DESC);

CREATE FUNCTION jobs_move_finished() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO job_history (id, shard_id, user_id, message, target, status, execute_at, due_at, attempt,
    max_attempts, last_error, idempotency_key, trace_context, dispatch_epoch, deadline_at, created_at,
    updated_at, started_at, finished_at)
  SELECT id, shard_id, user_id, message, target, status, execute_at, due_at, attempt,
    max_attempts, last_error, idempotency_key, trace_context, dispatch_epoch, deadline_at, created_at,
    updated_at, started_at, finished_at
  FROM changed WHERE status IN ('succeeded', 'failed', 'cancelled');
  DELETE FROM jobs j USING changed c WHERE j.id = c.id AND c.status IN ('succeeded', 'failed', 'cancelled');
  RETURN NULL;
END $$;

-- Statement level with a transition table: one set-based insert and delete per statement, not
-- two per row (the executor records outcomes 1,000 at a time).
CREATE TRIGGER jobs_move_finished AFTER UPDATE ON jobs
  REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION jobs_move_finished();

-- Rows finished before this migration take the same path: a no-op update fires the move.
UPDATE jobs SET updated_at = updated_at WHERE status IN ('succeeded', 'failed', 'cancelled');

CREATE VIEW all_jobs AS
  SELECT id, shard_id, user_id, message, target, status, execute_at, due_at, attempt, max_attempts,
    last_error, idempotency_key, trace_context, dispatch_epoch, deadline_at, created_at, updated_at,
    started_at, finished_at
  FROM jobs
  UNION ALL
  SELECT id, shard_id, user_id, message, target, status, execute_at, due_at, attempt, max_attempts,
    last_error, idempotency_key, trace_context, dispatch_epoch, deadline_at, created_at, updated_at,
    started_at, finished_at
  FROM job_history;

-- The hot table churns: vacuum it after a fixed number of dead rows, whatever its size (the
-- default 20 % of a table that is often near empty would mean "almost never" after a burst and
-- "constantly" when idle), without the cost-based pauses that let autovacuum fall behind.
-- Where autovacuum is off, the scheduler vacuums instead (src/db/maintenance.ts).
-- No truncation: giving back the empty pages at the table's end takes an exclusive lock that
-- stopped every claim and mark for seconds when a drained backlog left many (measured: a 2.8 s
-- VACUUM, 4 s without a start); the next burst reuses the pages anyway.
ALTER TABLE jobs SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 20000,
  autovacuum_vacuum_cost_delay = 0, vacuum_truncate = false);
-- History only grows: vacuum it for its visibility map every 1 % of new rows.
ALTER TABLE job_history SET (autovacuum_vacuum_insert_scale_factor = 0.01);
