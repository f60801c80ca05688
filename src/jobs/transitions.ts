/**
 * Every guarded status change of a job, one function each (the claim also makes refuseEarly),
 * named after its entry in TRANSITIONS (src/jobs/lifecycle.ts), whose `from` list is the
 * statement's guard. The API, the scheduler, its rescuer and the executor all change a job's
 * status through these and nothing else. Each is one statement (the rescue one transaction): the
 * row, not any process's memory, is the truth, and a row that does not match its guard is left
 * alone.
 *
 * The database's clock decides when a job may start: the claim starts a run only if its row is
 * due by the database's now() and re-delays an early one (back to waiting, due_at kept), so no
 * scheduler's or executor's clock can start a job before its due time. A dispatched job that
 * goes back to waiting unrun (refused early, reverted, taken back) keeps greatest(due_at, now()):
 * never due earlier than it was. Every transition into waiting sets due_at to the database's
 * now() or later (the shard actors' cursors rely on it: actors/shard.machine.ts).
 *
 * By-id guards compare `status::text` on purpose: a plain `status IN (...)` implies a partial
 * index's predicate, and with statistics taken before a burst the planner answered a 1,000-id
 * update by scanning that whole index (100,000 rows, ~40 ms instead of ~8 ms) instead of
 * looking the ids up. The cast leaves the guard exact and the primary key the only way in.
 */
import type { Decision, RunResult } from "../../actors/outcome.ts";
import type { Sql } from "../db/databases.ts";
import { DUE_CHANNEL, duePayload, GONE_CHANNEL, goneUserPayload, MAX_PAYLOAD } from "../db/due-notify.ts";
import { deadLetterRecord } from "../dead-letter.ts";
import type { DueEntry } from "../due-message.ts";
import { checkFence } from "../db/fence.ts";
import { API_COLUMNS, CLAIMED_COLUMNS, type ApiRow, type ClaimedJob, type DeadJob } from "./job-row.ts";
import { BACK_TO_WAITING, from } from "./lifecycle.ts";

// ---- API -----------------------------------------------------------------------------------

/**
 * The user's job, if it has not started, is cancelled; the executor's guarded claim then never
 * wins, and the shard's owner drops it from its fair order (GONE_CHANNEL).
 */
export async function cancel(sql: Sql, userId: string, id: bigint): Promise<ApiRow | undefined> {
  const [row] = await sql<ApiRow[]>`
    UPDATE jobs SET status = 'cancelled', finished_at = now(), updated_at = now(), deadline_at = NULL
    WHERE id = ${id.toString()} AND user_id = ${userId} AND status::text IN ${sql.unsafe(from("cancel"))}
    RETURNING ${sql.unsafe(API_COLUMNS)}, (SELECT pg_notify(${GONE_CHANNEL}, ${id.toString()})) AS notified`;
  return row;
}

/** Every job of the user that has not started is cancelled (a deleted user's); returns how many. */
export async function cancelAll(sql: Sql, userId: string): Promise<number> {
  const rows = await sql`
    UPDATE jobs SET status = 'cancelled', finished_at = now(), updated_at = now(), deadline_at = NULL
    WHERE user_id = ${userId} AND status IN ${sql.unsafe(from("cancel"))}
    RETURNING (SELECT pg_notify(${GONE_CHANNEL}, ${goneUserPayload(userId)})) AS notified`;
  return rows.length;
}

/**
 * The user's failed job retries, due now, with as many more attempts as it was created with (at
 * most 100 in all); its attempts stay in its history. The row moves back from job_history to jobs.
 */
export async function retry(sql: Sql, shard: number, userId: string, id: bigint): Promise<ApiRow | undefined> {
  const [row] = await sql<ApiRow[]>`
    WITH moved AS (
      DELETE FROM job_history WHERE id = ${id.toString()} AND user_id = ${userId} AND status IN ${sql.unsafe(from("retry"))} AND attempt < 100 RETURNING *)
    INSERT INTO jobs (id, shard_id, user_id, kind, priority, message, target, status, execute_at, due_at, attempt, max_attempts, attempt_budget,
      last_error, idempotency_key, trace_context, dispatch_epoch, created_at, updated_at)
    SELECT id, shard_id, user_id, coalesce(kind, CASE WHEN target IS NULL THEN 'log' ELSE 'http' END), priority, message, target, 'retrying', execute_at, now(), attempt,
      least(100, attempt + coalesce(attempt_budget, max_attempts)), coalesce(attempt_budget, max_attempts),
      last_error, idempotency_key, trace_context, dispatch_epoch, created_at, now()
    FROM moved
    RETURNING ${sql.unsafe(API_COLUMNS)}, (SELECT pg_notify(${DUE_CHANNEL}, ${duePayload([{ shard, dueAt: Date.now() }])})) AS notified`;
  return row;
}

/**
 * The user's waiting job's execute_at (and its next try) move to `at`; the shard's owner drops
 * its queued copy (GONE_CHANNEL) and loads the row again for its new time (DUE_CHANNEL).
 */
export async function reschedule(sql: Sql, shard: number, userId: string, id: bigint, at: Date): Promise<ApiRow | undefined> {
  // due_at is never before now(): the shard actors' cursors rely on it (actors/shard.machine.ts).
  const [row] = await sql<ApiRow[]>`
    UPDATE jobs SET execute_at = ${at}, due_at = greatest(${at}::timestamptz, now()), updated_at = now()
    WHERE id = ${id.toString()} AND user_id = ${userId} AND status::text IN ${sql.unsafe(from("reschedule"))}
    RETURNING ${sql.unsafe(API_COLUMNS)}, (SELECT pg_notify(${GONE_CHANNEL}, ${id.toString()})) AS gone,
      (SELECT pg_notify(${DUE_CHANNEL}, ${duePayload([{ shard, dueAt: at.getTime() }])})) AS notified`;
  return row;
}

// ---- Scheduler -----------------------------------------------------------------------------

export interface MarkRequest {
  shard: number;
  epoch: string;
  ids: string[];
}

/** A job marked `scheduled`: what its due message needs (`url`: its HTTP target's, whose host may be limited). */
export type MarkedRow = Pick<ClaimedJob, "id" | "shard_id" | "user_id" | "attempt" | "due_at" | "trace_context"> & { url: string | null };

export interface MarkResult {
  /** The shard's fence epoch now (null: no fence row). */
  fence: string | null;
  rows: MarkedRow[];
}

/**
 * Marks waiting jobs `scheduled` for several shards of one database in one statement: each
 * shard's fence row is share-locked for the statement, and a request's rows change only if its
 * epoch matches its shard's fence; every request gets its fence's current epoch back. A row
 * whose due time moved beyond `aheadMs` from now (rescheduled meanwhile) is left waiting.
 *
 * Asynchronous commit for this statement only: it takes a WAL flush (and any I/O stall) off the
 * dispatch path. Safe because a mark lost in a database crash only reverts the row to waiting:
 * its message, if already published, loses the executor's guarded claim and is dropped, and the
 * job is dispatched again. Fence bumps, rescues and executor transitions commit synchronously.
 *
 * Rows are found by `id = ANY($ids)`, a primary-key lookup (a join against an unnest() of the
 * ids flipped, once the table had statistics, to a hash join over a full scan). The valid shards
 * are an array tested per row, not a joined relation: joined, the planner (estimating one valid
 * shard) looked every id up once per shard of the statement.
 */
export async function mark(sql: Sql, deadlineMs: number, aheadMs: number, reqs: MarkRequest[]): Promise<MarkResult[]> {
  const ids = reqs.flatMap((r) => r.ids);
  type Row = { kind: "f" | "r"; shard_id: number; epoch: string | null; id: string | null; user_id: string; attempt: number; due_at: Date; trace_context: Record<string, string> | null; url: string | null };
  const [, result] = await sql.begin((tx) => [tx`SET LOCAL synchronous_commit TO OFF`, tx<Row[]>`
    WITH want AS (SELECT * FROM unnest(${reqs.map((r) => r.shard)}::int[], ${reqs.map((r) => r.epoch)}::bigint[]) AS w(shard_id, epoch)),
    fence AS (SELECT shard_id, epoch FROM shard_fences WHERE shard_id = ANY(${reqs.map((r) => r.shard)}::int[]) FOR SHARE),
    valid AS (SELECT DISTINCT f.shard_id, f.epoch FROM fence f JOIN want w ON w.shard_id = f.shard_id AND w.epoch = f.epoch),
    upd AS (
      UPDATE jobs j SET status = 'scheduled', dispatch_epoch = (SELECT v.epoch FROM valid v WHERE v.shard_id = j.shard_id),
        updated_at = now(), deadline_at = now() + ${deadlineMs} * interval '1 millisecond'
      WHERE j.id = ANY(${ids}::bigint[]) AND j.shard_id = ANY(ARRAY(SELECT shard_id FROM valid))
        AND j.status::text IN ${tx.unsafe(from("mark"))} AND j.due_at <= now() + ${aheadMs} * interval '1 millisecond'
      RETURNING j.id, j.shard_id, j.user_id, j.attempt, j.due_at, j.trace_context, j.target->>'url' AS url)
    SELECT 'f' AS kind, shard_id, epoch::text AS epoch, NULL::text AS id, NULL::text AS user_id, NULL::int AS attempt,
      NULL::timestamptz AS due_at, NULL::jsonb AS trace_context, NULL::text AS url FROM fence
    UNION ALL
    SELECT 'r', shard_id, NULL, id::text, user_id::text, attempt, due_at, trace_context, url FROM upd`]);
  const fences = new Map<number, string>();
  const rowsByShard = new Map<number, MarkedRow[]>();
  for (const r of result as Row[]) {
    if (r.kind === "f") fences.set(r.shard_id, r.epoch!);
    else {
      const list = rowsByShard.get(r.shard_id) ?? [];
      list.push({ id: r.id!, shard_id: r.shard_id, user_id: r.user_id, attempt: r.attempt, due_at: r.due_at, trace_context: r.trace_context, url: r.url });
      rowsByShard.set(r.shard_id, list);
    }
  }
  // Two requests for one shard in one statement cannot both hold a valid epoch unless they are
  // the same owner's; ids are disjoint, so each request takes the rows it asked for.
  return reqs.map((q) => {
    const wanted = new Set(q.ids);
    return { fence: fences.get(q.shard) ?? null, rows: (rowsByShard.get(q.shard) ?? []).filter((r) => wanted.has(r.id)) };
  });
}

/** Marked rows whose message could not be published go back to waiting, due when they were, or now if that has passed. */
export async function revert(sql: Sql, shard: number, epoch: string, ids: string[]): Promise<void> {
  await sql`
    UPDATE jobs SET status = ${sql.unsafe(BACK_TO_WAITING)},
      deadline_at = NULL, due_at = greatest(due_at, now()), updated_at = now()
    WHERE id = ANY(${ids}::bigint[]) AND shard_id = ${shard} AND status::text IN ${sql.unsafe(from("revert"))} AND dispatch_epoch = ${epoch}`;
}

/**
 * After taking a shard whose previous owner (epoch `abandoned`) did not release it in order:
 * rows it marked and nobody claimed go back to waiting, due when they were (or now if that has
 * passed), instead of at their deadline.
 * Some were published: such a job then has two messages for one attempt, and the executor's
 * guarded claim lets only one of them run. Fenced by the new owner's epoch.
 */
export async function takeBack(sql: Sql, shard: number, epoch: string, abandoned: string): Promise<number> {
  return sql.begin(async (tx) => {
    await checkFence(tx, shard, epoch);
    const rows = await tx`
      UPDATE jobs SET status = ${tx.unsafe(BACK_TO_WAITING)},
        deadline_at = NULL, due_at = greatest(due_at, now()), updated_at = now()
      WHERE shard_id = ${shard} AND status IN ${tx.unsafe(from("takeBack"))} AND dispatch_epoch = ${abandoned}
      RETURNING id`;
    return rows.length;
  });
}

export const RUN_DEADLINE_ERROR = "run deadline passed without an outcome (executor lost?)";
export const EXECUTOR_LOST_ERROR = "its executor stopped reporting during the run";

/**
 * In-flight jobs whose deadline passed (and is at or after `since`) go back to waiting (their
 * executor died or their message was lost), and so do the runs claimed by `lostExecutors`
 * (executors that stopped reporting: their runs are not waited for until their deadlines).
 * A marked job that was never claimed did not run: it is due again at once. A job that was
 * running has used its attempt: its history gets the attempt as lost, and it retries after
 * `retryDelayMs(attempt)` like any failed run (at once when its executor was lost: the run
 * did not fail, its process did), or, on its last attempt, fails for good, its dead-letter
 * record written to the outbox (dead_letter_outbox) in the same transaction, for the caller to
 * publish after the commit: no lock is held across a Kafka round trip, and a crash before the
 * publish leaves the record for the next rescue. Fenced.
 */
export async function rescue(
  sql: Sql,
  shard: number,
  epoch: string,
  since: Date | null,
  retryDelayMs: (attempt: number) => number,
  lostExecutors: string[] = [],
): Promise<{ changed: number; deadLettered: number; dbNow: Date }> {
  // Only deadlines from `since` on: the in-flight index keeps an entry for every job that
  // passed through, dead until vacuumed, and a scan from the start walks them all. A lost
  // executor's runs are still within their deadlines: the last minute's and later.
  const since_ = since ?? new Date(0);
  return sql.begin(async (tx) => {
    const expired = () => tx`(deadline_at < now() AND deadline_at >= ${since_})`;
    const orphaned = () => (lostExecutors.length > 0 ? tx`(status = 'running' AND deadline_at >= now() - interval '1 minute' AND claimed_by = ANY(${lostExecutors}::text[]))` : tx`false`);
    await checkFence(tx, shard, epoch);
    // The runs that died, locked until this transaction ends, so a late outcome of the same run
    // waits, then finds it moved on.
    const lost = await tx<(DeadJob & { started_at: Date; due_at: Date; orphaned: boolean })[]>`
      SELECT id::text, shard_id, user_id::text, message, target, attempt, max_attempts, last_error, started_at, due_at,
        NOT (deadline_at < now()) AS orphaned
      FROM jobs
      WHERE shard_id = ${shard} AND status = 'running' AND (${expired()} OR ${orphaned()})
      FOR UPDATE`;
    const errorOf = (r: { orphaned: boolean }) => (r.orphaned ? EXECUTOR_LOST_ERROR : RUN_DEADLINE_ERROR);
    const doomed = lost.filter((r) => r.attempt >= r.max_attempts);
    if (lost.length > 0) {
      await tx`
        INSERT INTO job_attempts (job_id, attempt, user_id, due_at, started_at, finished_at, outcome, error_class, error_message)
        SELECT id, attempt, user_id, due_at, started_at, now(), 'lost', error_class, error_message
        FROM unnest(${lost.map((r) => r.id)}::bigint[], ${lost.map((r) => r.attempt)}::int[], ${lost.map((r) => r.user_id)}::bigint[],
          ${lost.map((r) => r.due_at.toISOString())}::timestamptz[], ${lost.map((r) => r.started_at.toISOString())}::timestamptz[],
          ${lost.map((r) => (r.orphaned ? "executor_lost" : "run_lost"))}::text[], ${lost.map(errorOf)}::text[])
          AS l(id, attempt, user_id, due_at, started_at, error_class, error_message)
        ON CONFLICT DO NOTHING`;
    }
    if (doomed.length > 0) {
      const failedAt = new Date();
      await tx`
        INSERT INTO dead_letter_outbox (job_id, attempt, shard_id, record)
        SELECT * FROM unnest(${doomed.map((r) => r.id)}::bigint[], ${doomed.map((r) => r.attempt)}::int[], ${doomed.map((r) => r.shard_id)}::int[],
          ${doomed.map((r) => JSON.stringify(deadLetterRecord(r, errorOf(r), "run_deadline", failedAt)))}::text[])
        ON CONFLICT DO NOTHING`;
    }
    const delays = lost.map((r) => (r.orphaned ? 0 : retryDelayMs(r.attempt)));
    // now() is the transaction's start, so this sees the same runs as the lock above.
    const rows = await tx`
      UPDATE jobs SET
        status = CASE
          WHEN status = 'scheduled' THEN ${tx.unsafe(BACK_TO_WAITING)}
          WHEN attempt >= max_attempts THEN 'failed'::job_status
          ELSE 'retrying'::job_status END,
        last_error = CASE WHEN status = 'running' THEN coalesce((SELECT d.error FROM unnest(${lost.map((r) => r.id)}::bigint[], ${lost.map(errorOf)}::text[]) AS d(id, error) WHERE d.id = jobs.id), ${RUN_DEADLINE_ERROR}) ELSE last_error END,
        finished_at = CASE WHEN status = 'running' AND attempt >= max_attempts THEN now() END,
        due_at = now() + coalesce((SELECT d.delay_ms FROM unnest(${lost.map((r) => r.id)}::bigint[], ${delays}::int[]) AS d(id, delay_ms) WHERE d.id = jobs.id), 0) * interval '1 millisecond',
        deadline_at = NULL,
        claimed_by = NULL,
        updated_at = now()
      WHERE shard_id = ${shard} AND status IN ${tx.unsafe(from("rescue"))} AND (${expired()} OR ${orphaned()})
      RETURNING id`;
    const [{ now }] = (await tx`SELECT now() AS now`) as unknown as [{ now: Date }];
    return { changed: rows.length, deadLettered: doomed.length, dbNow: now };
  });
}

// ---- Executor ------------------------------------------------------------------------------

/** What a due message asks the executor to run. */
export type ClaimRequest = Pick<DueEntry, "id" | "shard" | "attempt">;

/** A claim's answer for a message that came before its job was due: the job is waiting again. */
export const REFUSED_EARLY = "early";

/**
 * A claim's answer per message: the run it started; REFUSED_EARLY; or null, nothing to claim (a
 * duplicate or stale message, a cancelled job).
 */
export type Claim = ClaimedJob | typeof REFUSED_EARLY | null;

/**
 * A scheduled job starts its run (attempt + 1), only for the attempt its message names and only
 * once it is due by the database's clock (due_at <= now()), whatever the scheduler's and this
 * process's clocks say. A message that comes earlier does not start the run: a second statement
 * (only when some message claimed nothing) puts the job back to waiting (refuseEarly) and
 * notifies its shard's owner of the due time, so it is dispatched again then; left `scheduled`
 * with its message consumed, it would wait for the rescuer (SCHEDULED_DEADLINE). The claim
 * itself stays the one plain UPDATE it was (one statement deciding both per row cost the
 * executor's database ~30 % more CPU per job at 1,389 jobs/s). Batched per database.
 */
export async function claim(sql: Sql, msgs: ClaimRequest[], defaultTimeoutMs: number, graceMs: number, executor: string | null = null): Promise<Claim[]> {
  const ids = msgs.map((m) => m.id);
  const runs = msgs.map((m) => m.attempt);
  const rows = await sql<ClaimedJob[]>`
    UPDATE jobs j SET status = 'running', attempt = j.attempt + 1, started_at = now(), updated_at = now(), claimed_by = ${executor},
      deadline_at = now() + (coalesce((j.target->>'timeout_ms')::int, ${defaultTimeoutMs}) + ${graceMs}) * interval '1 millisecond'
    FROM unnest(${ids}::bigint[], ${runs}::int[]) AS m(job_id, run)
    WHERE j.id = ANY(${ids}::bigint[]) AND j.id = m.job_id AND j.status::text IN ${sql.unsafe(from("claim"))} AND j.attempt = m.run - 1
      AND j.due_at <= now()
    RETURNING ${sql.unsafe(CLAIMED_COLUMNS.split(", ").map((c) => `j.${c}`).join(", "))}`;
  const byId = new Map(rows.map((r) => [r.id, r]));
  // Rarely, some were not claimed: duplicates, cancelled jobs, or runs that came early. Only then
  // a second statement re-delays the early ones (still scheduled for that attempt: not due at the
  // claim; or, in the moment since, due after all, which only costs a dispatch).
  const missed = msgs.filter((m) => !byId.has(m.id));
  const early = missed.length === 0 ? new Set<string>() : await refuseEarly(sql, missed);
  // A message repeated within one batch claims once: only its first copy gets the row.
  return msgs.map((m) => {
    if (early.delete(runKey(m))) return REFUSED_EARLY;
    const row = byId.get(m.id);
    if (!row || row.attempt !== m.attempt) return null;
    byId.delete(m.id);
    return row;
  });
}

/**
 * Runs whose message came before they were due go back to waiting (due_at kept, as `revert`
 * does), and their shards' owners hear when they are due. Returns their runs (runKey).
 */
function refuseEarly(sql: Sql, msgs: ClaimRequest[]): Promise<Set<string>> {
  return unrun(sql, msgs, sql`j.due_at`, sql`AND j.status::text IN ${sql.unsafe(from("refuseEarly"))} AND j.due_at > now() - interval '1 second'`);
}

export type DeferRequest = ClaimRequest & { delayMs: number };

/**
 * Dispatched jobs that wait for a target limit go back to waiting unrun, their attempt unchanged,
 * due `delayMs` from the database's now() (never earlier than they were), and their shards'
 * owners hear when they are due. Guarded like the claim (scheduled, for the attempt the message
 * names). Returns the ids deferred. Batched per database.
 */
export async function defer(sql: Sql, msgs: DeferRequest[]): Promise<boolean[]> {
  const done = await unrun(sql, msgs, sql`greatest(j.due_at, now() + m.delay_ms * interval '1 millisecond')`, sql`AND j.status::text IN ${sql.unsafe(from("defer"))}`);
  // A message repeated within one batch defers once: only its first copy says so.
  return msgs.map((m) => done.delete(runKey(m)));
}

/**
 * The statement of refuseEarly and defer: the messages' jobs, still at the attempt before the
 * one named, go back to waiting with due_at set to `due` (over j, the row, and m(job_id, run,
 * delay_ms), the message) where `guard` holds, and their shards' owners are notified of the
 * earliest per shard (duePayload's format, or `*:ms` when that would not fit). Returns the runs
 * they were dispatched for (runKey).
 */
async function unrun(sql: Sql, msgs: (ClaimRequest & { delayMs?: number })[], due: ReturnType<Sql>, guard: ReturnType<Sql>): Promise<Set<string>> {
  // m's columns are not named `attempt`: BACK_TO_WAITING reads the row's attempt unqualified.
  const ids = msgs.map((m) => m.id);
  const rows = await sql<{ id: string; attempt: number }[]>`
    WITH upd AS (
      UPDATE jobs j SET status = ${sql.unsafe(BACK_TO_WAITING)}, deadline_at = NULL, due_at = ${due}, updated_at = now()
      FROM unnest(${ids}::bigint[], ${msgs.map((m) => m.attempt)}::int[], ${msgs.map((m) => m.delayMs ?? 0)}::int[]) AS m(job_id, run, delay_ms)
      WHERE j.id = ANY(${ids}::bigint[]) AND j.id = m.job_id AND j.attempt = m.run - 1 ${guard}
      RETURNING j.id, j.shard_id, j.due_at, j.attempt),
    refused AS (
      SELECT string_agg(shard_id || ':' || ms, ',') AS payload, '*:' || min(ms) AS every
      FROM (SELECT shard_id, round(extract(epoch FROM min(due_at)) * 1000)::bigint AS ms FROM upd GROUP BY shard_id) s)
    SELECT upd.id::text, upd.attempt, (SELECT pg_notify(${DUE_CHANNEL}, CASE WHEN length(payload) <= ${MAX_PAYLOAD} THEN payload ELSE every END)
      FROM refused WHERE payload IS NOT NULL) AS notified
    FROM upd`;
  return new Set(rows.map((r) => runKey({ id: r.id, attempt: r.attempt + 1 })));
}

/** A message's job and the run it names. */
const runKey = (m: { id: string; attempt: number }) => `${m.id}/${m.attempt}`;

export interface Outcome {
  job: ClaimedJob;
  decision: Decision;
  result: RunResult;
  durationMs: number;
}

/**
 * A running job's outcome, only for the attempt that ran, with the attempt's row in job_attempts
 * (the job's history) in the same statement. Retries wait again: the shards' owners hear when
 * they are due (src/db/due-notify.ts). Batched per database.
 */
export async function record(sql: Sql, outcomes: Outcome[]): Promise<void> {
  const ids = outcomes.map((o) => o.job.id);
  const attempts = outcomes.map((o) => o.job.attempt);
  const statuses = outcomes.map((o) => (o.decision.kind === "retry" ? "retrying" : o.decision.kind));
  const errors = outcomes.map((o) => (o.decision.kind === "succeeded" ? null : o.decision.error.slice(0, 2_000)));
  const delays = outcomes.map((o) => (o.decision.kind === "retry" ? o.decision.delayMs : 0));
  const classes = outcomes.map((o) => (o.result.ok ? null : o.result.errorClass));
  const httpStatuses = outcomes.map((o) => o.result.httpStatus ?? null);
  const durations = outcomes.map((o) => Math.round(o.durationMs));
  // The claim's due_at: when this attempt was due (the update below moves a retry's).
  const dueAts = outcomes.map((o) => o.job.due_at.toISOString());
  const now = Date.now();
  const retries = outcomes.filter((o) => o.decision.kind === "retry").map((o) => ({ shard: o.job.shard_id, dueAt: now + (o.decision as { delayMs: number }).delayMs }));
  await sql`
    WITH o AS (
      SELECT * FROM unnest(${ids}::bigint[], ${attempts}::int[], ${statuses}::text[], ${errors}::text[], ${delays}::int[],
        ${classes}::text[], ${httpStatuses}::int[], ${durations}::int[], ${dueAts}::timestamptz[])
      AS o(id, attempt, status, error, delay_ms, error_class, http_status, duration_ms, due_at)),
    upd AS (
    UPDATE jobs j SET
      status = o.status::job_status,
      last_error = coalesce(o.error, j.last_error),
      due_at = CASE WHEN o.status = 'retrying' THEN now() + o.delay_ms * interval '1 millisecond' ELSE j.due_at END,
      finished_at = CASE WHEN o.status IN ('succeeded', 'failed') THEN now() END,
      deadline_at = NULL,
      updated_at = now()
    FROM o
    WHERE j.id = ANY(${ids}::bigint[]) AND j.id = o.id AND j.status::text IN ${sql.unsafe(from("record"))} AND j.attempt = o.attempt
    RETURNING j.id, j.attempt, j.user_id, j.started_at),
    att AS (
    INSERT INTO job_attempts (job_id, attempt, user_id, due_at, started_at, finished_at, outcome, error_class, error_message, http_status, duration_ms)
    SELECT upd.id, upd.attempt, upd.user_id, o.due_at, upd.started_at, now(), CASE WHEN o.status = 'succeeded' THEN 'succeeded' ELSE 'failed' END,
      o.error_class, o.error, o.http_status, o.duration_ms
    FROM upd JOIN o ON o.id = upd.id
    ON CONFLICT DO NOTHING)
    SELECT count(*) FROM upd${retries.length > 0 ? sql`, (SELECT pg_notify(${DUE_CHANNEL}, ${duePayload(retries)})) n` : sql``}`;
}
