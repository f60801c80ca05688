-- A shard's owner that lets go of it in order (drained: every row it marked was published or
-- put back) writes its epoch here. An owner that takes a shard whose previous epoch was not
-- released knows the old owner may have died between marking rows and publishing them, and
-- takes those rows back at once instead of at their deadline (src/scheduler/fence.ts).
ALTER TABLE shard_fences ADD COLUMN released_epoch bigint;

-- Users can be disabled by an operator; their tokens stop working (src/http/auth.ts).
ALTER TABLE users ADD COLUMN disabled_at timestamptz;

-- Per-user key for signing HTTP target calls (src/executor/signing.ts). 256 bits from the
-- server's strong random source (gen_random_uuid is pg_strong_random). The previous key stays
-- valid until previous_signing_secret_until, so receivers can roll over without a gap.
ALTER TABLE users
  ADD COLUMN signing_secret text NOT NULL
    DEFAULT 'whsec_' || replace(gen_random_uuid()::text, '-', '') || replace(gen_random_uuid()::text, '-', ''),
  ADD COLUMN previous_signing_secret text,
  ADD COLUMN previous_signing_secret_until timestamptz;
