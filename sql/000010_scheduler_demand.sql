-- Each scheduler process's demand report (actors/cluster-share.ts), in the users database: one
-- row per live process, replaced every SCHEDULER_SHARE_INTERVAL and read by the others, so the
-- processes split the executors by weighted demand (one fair order for the cluster). A row whose
-- reported_at is older than a few intervals (by the database's clock) is ignored: its process
-- stopped or cannot reach this database. Arrays, not one row per user: a report is one row
-- written and a few read, whatever the number of users.
CREATE TABLE scheduler_demand (
  member text PRIMARY KEY,
  reported_at timestamptz NOT NULL,
  rate real NOT NULL,
  span_ms real NOT NULL,
  user_ids bigint[] NOT NULL,
  weights real[] NOT NULL,
  queued real[] NOT NULL
);
