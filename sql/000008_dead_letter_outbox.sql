-- Dead-letter records the rescuer writes in the same transaction that fails their jobs, and
-- publishes after it commits (src/scheduler/rescuer.ts): no row lock is held across a Kafka
-- round trip, and a record whose publish did not happen is published by the next rescue.
CREATE TABLE dead_letter_outbox (
  job_id     bigint      NOT NULL,
  attempt    int         NOT NULL,
  shard_id   int         NOT NULL,
  record     text        NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (job_id, attempt)
);
CREATE INDEX dead_letter_outbox_shard_idx ON dead_letter_outbox (shard_id, created_at);
