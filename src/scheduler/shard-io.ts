/**
 * The shard actor's I/O: fenced, guarded SQL on one shard, and publishing to the due topic.
 * Every write first takes a share lock on the shard's fence row and checks the epoch, so a
 * stale owner's write fails with FencedOutError; the new owner's epoch bump waits for any
 * in-flight write of the old owner and rejects all later ones.
 */
import { context, trace as otelTrace } from "@opentelemetry/api";
import type { BacklogCursor } from "../../actors/fair-queue.ts";
import type { DueJob } from "../../actors/shard.machine.ts";
import type { Config } from "../config.ts";
import { encodeDue, type DueEntry } from "../due-message.ts";
import type postgres from "postgres";
import type { Sql } from "../db/databases.ts";
import type { Publisher } from "../kafka.ts";
import { Batcher } from "../batcher.ts";
import { log } from "../log.ts";
import { metrics } from "../metrics.ts";
import { extractContext, injectContext, tracer, tracingEnabled } from "../telemetry.ts";

const RUN_DEADLINE_ERROR = "run deadline passed without an outcome (executor lost?)";

export class FencedOutError extends Error {
  constructor(readonly shard: number, readonly epoch: string, readonly current: string | null) {
    super(`shard ${shard}: epoch ${epoch} is fenced out (current ${current ?? "none"})`);
    this.name = "FencedOutError";
  }
}

export interface ShardIoSettings {
  topicDue: string;
  topicDlq: string;
  scheduledDeadlineMs: number;
  perUserLoad: number;
  maxLoad: number;
}

export const shardIoSettings = (config: Config): ShardIoSettings => ({
  topicDue: config.kafka.topicDue,
  topicDlq: config.kafka.topicDlq,
  scheduledDeadlineMs: config.scheduler.scheduledDeadlineMs,
  perUserLoad: config.scheduler.perUserLoad,
  maxLoad: config.scheduler.maxLoad,
});

/**
 * Takes the shard's fence after winning its etcd ownership key: bumps the epoch and returns
 * the new value, which every later write of this owner must present. The bump waits for any
 * write of the previous owner that holds the fence row's share lock, and rejects all later ones.
 * (A counter in SQL rather than an etcd revision, so that even an etcd cluster rebuilt from
 * scratch, whose revisions restart at 1, cannot hand out an epoch lower than a stale owner's.)
 */
export async function acquireFence(sql: Sql, shard: number, owner: string): Promise<string> {
  const [row] = await sql<{ epoch: string }[]>`
    INSERT INTO shard_fences (shard_id, epoch, owner) VALUES (${shard}, 1, ${owner})
    ON CONFLICT (shard_id) DO UPDATE SET epoch = shard_fences.epoch + 1, owner = EXCLUDED.owner, updated_at = now()
    RETURNING epoch`;
  return row!.epoch;
}

async function checkFence(tx: postgres.TransactionSql, shard: number, epoch: string): Promise<void> {
  const [row] = await tx<{ epoch: string }[]>`SELECT epoch FROM shard_fences WHERE shard_id = ${shard} FOR SHARE`;
  if (!row || row.epoch !== epoch) throw new FencedOutError(shard, epoch, row?.epoch ?? null);
}

interface MarkRequest {
  shard: number;
  epoch: string;
  ids: string[];
}
interface MarkedRow {
  id: string;
  user_id: string;
  attempt: number;
  execute_at: Date;
  trace_context: Record<string, string> | null;
}
interface MarkResult {
  fence: string | null;
  rows: MarkedRow[];
}

/**
 * Marks due jobs `scheduled` for every shard actor of one database that dispatches in the same
 * tick, in one statement: each shard's fence row is share-locked for the statement, and a
 * request's rows change only if its epoch matches its shard's fence; every request gets its
 * fence's current epoch back. (At the seed's peak most dispatches are of one job; one statement
 * per job was the scheduler's largest cost in PostgreSQL.)
 */
async function markMany(sql: Sql, deadlineMs: number, reqs: MarkRequest[]): Promise<MarkResult[]> {
  const ids = reqs.flatMap((r) => r.ids);
  // Asynchronous commit for this statement only: it takes a WAL flush (and any I/O stall) off
  // the dispatch path. Safe because a mark lost in a database crash only reverts the row to
  // waiting: its message, if already published, loses the executor's guarded claim
  // (scheduled -> running) and is dropped, and the job is dispatched again. The fence row is
  // only read here; fence bumps, rescues and executor transitions commit synchronously.
  //
  // Rows are found by `id = ANY($ids)`, a primary-key lookup: joining the jobs table to an
  // unnest() of the ids instead flipped, once the table had statistics, to a hash join over a
  // full scan that took seconds per statement. The status guard compares `status::text` so that
  // it does not imply the due index's predicate, which would let the planner scan that whole
  // partial index instead when its statistics are stale (see src/executor/job-sql.ts). The
  // valid shards are an array tested per row, not a joined relation: joined, the planner
  // (estimating one valid shard) looked every id up once per shard of the tick, 16 times over.
  type Row = { kind: "f" | "r"; shard_id: number; epoch: string | null; id: string | null; user_id: string; attempt: number; execute_at: Date; trace_context: Record<string, string> | null };
  const [, result] = await sql.begin((tx) => [tx`SET LOCAL synchronous_commit TO OFF`, tx<Row[]>`
    WITH want AS (SELECT * FROM unnest(${reqs.map((r) => r.shard)}::int[], ${reqs.map((r) => r.epoch)}::bigint[]) AS w(shard_id, epoch)),
    fence AS (SELECT shard_id, epoch FROM shard_fences WHERE shard_id = ANY(${reqs.map((r) => r.shard)}::int[]) FOR SHARE),
    valid AS (SELECT DISTINCT f.shard_id, f.epoch FROM fence f JOIN want w ON w.shard_id = f.shard_id AND w.epoch = f.epoch),
    upd AS (
      UPDATE jobs j SET status = 'scheduled', dispatch_epoch = (SELECT v.epoch FROM valid v WHERE v.shard_id = j.shard_id),
        updated_at = now(), deadline_at = now() + ${deadlineMs} * interval '1 millisecond'
      WHERE j.id = ANY(${ids}::bigint[]) AND j.shard_id = ANY(ARRAY(SELECT shard_id FROM valid))
        AND j.status::text IN ('created', 'retrying')
      RETURNING j.id, j.shard_id, j.user_id, j.attempt, j.execute_at, j.trace_context)
    SELECT 'f' AS kind, shard_id, epoch::text AS epoch, NULL::text AS id, NULL::text AS user_id, NULL::int AS attempt,
      NULL::timestamptz AS execute_at, NULL::jsonb AS trace_context FROM fence
    UNION ALL
    SELECT 'r', shard_id, NULL, id::text, user_id::text, attempt, execute_at, trace_context FROM upd`]);
  const fences = new Map<number, string>();
  const rowsByShard = new Map<number, MarkedRow[]>();
  for (const r of result as Row[]) {
    if (r.kind === "f") fences.set(r.shard_id, r.epoch!);
    else {
      const list = rowsByShard.get(r.shard_id) ?? [];
      list.push({ id: r.id!, user_id: r.user_id, attempt: r.attempt, execute_at: r.execute_at, trace_context: r.trace_context });
      rowsByShard.set(r.shard_id, list);
    }
  }
  // Two requests for one shard in one tick cannot both hold a valid epoch unless they are the
  // same actor's; ids are disjoint, so each request takes the rows it asked for.
  return reqs.map((q) => {
    const wanted = new Set(q.ids);
    return { fence: fences.get(q.shard) ?? null, rows: (rowsByShard.get(q.shard) ?? []).filter((r) => wanted.has(r.id)) };
  });
}

const markBatchers = new WeakMap<Sql, Batcher<Sql, MarkRequest, MarkResult>>();
function markBatcher(sql: Sql, deadlineMs: number): Batcher<Sql, MarkRequest, MarkResult> {
  let b = markBatchers.get(sql);
  if (!b) markBatchers.set(sql, (b = new Batcher((db, reqs) => markMany(db, deadlineMs, reqs), 64)));
  return b;
}

export class ShardIo {
  /** Publishes of marked rows under way: a stopping owner waits for them (drain). */
  private pending = new Set<Promise<unknown>>();

  constructor(
    private readonly sql: Sql,
    private readonly publisher: Publisher,
    private readonly s: ShardIoSettings,
  ) {}

  /**
   * Jobs waiting on the shard that are due by `horizon`: up to `perUserLoad` per user (earliest
   * first), `maxLoad` in all; for a user with a cursor in `after`, only jobs after it (by
   * execute_at, id: a range on the due index, not a re-read of what is already queued).
   */
  async loadDue(shard: number, horizon: Date, after: BacklogCursor[] = []): Promise<DueJob[]> {
    const rows = await this.sql<{ id: string; user_id: string; job_weight: number; execute_at: Date }[]>`
      WITH RECURSIVE u(user_id) AS (
        (SELECT user_id FROM jobs WHERE shard_id = ${shard} AND status IN ('created', 'retrying')
         ORDER BY user_id LIMIT 1)
        UNION ALL
        SELECT (SELECT j.user_id FROM jobs j
                WHERE j.shard_id = ${shard} AND j.status IN ('created', 'retrying') AND j.user_id > u.user_id
                ORDER BY j.user_id LIMIT 1)
        FROM u WHERE u.user_id IS NOT NULL),
      cursor AS (
        SELECT * FROM unnest(${after.map((a) => a.userId)}::bigint[], ${after.map((a) => new Date(a.executeAt).toISOString())}::timestamptz[],
          ${after.map((a) => a.id.toString())}::bigint[]) AS c(user_id, execute_at, id))
      SELECT d.id, d.user_id, d.job_weight, d.execute_at
      FROM u LEFT JOIN cursor c ON c.user_id = u.user_id
      CROSS JOIN LATERAL (
        SELECT j.id, j.user_id, j.job_weight, j.execute_at FROM jobs j
        WHERE j.shard_id = ${shard} AND j.user_id = u.user_id AND j.status IN ('created', 'retrying')
          AND j.execute_at <= ${horizon}
          AND (j.execute_at, j.id) > (coalesce(c.execute_at, '-infinity'), coalesce(c.id, -1))
        ORDER BY j.execute_at, j.id LIMIT ${this.s.perUserLoad}) d
      WHERE u.user_id IS NOT NULL
      LIMIT ${this.s.maxLoad}`;
    return rows.map((r) => ({ id: BigInt(r.id), userId: r.user_id, weight: r.job_weight, executeAt: r.execute_at.getTime() }));
  }

  /** In-flight (scheduled or running) jobs: dispatch credits come back as this count drops. */
  async inFlight(shard: number): Promise<number> {
    const [row] = await this.sql<{ n: number }[]>`
      SELECT count(*)::int AS n FROM jobs WHERE shard_id = ${shard} AND status IN ('scheduled', 'running')`;
    return row!.n;
  }

  /**
   * Dispatches jobs: marks them `scheduled` (fenced, guarded: only rows still waiting), then
   * publishes each at its execute_at (never before; at once if already due). Marking first
   * means a stale owner can never publish; a crash after marking leaves `scheduled` rows that
   * the rescuer re-dispatches after their deadline. If publishing fails the rows go back to
   * waiting and the next load queues them again. Resolves with the number marked, once marked;
   * the publishes are tracked so that drain() can wait for them.
   */
  async dispatch(shard: number, epoch: string, jobs: DueJob[]): Promise<number> {
    if (jobs.length === 0) return 0;
    const t0 = performance.now();
    const { fence, rows } = await markBatcher(this.sql, this.s.scheduledDeadlineMs).submit(this.sql, { shard, epoch, ids: jobs.map((j) => j.id.toString()) });
    if (fence !== epoch) throw new FencedOutError(shard, epoch, fence);
    metrics.dispatchStep.observe((performance.now() - t0) / 1000, { step: "mark" });
    // Publish in groups by due time, each group when it falls due.
    const groups = new Map<number, MarkedRow[]>();
    for (const r of rows) {
      const at = r.execute_at.getTime();
      const list = groups.get(at);
      if (list) list.push(r);
      else groups.set(at, [r]);
    }
    for (const [at, group] of groups) {
      const wait = at - Date.now();
      const p = (wait > 0 ? Bun.sleep(wait) : Promise.resolve()).then(() => this.publish(shard, epoch, group));
      this.pending.add(p);
      void p
        .catch((e) => log.warn("publish failed; jobs go back to waiting", { shard, count: group.length, err: e as Error }))
        .finally(() => this.pending.delete(p));
    }
    return rows.length;
  }

  /** Resolves once every publish started so far has finished (or failed). */
  async drain(): Promise<void> {
    while (this.pending.size > 0) await Promise.allSettled([...this.pending]);
  }

  private async publish(shard: number, epoch: string, rows: MarkedRow[]): Promise<void> {
    const t1 = performance.now();
    const spans = tracingEnabled();
    const entries = rows.map((r): DueEntry => {
      // One span per job, child of the API request that created it: the job's trace continues.
      let trace = r.trace_context ?? {};
      if (spans) {
        const span = tracer().startSpan("job.dispatch", { attributes: { "job.id": r.id, "job.shard": shard, "job.attempt": r.attempt + 1 } }, extractContext(r.trace_context));
        trace = injectContext(otelTrace.setSpan(context.active(), span));
        span.end();
      }
      return { id: r.id, shard, user_id: r.user_id, attempt: r.attempt + 1, execute_at: r.execute_at.toISOString(), epoch, trace };
    });
    const messages = encodeDue(entries);
    try {
      await this.publisher.publish(this.s.topicDue, messages);
    } catch (e) {
      await this.sql`
        UPDATE jobs SET status = CASE WHEN attempt = 0 THEN 'created'::job_status ELSE 'retrying'::job_status END,
          deadline_at = NULL, updated_at = now()
        WHERE id = ANY(${rows.map((r) => r.id)}::bigint[]) AND shard_id = ${shard} AND status::text = 'scheduled' AND dispatch_epoch = ${epoch}`
        .catch(() => {});
      throw e;
    }
    const publishedAt = Date.now();
    metrics.dispatchStep.observe((performance.now() - t1) / 1000, { step: "publish" });
    for (const r of rows) metrics.dispatchLateness.observe(Math.max(0, publishedAt - r.execute_at.getTime()) / 1000);
    metrics.jobsDispatched.inc({ shard: String(shard) }, rows.length);
  }

  /**
   * Puts in-flight jobs whose deadline passed back to waiting (their executor died or the
   * message was lost). A job that was running has used its attempt: it retries now if it has
   * attempts left, else fails for good and goes to the dead-letter topic. Fenced.
   *
   * As in the executor, a dead-letter record is published before its row says `failed`: the
   * runs that fail for good are locked first (an executor's late outcome waits, then loses its
   * guard), their records published, and only then are the rows changed, in the same
   * transaction. A failed publish or a crash leaves them running past their deadline, and the
   * next rescue publishes again: a record may be duplicated, never missing.
   */
  async rescue(shard: number, epoch: string): Promise<number> {
    const { changed, deadLettered } = await this.sql.begin(async (tx) => {
      await checkFence(tx, shard, epoch);
      const doomed = await tx<{ id: string; user_id: string; attempt: number; last_error: string | null }[]>`
        SELECT id, user_id, attempt, last_error FROM jobs
        WHERE shard_id = ${shard} AND status = 'running' AND deadline_at < now() AND attempt >= max_attempts
        FOR UPDATE`;
      if (doomed.length > 0) {
        const failedAt = new Date().toISOString();
        await this.publisher.publish(
          this.s.topicDlq,
          doomed.map((r) => ({
            key: r.id,
            value: JSON.stringify({ id: r.id, shard, user_id: r.user_id, attempts: r.attempt, errors: [r.last_error, RUN_DEADLINE_ERROR].filter((e) => e), failed_at: failedAt, reason: "run_deadline" }),
          })),
        );
      }
      // now() is the transaction's start, so this sees the same expired runs as the lock above;
      // a run fails here only if its record went out.
      const rows = await tx`
        UPDATE jobs SET
          status = CASE
            WHEN status = 'scheduled' THEN CASE WHEN attempt = 0 THEN 'created'::job_status ELSE 'retrying'::job_status END
            WHEN attempt >= max_attempts THEN 'failed'::job_status
            ELSE 'retrying'::job_status END,
          last_error = CASE WHEN status = 'running' THEN ${RUN_DEADLINE_ERROR} ELSE last_error END,
          finished_at = CASE WHEN status = 'running' AND attempt >= max_attempts THEN now() END,
          deadline_at = NULL,
          updated_at = now()
        WHERE shard_id = ${shard} AND status IN ('scheduled', 'running') AND deadline_at < now()
          AND (status = 'scheduled' OR attempt < max_attempts OR id = ANY(${doomed.map((r) => r.id)}::bigint[]))
        RETURNING id`;
      return { changed: rows.length, deadLettered: doomed.length };
    });
    if (deadLettered > 0) metrics.jobsDeadLettered.inc({ reason: "run_deadline" }, deadLettered);
    return changed;
  }
}
