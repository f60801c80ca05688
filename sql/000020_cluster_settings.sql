-- Settings every process must share, stored by the first (in the users database) and checked by
-- every one at start (src/db/cluster-settings.ts): the shard count and the databases' order
-- decide where each job lives (src/shard-map.ts), the partition count where the due topic's
-- messages go. A process whose settings differ refuses to start instead of misrouting jobs.
CREATE TABLE cluster_settings (
  name text PRIMARY KEY,
  value text NOT NULL,
  set_at timestamptz NOT NULL DEFAULT now()
);
