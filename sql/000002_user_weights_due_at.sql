-- Weights belong to users: the scheduler reads the user's current weight instead of a copy
-- frozen into each job at creation, so an operator's change applies to pending jobs. Weights
-- stay within [0.01, 1000] (the fair queue's bounds), existing rows clamped into them.
UPDATE users SET job_weight = LEAST(GREATEST(job_weight, 0.01), 1000)
  WHERE job_weight < 0.01 OR job_weight > 1000;
ALTER TABLE users DROP CONSTRAINT users_job_weight_check;
ALTER TABLE users ADD CONSTRAINT users_job_weight_check CHECK (job_weight >= 0.01 AND job_weight <= 1000);

ALTER TABLE jobs DROP COLUMN job_weight;

-- When the next attempt may start. execute_at stays as the user set it; due_at is where the
-- scheduler works. Every transition into a waiting state (created, retrying) sets due_at to the
-- database's now() or later, which is what lets the scheduler read a user's rows after a
-- cursor instead of re-reading them (actors/shard.machine.ts).
ALTER TABLE jobs ADD COLUMN due_at timestamptz;
UPDATE jobs SET due_at = execute_at;
ALTER TABLE jobs ALTER COLUMN due_at SET NOT NULL;
DROP INDEX jobs_due_by_user_idx;
CREATE INDEX jobs_due_by_user_idx ON jobs (shard_id, user_id, due_at, id) WHERE status IN ('created', 'retrying');
