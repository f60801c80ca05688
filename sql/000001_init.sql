-- Users, jobs and scheduler fencing. Applied to every configured database: the first database
-- holds users (and idempotency keys); every database holds the jobs of the shards mapped to it.
-- Forward-only: never edit a migration that has shipped; add the next number instead.

CREATE TABLE users (
  id            bigserial PRIMARY KEY,
  username      text NOT NULL UNIQUE CHECK (username ~ '^[A-Za-z0-9_.-]{3,64}$'),
  password_hash text NOT NULL,
  job_weight    double precision NOT NULL DEFAULT 1.0 CHECK (job_weight > 0 AND job_weight <= 1000000),
  created_at    timestamptz NOT NULL DEFAULT now()
);

-- Hands each API process a node number for its id generator (actors/ids.ts), once at start.
CREATE SEQUENCE id_node_seq;

-- An Idempotency-Key reserves a job id before the job row is written on its shard, which may
-- live in another database; a retry after a crash between the two writes re-inserts the same id.
CREATE TABLE idempotency_keys (
  user_id      bigint NOT NULL,
  key          text NOT NULL,
  job_id       bigint NOT NULL,
  request_hash text NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (user_id, key)
);

CREATE TYPE job_status AS ENUM
  ('created', 'scheduled', 'running', 'retrying', 'succeeded', 'failed', 'cancelled');

CREATE TABLE jobs (
  id              bigint PRIMARY KEY,
  shard_id        integer NOT NULL CHECK (shard_id >= 0),
  user_id         bigint NOT NULL,
  -- The owner's weight, copied at creation so a shard actor needs nothing outside its shard.
  job_weight      double precision NOT NULL CHECK (job_weight > 0),
  message         text NOT NULL,
  target          jsonb,
  status          job_status NOT NULL DEFAULT 'created',
  execute_at      timestamptz NOT NULL,
  attempt         integer NOT NULL DEFAULT 0 CHECK (attempt >= 0),
  max_attempts    integer NOT NULL CHECK (max_attempts BETWEEN 1 AND 100),
  last_error      text,
  idempotency_key text,
  trace_context   jsonb,
  -- Fencing epoch of the scheduler that last dispatched the job (see shard_fences).
  dispatch_epoch  bigint,
  -- While scheduled or running: when the rescuer may assume the executor died.
  deadline_at     timestamptz,
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now(),
  started_at      timestamptz,
  finished_at     timestamptz,
  -- Timestamps follow the state: a finished job has finished_at, an unfinished one does not;
  -- a running job has started_at; only in-flight jobs carry a rescue deadline.
  CONSTRAINT finished_iff_terminal CHECK
    ((status IN ('succeeded', 'failed', 'cancelled')) = (finished_at IS NOT NULL)),
  CONSTRAINT running_has_started CHECK (status <> 'running' OR started_at IS NOT NULL),
  CONSTRAINT deadline_iff_in_flight CHECK
    ((status IN ('scheduled', 'running')) = (deadline_at IS NOT NULL)),
  CONSTRAINT attempts_within_limit CHECK (attempt <= max_attempts)
);

-- Every index costs each insert (the API's batch create is index-bound), so there are four:
-- the primary key, and one per query that must not scan.
--
-- The shard actor loads due jobs per user (so one user's flood cannot fill the load window and
-- hide other users' jobs): a skip-scan over the users with waiting jobs, then each user's
-- earliest due jobs. Both steps are range reads on this index.
CREATE INDEX jobs_due_by_user_idx ON jobs (shard_id, user_id, execute_at, id)
  WHERE status IN ('created', 'retrying');
-- The rescuer and the in-flight count (dispatch credits): in-flight jobs of a shard by deadline.
CREATE INDEX jobs_in_flight_idx ON jobs (shard_id, deadline_at) WHERE status IN ('scheduled', 'running');
-- GET /me/jobs: a user's jobs newest first (ids are time-ordered); a status filter reads the
-- same index and skips rows, which beats a second index on every insert.
CREATE INDEX jobs_user_idx ON jobs (user_id, id DESC);

-- One row per shard held in this database: the epoch of its current owner. A shard actor's
-- writes check the epoch under a share lock, so a stale owner's writes are rejected.
CREATE TABLE shard_fences (
  shard_id   integer PRIMARY KEY,
  epoch      bigint NOT NULL,
  owner      text NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);
