-- Per-target limits (docs/architecture.md, "Per-target limits"), in the users database.
-- target_limits: at most max_concurrent calls at once and max_per_second calls in any second to
-- a target host, for one user's jobs (user_id) or for every user's (user_id 0, set by an
-- operator). `host` is the URL's host name as the WHATWG URL parser gives it (lower case,
-- punycode, IPv6 in brackets), without the port. NULL: that bound is off.
CREATE TABLE target_limits (
  user_id bigint NOT NULL,
  host text NOT NULL CHECK (length(host) BETWEEN 1 AND 253),
  max_concurrent integer CHECK (max_concurrent BETWEEN 1 AND 100000),
  max_per_second integer CHECK (max_per_second BETWEEN 1 AND 100000),
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (user_id, host),
  CHECK (max_concurrent IS NOT NULL OR max_per_second IS NOT NULL)
);
-- target_leases: each executor's share of a limit (actors/target-limits.ts, leaseShare). An
-- executor starts a call only within the permits its unexpired row holds, and the rows of a
-- limit are changed only under its advisory lock with the others' rows read, so the unexpired
-- rows never hold more than the limit. `bound` is 'c' (calls at once) or 'r' (calls per second);
-- `want` is what the executor would use (running or recent, plus waiting).
CREATE TABLE target_leases (
  key text NOT NULL,
  bound char(1) NOT NULL CHECK (bound IN ('c', 'r')),
  member text NOT NULL,
  permits integer NOT NULL CHECK (permits >= 0),
  want integer NOT NULL CHECK (want >= 0),
  expires_at timestamptz NOT NULL,
  PRIMARY KEY (key, bound, member)
);
-- target_calendar: per limit, when the last job deferred for it is due back. Jobs deferred for a
-- limit (by any executor) take the next places, one step apart (the time the limit takes per
-- call), so a backlog comes back at the pace the limit lets it run.
CREATE TABLE target_calendar (
  key text PRIMARY KEY,
  next_at timestamptz NOT NULL
);
