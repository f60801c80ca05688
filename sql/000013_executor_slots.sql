-- Each executor's run slots, in the users database: one row per live executor, replaced every
-- EXECUTOR_SLOT_REPORT (100 ms) and read by the schedulers with their demand exchange. A user with
-- jobs waiting for a slot (it holds its share of the slots: actors/slots.ts) is saturated: the
-- schedulers stop dispatching its jobs, and do not count those waiting against their windows,
-- until none waits. A row whose reported_at is older than a few reports is ignored.
CREATE TABLE executor_slots (
  member text PRIMARY KEY,
  reported_at timestamptz NOT NULL,
  slots integer NOT NULL,
  held integer NOT NULL,
  waiting_user_ids bigint[] NOT NULL,
  waiting real[] NOT NULL
);
