-- The shard actor loads due jobs per user (so one user's flood cannot fill the load window and
-- hide other users' jobs): a skip-scan over the users with waiting jobs, then each user's
-- earliest due jobs. Both steps are index range reads on this index.
CREATE INDEX jobs_due_by_user_idx ON jobs (shard_id, user_id, execute_at, id)
  WHERE status IN ('created', 'retrying');
