/**
 * The scheduler's SQL on one shard database: loading waiting jobs, marking them `scheduled`
 * (fenced, batched across the shards of a database), putting them back after a failed publish,
 * and rescuing in-flight jobs whose deadline passed.
 *
 * Status guards of by-id updates compare `status::text` on purpose: a plain `status = 'created'`
 * implies a partial index's predicate, and with statistics taken before a burst the planner
 * answered a 1,000-id update by scanning that whole index instead of looking the ids up.
 */
import { BACK_TO_WAITING, IN_FLIGHT, inList, WAITING } from "../jobs/lifecycle.ts";
import type { DeadJob } from "../dead-letter.ts";
import type { FairItem } from "../../actors/fair-queue.ts";
import type { LoadInput, LoadOutput } from "../../actors/shard.machine.ts";
import type { Sql } from "../db/databases.ts";
import { checkFence } from "./fence.ts";

/**
 * Waiting jobs of a shard due by the horizon: for each user with waiting jobs (a skip-scan over
 * the due index), up to its limit, after its cursor (a range on the same index), in (due_at, id)
 * order; `maxRows` in all. Also returns the earliest due time beyond the horizon (one index probe
 * per user), which tells the shard actor when to load next, and the database's clock, which
 * decides the cursors.
 */
export async function loadDue(sql: Sql, input: LoadInput): Promise<Omit<LoadOutput, "rescuedAt">> {
  const users = input.users;
  const horizon = new Date(input.horizon);
  const rows = await sql<{ kind: "r" | "n"; id: string | null; user_id: string | null; due_at: Date | null; db_now: Date }[]>`
    WITH RECURSIVE u(user_id) AS (
      (SELECT user_id FROM jobs WHERE shard_id = ${input.shard} AND status IN ${sql.unsafe(inList(WAITING))}
       ORDER BY user_id LIMIT 1)
      UNION ALL
      SELECT (SELECT j.user_id FROM jobs j
              WHERE j.shard_id = ${input.shard} AND j.status IN ${sql.unsafe(inList(WAITING))} AND j.user_id > u.user_id
              ORDER BY j.user_id LIMIT 1)
      FROM u WHERE u.user_id IS NOT NULL),
    known AS (
      SELECT * FROM unnest(${users.map((u) => u.userId)}::bigint[], ${users.map((u) => u.limit)}::int[],
        ${users.map((u) => (u.after ? new Date(u.after.dueAt).toISOString() : null))}::timestamptz[],
        ${users.map((u) => u.after?.id.toString() ?? null)}::bigint[]) AS k(user_id, lim, due_at, id)),
    per_user AS (
      SELECT u.user_id, k.lim, k.due_at, k.id FROM u LEFT JOIN known k ON k.user_id = u.user_id WHERE u.user_id IS NOT NULL),
    due AS (
      SELECT d.id, d.user_id, d.due_at FROM per_user p
      CROSS JOIN LATERAL (
        SELECT j.id, j.user_id, j.due_at FROM jobs j
        WHERE j.shard_id = ${input.shard} AND j.user_id = p.user_id AND j.status IN ${sql.unsafe(inList(WAITING))}
          AND j.due_at <= ${horizon}
          AND (j.due_at, j.id) > (coalesce(p.due_at, '-infinity'), coalesce(p.id, -1))
        ORDER BY j.due_at, j.id LIMIT coalesce(p.lim, ${input.newUserLimit})) d
      LIMIT ${input.maxRows}),
    later AS (
      SELECT min(n.due_at) AS due_at FROM per_user p
      CROSS JOIN LATERAL (
        SELECT j.due_at FROM jobs j
        WHERE j.shard_id = ${input.shard} AND j.user_id = p.user_id AND j.status IN ${sql.unsafe(inList(WAITING))} AND j.due_at > ${horizon}
        ORDER BY j.due_at LIMIT 1) n)
    SELECT 'r' AS kind, id::text, user_id::text, due_at, now() AS db_now FROM due
    UNION ALL
    SELECT 'n', NULL, NULL, due_at, now() FROM later`;
  const jobs: FairItem[] = [];
  let nextDue: number | null = null;
  for (const r of rows) {
    if (r.kind === "n") nextDue = r.due_at?.getTime() ?? null;
    else jobs.push({ id: BigInt(r.id!), userId: r.user_id!, shard: input.shard, dueAt: r.due_at!.getTime() });
  }
  return { jobs, nextDue, dbNow: rows[0]!.db_now.getTime() };
}

export interface MarkRequestSql {
  shard: number;
  epoch: string;
  ids: string[];
}

export interface MarkedRow {
  id: string;
  shard_id: number;
  user_id: string;
  attempt: number;
  due_at: Date;
  trace_context: Record<string, string> | null;
}

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
export async function markMany(sql: Sql, deadlineMs: number, aheadMs: number, reqs: MarkRequestSql[]): Promise<MarkResult[]> {
  const ids = reqs.flatMap((r) => r.ids);
  type Row = { kind: "f" | "r"; shard_id: number; epoch: string | null; id: string | null; user_id: string; attempt: number; due_at: Date; trace_context: Record<string, string> | null };
  const [, result] = await sql.begin((tx) => [tx`SET LOCAL synchronous_commit TO OFF`, tx<Row[]>`
    WITH want AS (SELECT * FROM unnest(${reqs.map((r) => r.shard)}::int[], ${reqs.map((r) => r.epoch)}::bigint[]) AS w(shard_id, epoch)),
    fence AS (SELECT shard_id, epoch FROM shard_fences WHERE shard_id = ANY(${reqs.map((r) => r.shard)}::int[]) FOR SHARE),
    valid AS (SELECT DISTINCT f.shard_id, f.epoch FROM fence f JOIN want w ON w.shard_id = f.shard_id AND w.epoch = f.epoch),
    upd AS (
      UPDATE jobs j SET status = 'scheduled', dispatch_epoch = (SELECT v.epoch FROM valid v WHERE v.shard_id = j.shard_id),
        updated_at = now(), deadline_at = now() + ${deadlineMs} * interval '1 millisecond'
      WHERE j.id = ANY(${ids}::bigint[]) AND j.shard_id = ANY(ARRAY(SELECT shard_id FROM valid))
        AND j.status::text IN ${tx.unsafe(inList(WAITING))} AND j.due_at <= now() + ${aheadMs} * interval '1 millisecond'
      RETURNING j.id, j.shard_id, j.user_id, j.attempt, j.due_at, j.trace_context)
    SELECT 'f' AS kind, shard_id, epoch::text AS epoch, NULL::text AS id, NULL::text AS user_id, NULL::int AS attempt,
      NULL::timestamptz AS due_at, NULL::jsonb AS trace_context FROM fence
    UNION ALL
    SELECT 'r', shard_id, NULL, id::text, user_id::text, attempt, due_at, trace_context FROM upd`]);
  const fences = new Map<number, string>();
  const rowsByShard = new Map<number, MarkedRow[]>();
  for (const r of result as Row[]) {
    if (r.kind === "f") fences.set(r.shard_id, r.epoch!);
    else {
      const list = rowsByShard.get(r.shard_id) ?? [];
      list.push({ id: r.id!, shard_id: r.shard_id, user_id: r.user_id, attempt: r.attempt, due_at: r.due_at, trace_context: r.trace_context });
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

/** Marked rows whose message could not be published go back to waiting, due now. */
export async function unmark(sql: Sql, shard: number, epoch: string, ids: string[]): Promise<void> {
  await sql`
    UPDATE jobs SET status = ${sql.unsafe(BACK_TO_WAITING)},
      deadline_at = NULL, due_at = now(), updated_at = now()
    WHERE id = ANY(${ids}::bigint[]) AND shard_id = ${shard} AND status::text = 'scheduled' AND dispatch_epoch = ${epoch}`;
}

/**
 * After taking a shard whose previous owner (epoch `abandoned`) did not release it in order:
 * rows it marked and nobody claimed go back to waiting, due now, instead of at their deadline.
 * Some were published: such a job then has two messages for one attempt, and the executor's
 * guarded claim lets only one of them run. Fenced by the new owner's epoch.
 */
export async function takeBackAbandoned(sql: Sql, shard: number, epoch: string, abandoned: string): Promise<number> {
  return sql.begin(async (tx) => {
    await checkFence(tx, shard, epoch);
    const rows = await tx`
      UPDATE jobs SET status = ${tx.unsafe(BACK_TO_WAITING)},
        deadline_at = NULL, due_at = now(), updated_at = now()
      WHERE shard_id = ${shard} AND status = 'scheduled' AND dispatch_epoch = ${abandoned}
      RETURNING id`;
    return rows.length;
  });
}

export const RUN_DEADLINE_ERROR = "run deadline passed without an outcome (executor lost?)";

/** A run on its last attempt whose deadline passed: its job fails for good. */
export type DoomedRun = DeadJob;

/**
 * Puts in-flight jobs whose deadline passed (and is at or after `since`) back to waiting, due
 * now (their executor died or the message was lost). A job that was running has used its attempt: it retries if it has
 * attempts left; runs on their last attempt fail for good, and `deadLetter` must publish their
 * records first: they are locked, handed to it, and marked `failed` in the same transaction
 * only once it resolves (a failed publish changes nothing; the next rescue tries again). Fenced.
 */
export async function rescueExpired(
  sql: Sql,
  shard: number,
  epoch: string,
  since: Date | null,
  deadLetter: (runs: DoomedRun[]) => Promise<void>,
  retryDelayMs: (attempt: number) => number,
): Promise<{ changed: number; deadLettered: number; dbNow: Date }> {
  // Only deadlines from `since` on: the in-flight index keeps an entry for every job that
  // passed through, dead until vacuumed, and a scan from the start walks them all.
  const from = since ?? new Date(0);
  return sql.begin(async (tx) => {
    await checkFence(tx, shard, epoch);
    // The runs that died: each is an attempt of its job's history, and those on their last
    // attempt fail for good. Their rows stay locked until this transaction ends, so a late
    // outcome of the same run waits, then finds it moved on.
    const lost = await tx<(DoomedRun & { started_at: Date })[]>`
      SELECT id::text, shard_id, user_id::text, message, target, attempt, max_attempts, last_error, started_at FROM jobs
      WHERE shard_id = ${shard} AND status = 'running' AND deadline_at < now() AND deadline_at >= ${from}
      FOR UPDATE`;
    const doomed = lost.filter((r) => r.attempt >= r.max_attempts);
    if (doomed.length > 0) await deadLetter(doomed);
    if (lost.length > 0) {
      await tx`
        INSERT INTO job_attempts (job_id, attempt, user_id, started_at, finished_at, outcome, error_class, error_message)
        SELECT id, attempt, user_id, started_at, now(), 'lost', 'run_lost', ${RUN_DEADLINE_ERROR}
        FROM unnest(${lost.map((r) => r.id)}::bigint[], ${lost.map((r) => r.attempt)}::int[], ${lost.map((r) => r.user_id)}::bigint[],
          ${lost.map((r) => r.started_at.toISOString())}::timestamptz[]) AS l(id, attempt, user_id, started_at)
        ON CONFLICT DO NOTHING`;
    }
    // A lost run is a failed attempt: the job backs off like any retry. (A marked job that was
    // never claimed did not run: it is due again at once.)
    const delays = lost.map((r) => retryDelayMs(r.attempt));
    // now() is the transaction's start, so this sees the same expired runs as the lock above;
    // a run fails here only if its record went out.
    const rows = await tx`
      UPDATE jobs SET
        status = CASE
          WHEN status = 'scheduled' THEN ${tx.unsafe(BACK_TO_WAITING)}
          WHEN attempt >= max_attempts THEN 'failed'::job_status
          ELSE 'retrying'::job_status END,
        last_error = CASE WHEN status = 'running' THEN ${RUN_DEADLINE_ERROR} ELSE last_error END,
        finished_at = CASE WHEN status = 'running' AND attempt >= max_attempts THEN now() END,
        due_at = now() + coalesce((SELECT d.delay_ms FROM unnest(${lost.map((r) => r.id)}::bigint[], ${delays}::int[]) AS d(id, delay_ms) WHERE d.id = jobs.id), 0) * interval '1 millisecond',
        deadline_at = NULL,
        updated_at = now()
      WHERE shard_id = ${shard} AND status IN ${tx.unsafe(inList(IN_FLIGHT))} AND deadline_at < now() AND deadline_at >= ${from}
        AND (status = 'scheduled' OR attempt < max_attempts OR id = ANY(${doomed.map((r) => r.id)}::bigint[]))
      RETURNING id`;
    const [{ now }] = (await tx`SELECT now() AS now`) as unknown as [{ now: Date }];
    return { changed: rows.length, deadLettered: doomed.length, dbNow: now };
  });
}
