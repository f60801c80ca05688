/**
 * The executor's guarded transitions, batched per database:
 *   claim:   scheduled -> running (attempt + 1), only for the attempt the message asks for;
 *   record:  running -> succeeded | retrying | failed, only for the attempt that ran, with the
 *            attempt's row in job_attempts (the job's history) in the same statement.
 * A row that does not match its guard is left alone: the message was a duplicate or stale, the
 * job was cancelled, or the rescuer already moved it on.
 * Rows are found by primary key (`j.id = ANY($ids)`). The status guards compare `status::text`
 * on purpose: a plain `status = 'running'` implies the predicate of the partial in-flight index,
 * and with statistics taken before a burst (the index looked empty) the planner answered a
 * 1,000-id claim by scanning that whole index: 100,000 rows, ~40 ms instead of ~8 ms. The cast
 * leaves the guard exact and the primary key the only way in.
 */
import type { ClaimedJob, DueMessage } from "../../actors/job-run.machine.ts";
import type { Decision, RunResult } from "../../actors/outcome.ts";
import type { Sql } from "../db/databases.ts";
import { DUE_CHANNEL, duePayload } from "../db/due-notify.ts";

const CLAIMED = "j.id, j.shard_id, j.user_id, j.kind, j.message, j.target, j.attempt, j.max_attempts, j.execute_at, j.due_at, j.last_error, j.trace_context, j.deadline_at";

export async function claimMany(sql: Sql, msgs: DueMessage[], defaultTimeoutMs: number, graceMs: number): Promise<(ClaimedJob | null)[]> {
  const rows = await sql<ClaimedJob[]>`
    UPDATE jobs j SET status = 'running', attempt = j.attempt + 1, started_at = now(), updated_at = now(),
      deadline_at = now() + (coalesce((j.target->>'timeout_ms')::int, ${defaultTimeoutMs}) + ${graceMs}) * interval '1 millisecond'
    FROM unnest(${msgs.map((m) => m.id)}::bigint[], ${msgs.map((m) => m.attempt)}::int[]) AS m(id, attempt)
    WHERE j.id = ANY(${msgs.map((m) => m.id)}::bigint[]) AND j.id = m.id AND j.status::text = 'scheduled' AND j.attempt = m.attempt - 1
    RETURNING ${sql.unsafe(CLAIMED)}`;
  const byId = new Map(rows.map((r) => [r.id, r]));
  // A message repeated within one batch claims once: only its first copy gets the row.
  return msgs.map((m) => {
    const row = byId.get(m.id);
    if (!row || row.attempt !== m.attempt) return null;
    byId.delete(m.id);
    return row;
  });
}

export interface Outcome {
  job: ClaimedJob;
  decision: Decision;
  result: RunResult;
  durationMs: number;
}

export async function recordMany(sql: Sql, outcomes: Outcome[]): Promise<void[]> {
  const ids = outcomes.map((o) => o.job.id);
  const attempts = outcomes.map((o) => o.job.attempt);
  const statuses = outcomes.map((o) => (o.decision.kind === "retry" ? "retrying" : o.decision.kind));
  const errors = outcomes.map((o) => (o.decision.kind === "succeeded" ? null : o.decision.error.slice(0, 2_000)));
  const delays = outcomes.map((o) => (o.decision.kind === "retry" ? o.decision.delayMs : 0));
  const classes = outcomes.map((o) => (o.result.ok ? null : o.result.errorClass));
  const httpStatuses = outcomes.map((o) => o.result.httpStatus ?? null);
  const durations = outcomes.map((o) => Math.round(o.durationMs));
  // Retries wait again: the shards' owners hear when they are due (src/db/due-notify.ts).
  const now = Date.now();
  const retries = outcomes.filter((o) => o.decision.kind === "retry").map((o) => ({ shard: o.job.shard_id, dueAt: now + (o.decision as { delayMs: number }).delayMs }));
  await sql`
    WITH o AS (
      SELECT * FROM unnest(${ids}::bigint[], ${attempts}::int[], ${statuses}::text[], ${errors}::text[], ${delays}::int[],
        ${classes}::text[], ${httpStatuses}::int[], ${durations}::int[])
      AS o(id, attempt, status, error, delay_ms, error_class, http_status, duration_ms)),
    upd AS (
    UPDATE jobs j SET
      status = o.status::job_status,
      last_error = coalesce(o.error, j.last_error),
      due_at = CASE WHEN o.status = 'retrying' THEN now() + o.delay_ms * interval '1 millisecond' ELSE j.due_at END,
      finished_at = CASE WHEN o.status IN ('succeeded', 'failed') THEN now() END,
      deadline_at = NULL,
      updated_at = now()
    FROM o
    WHERE j.id = ANY(${ids}::bigint[]) AND j.id = o.id AND j.status::text = 'running' AND j.attempt = o.attempt
    RETURNING j.id, j.attempt, j.user_id, j.started_at),
    att AS (
    INSERT INTO job_attempts (job_id, attempt, user_id, started_at, finished_at, outcome, error_class, error_message, http_status, duration_ms)
    SELECT upd.id, upd.attempt, upd.user_id, upd.started_at, now(), CASE WHEN o.status = 'succeeded' THEN 'succeeded' ELSE 'failed' END,
      o.error_class, o.error, o.http_status, o.duration_ms
    FROM upd JOIN o ON o.id = upd.id
    ON CONFLICT DO NOTHING)
    SELECT count(*) FROM upd${retries.length > 0 ? sql`, (SELECT pg_notify(${DUE_CHANNEL}, ${duePayload(retries)})) n` : sql``}`;
  return outcomes.map(() => undefined);
}
