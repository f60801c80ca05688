/**
 * Job rows in their shards, for the API: create (single, batch, idempotent), read, list, and the
 * user's transitions (cancel, retry, reschedule), which are src/jobs/transitions.ts's.
 */
import { JOB_STATUSES, type JobStatus } from "./lifecycle.ts";
import { API_COLUMNS, newRows, type ApiRow, type NewJobRow } from "./job-row.ts";
import * as batches from "./batches.ts";
import * as transitions from "./transitions.ts";
import { traceIdOf } from "../telemetry.ts";
import { createHash } from "node:crypto";
import type { IdGenerator } from "../ids.ts";
import { Batcher } from "../batcher.ts";
import { shardOf } from "../shard-map.ts";
import { retryRolledBack, type Databases, type Sql } from "../db/databases.ts";
import { DUE_CHANNEL, duePayload } from "../db/due-notify.ts";
import { priorityName, type JobSpec } from "./job-input.ts";

export { JOB_STATUSES, type JobStatus } from "./lifecycle.ts";


/** The API representation. Job ids exceed 2^53 and travel as strings. */
export function toJobView(r: ApiRow) {
  return {
    id: r.id,
    user_id: Number(r.user_id),
    kind: r.kind,
    /** Which of the user's due jobs goes first: high, normal or low. */
    priority: priorityName(r.priority),
    message: r.message,
    status: r.status,
    execute_at: r.execute_at.toISOString(),
    /** When the next attempt may start (execute_at does not move: a retry backs off from the failed run). */
    next_attempt_at: r.status === "created" || r.status === "retrying" ? r.due_at.toISOString() : null,
    shard_id: r.shard_id,
    attempt: r.attempt,
    max_attempts: r.max_attempts,
    target: r.target,
    last_error: r.last_error,
    created_at: r.created_at.toISOString(),
    updated_at: r.updated_at.toISOString(),
    started_at: r.started_at?.toISOString() ?? null,
    finished_at: r.finished_at?.toISOString() ?? null,
    /** The job's trace (the request that created it, its dispatches and runs), for a trace UI. */
    trace_id: traceIdOf(r.trace_context),
  };
}
export type JobView = ReturnType<typeof toJobView>;

export interface AttemptRow {
  attempt: number;
  started_at: Date;
  finished_at: Date;
  outcome: "succeeded" | "failed" | "lost";
  error_class: string | null;
  error_message: string | null;
  http_status: number | null;
  duration_ms: number | null;
}

export function toAttemptView(a: AttemptRow) {
  return {
    attempt: a.attempt,
    started_at: a.started_at.toISOString(),
    finished_at: a.finished_at.toISOString(),
    outcome: a.outcome,
    error_class: a.error_class,
    error: a.error_message,
    http_status: a.http_status,
    duration_ms: a.duration_ms,
  };
}

export interface Owner {
  userId: string;
}

export interface ListOptions {
  limit: number;
  cursor: bigint | null;
  statuses: JobStatus[] | null;
  executeAfter: Date | null;
  executeBefore: Date | null;
}

export type TransitionResult = { kind: "done"; job: ApiRow } | { kind: "conflict"; status: JobStatus } | { kind: "not_found" };


export class JobStore {
  /**
   * Single creates made at the same moment share one INSERT per database (each request still
   * answers only after its row is committed): on the 2-core dev box this lifted single creates
   * from ~2,300/s to the figure in the API benchmark, as PostgreSQL commits per statement.
   */
  private readonly singles: Batcher<Sql, NewJobRow, ApiRow>;

  constructor(
    private readonly dbs: Databases,
    private readonly ids: IdGenerator,
  ) {
    this.singles = new Batcher((sql, rows) => this.onUp(sql, () => insertRows(sql, rows)), 500);
  }

  /**
   * A new job's id, on a database that answers: ids decide shards (shardOf), so while one
   * database is out (src/db/gate.ts) new jobs land on the others and creates go on.
   */
  private nextId(): bigint {
    for (let i = 0; i < 64; i++) {
      const id = this.ids.next();
      if (!this.dbs.gate.isOut(this.dbs.indexOf(shardOf(id, this.dbs.shardCount)))) return id;
    }
    return this.ids.next();
  }

  /** A write to `sql` that marks its database out when it errs so (new ids then avoid it). */
  private onUp<T>(sql: Sql, write: () => Promise<T>): Promise<T> {
    return this.dbs.gate.watch(this.dbs.all.indexOf(sql), write);
  }

  private rowFor(id: bigint, owner: Owner, spec: JobSpec, trace: Record<string, string>, idemKey: string | null): { shard: number; row: NewJobRow } {
    const shard = shardOf(id, this.dbs.shardCount);
    return {
      shard,
      row: {
        id: id.toString(),
        shard_id: shard,
        user_id: owner.userId,
        kind: spec.kind,
        priority: spec.priority,
        message: spec.message,
        target: spec.target,
        execute_at: spec.executeAt,
        max_attempts: spec.maxAttempts,
        idempotency_key: idemKey,
        trace_context: trace,
      },
    };
  }

  /**
   * Creates one job. With an idempotency key, the key is reserved in the users database first
   * (with the job id it will get); a repeat returns the job created under that key, and a crash
   * between the two writes is repaired by the repeat, which inserts the same id.
   */
  async create(owner: Owner, spec: JobSpec, trace: Record<string, string>, idem?: { key: string; requestHash: string }):
    Promise<{ job: ApiRow; replayed: boolean } | { conflict: true }> {
    let id = this.nextId();
    let replayed = false;
    if (idem) {
      const reserved = await this.reserveKey(owner.userId, idem.key, id, idem.requestHash);
      if (reserved.request_hash !== idem.requestHash) return { conflict: true };
      id = BigInt(reserved.job_id);
      replayed = !reserved.inserted;
    }
    const { shard, row } = this.rowFor(id, owner, spec, trace, idem?.key ?? null);
    const sql = this.dbs.forShard(shard);
    if (!idem) return { job: await this.singles.submit(sql, row), replayed: false };
    // A replay finds the job wherever it is now; only a job that was never written is inserted
    // (a finished job has left `jobs`, and inserting its id again would run it again).
    const find = async () => (await sql<ApiRow[]>`SELECT ${sql.unsafe(API_COLUMNS)} FROM all_jobs WHERE id = ${row.id}`)[0];
    const earlier = replayed ? await find() : undefined;
    if (earlier) return { job: earlier, replayed };
    const [inserted] = await insertRows(sql, [row], { skipExisting: true });
    if (inserted) return { job: inserted, replayed };
    const existing = await find();
    if (!existing) throw new Error(`job ${row.id} neither inserted nor found`);
    return { job: existing, replayed };
  }

  /**
   * Reserves `key` for `id`, or returns the earlier reservation. Two statements, not one CTE:
   * a concurrent first request commits after our statement's snapshot, so a single statement
   * could see neither its own insert nor the other's row.
   */
  private async reserveKey(userId: string, key: string, id: bigint, hash: string) {
    const users = this.dbs.users;
    for (;;) {
      const [mine] = await users<{ job_id: string; request_hash: string }[]>`
        INSERT INTO idempotency_keys (user_id, key, job_id, request_hash)
        VALUES (${userId}, ${key}, ${id.toString()}, ${hash})
        ON CONFLICT (user_id, key) DO NOTHING RETURNING job_id, request_hash`;
      if (mine) return { ...mine, inserted: true };
      const [theirs] = await users<{ job_id: string; request_hash: string }[]>`
        SELECT job_id, request_hash FROM idempotency_keys WHERE user_id = ${userId} AND key = ${key}`;
      if (theirs) return { ...theirs, inserted: false };
    }
  }

  /**
   * Creates a batch of jobs, all or none. A batch whose jobs all land in one database (and that
   * carries no Idempotency-Key) is one INSERT statement, so one transaction, with array
   * parameters so the statement text is fixed and prepared once (1,000 rows ~25 ms on the 2-core
   * dev box). One that spans databases, or carries a key, goes through the users database's
   * commit point (src/jobs/batches.ts), which must be reached before `decideBy` (the request's
   * time bound): then the answer matches what is there. Returns the jobs in input order; with a
   * key, a repeat returns the first request's jobs (replayed), or a conflict when its body differs.
   */
  async createMany(
    owner: Owner,
    specs: JobSpec[],
    trace: Record<string, string>,
    opts: { decideBy: number; idem?: { key: string; requestHash: string } },
  ): Promise<{ jobs: ApiRow[]; replayed: boolean } | { conflict: true }> {
    let ids = specs.map(() => this.nextId());
    const batchId = this.ids.next();
    if (opts.idem) {
      const { key, requestHash } = opts.idem;
      for (;;) {
        const r = await batches.reserveKeyed(this.dbs.users, owner.userId, key, requestHash, batchId, ids);
        if (r.request_hash !== requestHash || r.job_ids.length !== specs.length) return { conflict: true };
        if (r.inserted) break;
        if (r.state === "committed") return { jobs: await batches.readCommitted(this.dbs, r, (id) => this.dbs.forShard(shardOf(BigInt(id), this.dbs.shardCount))), replayed: true };
        // Its first request did not commit it: this one writes the same jobs under a new batch id.
        if (await batches.takeOver(this.dbs.users, owner.userId, key, r.id, batchId)) {
          ids = r.job_ids.map(BigInt);
          break;
        }
      }
    }
    const byDb = new Map<Sql, NewJobRow[]>();
    specs.forEach((spec, i) => {
      const { shard, row } = this.rowFor(ids[i]!, owner, spec, trace, null);
      const sql = this.dbs.forShard(shard);
      const list = byDb.get(sql);
      if (list) list.push(row);
      else byDb.set(sql, [row]);
    });
    let rows: ApiRow[];
    if (!opts.idem && byDb.size === 1) {
      const [sql, list] = [...byDb][0]!;
      rows = await this.onUp(sql, () => insertRows(sql, list));
    } else {
      if (!opts.idem) await batches.reserve(this.dbs.users, owner.userId, batchId, ids);
      rows = await batches.writeStaged(this.dbs, batchId, byDb, opts.decideBy);
    }
    const byId = new Map(rows.map((r) => [r.id, r]));
    return { jobs: ids.map((id) => byId.get(id.toString())!), replayed: false };
  }

  async get(userId: string, id: bigint): Promise<ApiRow | null> {
    const sql = this.dbs.forShard(shardOf(id, this.dbs.shardCount));
    const [row] = await sql<ApiRow[]>`
      SELECT ${sql.unsafe(API_COLUMNS)} FROM all_jobs WHERE id = ${id.toString()} AND user_id = ${userId}`;
    return row ?? null;
  }

  /** Any user's job, for operators. */
  async getAny(id: bigint): Promise<ApiRow | null> {
    const sql = this.dbs.forShard(shardOf(id, this.dbs.shardCount));
    const [row] = await sql<ApiRow[]>`SELECT ${sql.unsafe(API_COLUMNS)} FROM all_jobs WHERE id = ${id.toString()}`;
    return row ?? null;
  }

  /** The job's ended attempts, first to last; null when the job is not the user's. */
  async attempts(userId: string, id: bigint): Promise<AttemptRow[] | null> {
    const sql = this.dbs.forShard(shardOf(id, this.dbs.shardCount));
    if (!(await this.get(userId, id))) return null;
    return sql<AttemptRow[]>`
      SELECT attempt, started_at, finished_at, outcome, error_class, error_message, http_status, duration_ms
      FROM job_attempts WHERE job_id = ${id.toString()} ORDER BY attempt`;
  }

  /**
   * Newest first across every database; `cursor` is the last id of the previous page. Ids only
   * grow, so a page boundary holds under concurrent inserts (new jobs sort before the first page).
   */
  async list(userId: string, opts: ListOptions): Promise<{ jobs: ApiRow[]; nextCursor: string | null }> {
    return this.page(opts, (sql) => sql`user_id = ${userId}`);
  }

  /** Every user's jobs in one status, newest first: for operators (failed: the dead letters). */
  async listAll(opts: ListOptions & { userId: string | null }): Promise<{ jobs: ApiRow[]; nextCursor: string | null }> {
    return this.page(opts, (sql) => (opts.userId ? sql`user_id = ${opts.userId}` : sql`true`));
  }

  private async page(opts: ListOptions, who: (sql: Sql) => ReturnType<Sql>): Promise<{ jobs: ApiRow[]; nextCursor: string | null }> {
    const pages = await Promise.all(
      this.dbs.all.map(
        (sql: Sql) => sql<ApiRow[]>`
          SELECT ${sql.unsafe(API_COLUMNS)} FROM all_jobs
          WHERE ${who(sql)}
            ${opts.statuses ? sql`AND status = ANY(${opts.statuses}::job_status[])` : sql``}
            ${opts.executeAfter ? sql`AND execute_at >= ${opts.executeAfter}` : sql``}
            ${opts.executeBefore ? sql`AND execute_at < ${opts.executeBefore}` : sql``}
            ${opts.cursor !== null ? sql`AND id < ${opts.cursor.toString()}` : sql``}
          ORDER BY id DESC LIMIT ${opts.limit + 1}`,
      ),
    );
    const merged = pages.flat().sort((a, b) => (BigInt(b.id) > BigInt(a.id) ? 1 : BigInt(b.id) < BigInt(a.id) ? -1 : 0));
    const jobs = merged.slice(0, opts.limit);
    return { jobs, nextCursor: merged.length > opts.limit ? jobs[jobs.length - 1]!.id : null };
  }

  /** The user's jobs counted per status, every status present (0 when none). */
  async stats(userId: string): Promise<Record<JobStatus, number>> {
    const counts = Object.fromEntries(JOB_STATUSES.map((st) => [st, 0])) as Record<JobStatus, number>;
    const rows = await Promise.all(this.dbs.all.map((sql: Sql) => sql<{ status: JobStatus; n: number }[]>`
      SELECT status, count(*)::int AS n FROM all_jobs WHERE user_id = ${userId} GROUP BY status`));
    for (const r of rows.flat()) counts[r.status] += r.n;
    return counts;
  }

  /** Cancels the user's job if it has not started (TRANSITIONS.cancel). */
  async cancel(userId: string, id: bigint): Promise<TransitionResult> {
    const sql = this.dbs.forShard(shardOf(id, this.dbs.shardCount));
    return this.settled(userId, id, await transitions.cancel(sql, userId, id));
  }

  /** Retries the user's failed job (TRANSITIONS.retry). */
  async retry(userId: string, id: bigint): Promise<TransitionResult> {
    const shard = shardOf(id, this.dbs.shardCount);
    return this.settled(userId, id, await transitions.retry(this.dbs.forShard(shard), shard, userId, id));
  }

  /** Moves the user's waiting job to `at` (TRANSITIONS.reschedule). */
  async reschedule(userId: string, id: bigint, at: Date): Promise<TransitionResult> {
    const shard = shardOf(id, this.dbs.shardCount);
    return this.settled(userId, id, await transitions.reschedule(this.dbs.forShard(shard), shard, userId, id, at));
  }

  /** A guarded transition's answer: the row it changed, or why it changed none. */
  private async settled(userId: string, id: bigint, row: ApiRow | undefined): Promise<TransitionResult> {
    if (row) return { kind: "done", job: row };
    const current = await this.get(userId, id);
    return current ? { kind: "conflict", status: current.status } : { kind: "not_found" };
  }

  /**
   * Cancels every job of the user that has not started (a deleted user's); returns how many.
   * Many rows in one statement can deadlock with the executors' batched claims and deferrals
   * of the same rows (PostgreSQL then rolls one back whole): it is simply run again.
   */
  async cancelAllWaiting(userId: string): Promise<number> {
    const counts = await Promise.all(this.dbs.all.map((sql: Sql) => retryRolledBack(() => transitions.cancelAll(sql, userId))));
    return counts.reduce((a, b) => a + b, 0);
  }
}

/**
 * Inserts rows in one statement of fixed text with array parameters (prepared once, whatever the
 * row count), returning them in input order. A job is due at its execute_at or, if that is past,
 * at the database's now(). With `skipExisting`, a row whose id exists is left out of the result
 * (a keyed create repeated after a crash).
 */
async function insertRows(sql: Sql, r: NewJobRow[], opts: { skipExisting?: boolean } = {}): Promise<ApiRow[]> {
  const now = Date.now();
  // The shards' owners hear of the new jobs when they commit (src/db/due-notify.ts).
  const notify = duePayload(r.map((x) => ({ shard: x.shard_id, dueAt: Math.max(x.execute_at.getTime(), now) })));
  const rows = await sql<ApiRow[]>`
    WITH ins AS (
    INSERT INTO jobs (id, shard_id, user_id, kind, priority, message, target, execute_at, due_at, max_attempts, trace_context, idempotency_key)
    SELECT id, shard_id, user_id, kind, priority, message, target::jsonb, execute_at, greatest(execute_at, now()), max_attempts, trace_context::jsonb, idempotency_key
    FROM ${newRows(sql, r)}
    ${opts.skipExisting ? sql`ON CONFLICT (id) DO NOTHING` : sql``}
    RETURNING ${sql.unsafe(API_COLUMNS)})
    SELECT ins.* FROM ins, (SELECT pg_notify(${DUE_CHANNEL}, ${notify})) n`;
  const byId = new Map(rows.map((row) => [row.id, row]));
  return r.flatMap((x) => byId.get(x.id) ?? []);
}

/** A stable hash of a request body, to tell an idempotent replay from a different request. */
export function requestHash(body: unknown): string {
  const canonical = (v: unknown): unknown =>
    Array.isArray(v)
      ? v.map(canonical)
      : v && typeof v === "object"
        ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, canonical((v as Record<string, unknown>)[k])]))
        : v;
  return createHash("sha256").update(JSON.stringify(canonical(body))).digest("hex");
}
