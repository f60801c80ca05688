-- Batches created all or none across databases (src/jobs/batches.ts).
-- job_batches (used in the users database): one row per batch that spans databases or carries
-- an Idempotency-Key: its job ids, and its state: pending until the commit point, then
-- committed (its rows are the user's jobs) or aborted (none of them is).
CREATE TABLE job_batches (
  id bigint PRIMARY KEY,
  user_id bigint NOT NULL,
  key text,
  request_hash text,
  job_ids bigint[] NOT NULL,
  state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'committed', 'aborted')),
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX job_batches_key_idx ON job_batches (user_id, key) WHERE key IS NOT NULL;
CREATE INDEX job_batches_created_idx ON job_batches (created_at);

-- staged_jobs (every shard database): a batch's rows before its commit point. Nothing reads
-- them but the batch's own steps: once it is committed they move to jobs (one statement per
-- database); aborted, they are deleted.
CREATE TABLE staged_jobs (
  batch_id bigint NOT NULL,
  id bigint NOT NULL,
  shard_id integer NOT NULL,
  user_id bigint NOT NULL,
  kind text NOT NULL,
  priority smallint NOT NULL,
  message text NOT NULL,
  target jsonb,
  execute_at timestamptz NOT NULL,
  max_attempts integer NOT NULL,
  trace_context jsonb,
  idempotency_key text,
  staged_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (batch_id, id)
);
CREATE INDEX staged_jobs_staged_idx ON staged_jobs (staged_at);
