-- The executors' slot reports also carry each active user's mean run time (the handler's, an
-- average over its recent runs): the schedulers charge a user's turns by it, so contended
-- executor time is shared by weight, not only starts (docs/architecture.md).
ALTER TABLE executor_slots ADD COLUMN run_user_ids bigint[] NOT NULL DEFAULT '{}';
ALTER TABLE executor_slots ADD COLUMN run_ms real[] NOT NULL DEFAULT '{}';
