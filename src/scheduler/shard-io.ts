/**
 * The shard actor's I/O: fenced, guarded SQL on one shard, and publishing to the due topic.
 * Every write first takes a share lock on the shard's fence row and checks the epoch, so a
 * stale owner's write fails with FencedOutError; the new owner's epoch bump waits for any
 * in-flight write of the old owner and rejects all later ones.
 */
import { context, trace } from "@opentelemetry/api";
import type { DueJob } from "../../actors/shard.machine.ts";
import type { Config } from "../config.ts";
import type postgres from "postgres";
import type { Sql } from "../db/databases.ts";
import type { Publisher } from "../kafka.ts";
import { metrics } from "../metrics.ts";
import { extractContext, injectContext, tracer } from "../telemetry.ts";

export class FencedOutError extends Error {
  constructor(readonly shard: number, readonly epoch: string, readonly current: string | null) {
    super(`shard ${shard}: epoch ${epoch} is fenced out (current ${current ?? "none"})`);
    this.name = "FencedOutError";
  }
}

/** What travels on the due topic (JSON). `attempt` is the number of the run it asks for. */
export interface DueMessage {
  id: string;
  shard: number;
  user_id: string;
  attempt: number;
  execute_at: string;
  epoch: string;
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

export class ShardIo {
  /** Dispatches under way: a stopping owner waits for them so it never leaves rows half-done. */
  private pending = new Set<Promise<unknown>>();

  constructor(
    private readonly sql: Sql,
    private readonly publisher: Publisher,
    private readonly s: ShardIoSettings,
  ) {}

  /**
   * Jobs waiting on the shard that are due by `horizon`: up to `perUserLoad` per user (earliest
   * first), `maxLoad` in all; plus the count of in-flight (scheduled or running) jobs, which is
   * how dispatch credits come back as executors finish.
   */
  async load(shard: number, horizon: Date): Promise<{ jobs: DueJob[]; inFlight: number }> {
    const [rows, [count]] = await Promise.all([
      this.sql<{ id: string; user_id: string; job_weight: number; execute_at: Date }[]>`
        WITH RECURSIVE u(user_id) AS (
          (SELECT user_id FROM jobs WHERE shard_id = ${shard} AND status IN ('created', 'retrying')
           ORDER BY user_id LIMIT 1)
          UNION ALL
          SELECT (SELECT j.user_id FROM jobs j
                  WHERE j.shard_id = ${shard} AND j.status IN ('created', 'retrying') AND j.user_id > u.user_id
                  ORDER BY j.user_id LIMIT 1)
          FROM u WHERE u.user_id IS NOT NULL)
        SELECT d.id, d.user_id, d.job_weight, d.execute_at
        FROM u CROSS JOIN LATERAL (
          SELECT j.id, j.user_id, j.job_weight, j.execute_at FROM jobs j
          WHERE j.shard_id = ${shard} AND j.user_id = u.user_id AND j.status IN ('created', 'retrying')
            AND j.execute_at <= ${horizon}
          ORDER BY j.execute_at, j.id LIMIT ${this.s.perUserLoad}) d
        WHERE u.user_id IS NOT NULL
        LIMIT ${this.s.maxLoad}`,
      this.sql<{ n: number }[]>`
        SELECT count(*)::int AS n FROM jobs WHERE shard_id = ${shard} AND status IN ('scheduled', 'running')`,
    ]);
    return {
      jobs: rows.map((r) => ({ id: BigInt(r.id), userId: r.user_id, weight: r.job_weight, executeAt: r.execute_at.getTime() })),
      inFlight: count!.n,
    };
  }

  /**
   * Dispatches jobs: marks them `scheduled` (fenced, guarded: only rows still waiting), then
   * publishes one message each. Marking first means a stale owner can never publish; a crash
   * after marking leaves `scheduled` rows that the rescuer re-dispatches after their deadline.
   * If publishing fails the rows go back to waiting. Returns the number dispatched.
   */
  dispatch(shard: number, epoch: string, jobs: DueJob[]): Promise<number> {
    const p = this.dispatchNow(shard, epoch, jobs);
    this.pending.add(p);
    void p.catch(() => {}).finally(() => this.pending.delete(p));
    return p;
  }

  /** Resolves once every dispatch started so far has finished (or failed). */
  async drain(): Promise<void> {
    await Promise.allSettled([...this.pending]);
  }

  private async dispatchNow(shard: number, epoch: string, jobs: DueJob[]): Promise<number> {
    if (jobs.length === 0) return 0;
    const ids = jobs.map((j) => j.id.toString());
    const rows = await this.sql.begin(async (tx) => {
      await checkFence(tx, shard, epoch);
      return tx<{ id: string; user_id: string; attempt: number; execute_at: Date; trace_context: Record<string, string> | null }[]>`
        UPDATE jobs SET status = 'scheduled', dispatch_epoch = ${epoch}, updated_at = now(),
          deadline_at = now() + ${this.s.scheduledDeadlineMs} * interval '1 millisecond'
        WHERE shard_id = ${shard} AND id = ANY(${ids}::bigint[]) AND status IN ('created', 'retrying')
        RETURNING id, user_id, attempt, execute_at, trace_context`;
    });
    if (rows.length === 0) return 0;
    const publishedAt = Date.now();
    const messages = rows.map((r) => {
      // One span per job, child of the API request that created it: the job's trace continues.
      const span = tracer().startSpan("job.dispatch", { attributes: { "job.id": r.id, "job.shard": shard, "job.attempt": r.attempt + 1 } }, extractContext(r.trace_context));
      const headers = injectContext(trace.setSpan(context.active(), span));
      span.end();
      const value: DueMessage = { id: r.id, shard, user_id: r.user_id, attempt: r.attempt + 1, execute_at: r.execute_at.toISOString(), epoch };
      return { key: r.id, value: JSON.stringify(value), headers };
    });
    try {
      await this.publisher.publish(this.s.topicDue, messages);
    } catch (e) {
      await this.sql`
        UPDATE jobs SET status = CASE WHEN attempt = 0 THEN 'created'::job_status ELSE 'retrying'::job_status END,
          deadline_at = NULL, updated_at = now()
        WHERE shard_id = ${shard} AND id = ANY(${rows.map((r) => r.id)}::bigint[]) AND status = 'scheduled' AND dispatch_epoch = ${epoch}`
        .catch(() => {});
      throw e;
    }
    for (const r of rows) metrics.dispatchLateness.observe(Math.max(0, publishedAt - r.execute_at.getTime()) / 1000);
    metrics.jobsDispatched.inc({ shard: String(shard) }, rows.length);
    return rows.length;
  }

  /**
   * Puts in-flight jobs whose deadline passed back to waiting (their executor died or the
   * message was lost). A job that was running has used its attempt: it retries now if it has
   * attempts left, else fails for good and goes to the dead-letter topic. Fenced.
   */
  async rescue(shard: number, epoch: string): Promise<number> {
    const rows = await this.sql.begin(async (tx) => {
      await checkFence(tx, shard, epoch);
      return tx<{ id: string; user_id: string; status: string; attempt: number; last_error: string | null }[]>`
        UPDATE jobs SET
          status = CASE
            WHEN status = 'scheduled' THEN CASE WHEN attempt = 0 THEN 'created'::job_status ELSE 'retrying'::job_status END
            WHEN attempt >= max_attempts THEN 'failed'::job_status
            ELSE 'retrying'::job_status END,
          last_error = CASE WHEN status = 'running' THEN 'run deadline passed without an outcome (executor lost?)' ELSE last_error END,
          finished_at = CASE WHEN status = 'running' AND attempt >= max_attempts THEN now() END,
          deadline_at = NULL,
          updated_at = now()
        WHERE shard_id = ${shard} AND status IN ('scheduled', 'running') AND deadline_at < now()
        RETURNING id, user_id, status, attempt, last_error`;
    });
    const failed = rows.filter((r) => r.status === "failed");
    if (failed.length > 0) {
      await this.publisher.publish(
        this.s.topicDlq,
        failed.map((r) => ({
          key: r.id,
          value: JSON.stringify({ id: r.id, shard, user_id: r.user_id, attempts: r.attempt, errors: [r.last_error], failed_at: new Date().toISOString(), reason: "run_deadline" }),
        })),
      );
      metrics.jobsDeadLettered.inc({ reason: "run_deadline" }, failed.length);
    }
    return rows.length;
  }
}
