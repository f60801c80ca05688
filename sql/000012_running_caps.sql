-- Per-user concurrency caps (users.max_running, USER_MAX_RUNNING). The schedulers count a capped
-- user's jobs dispatched and not finished (scheduled or running) across the cluster several times
-- a second: this index holds only those rows, a few thousand, whatever the size of the table.
CREATE INDEX jobs_in_flight_by_user_idx ON jobs (user_id) WHERE status IN ('scheduled', 'running');
-- Users parked at a process (at their cap, or paused) with their jobs queued there: not part of
-- the window's split (they cannot use it), but the processes split each capped user's room by them.
ALTER TABLE scheduler_demand ADD COLUMN limited_user_ids bigint[] NOT NULL DEFAULT '{}';
ALTER TABLE scheduler_demand ADD COLUMN limited_queued real[] NOT NULL DEFAULT '{}';
