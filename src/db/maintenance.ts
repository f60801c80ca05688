/**
 * Upkeep that keeps the cost of the job tables independent of their history.
 *
 * Every job leaves dead row versions in `jobs` (its mark, claim and outcome updates, and its
 * move to `job_history`). Until they are vacuumed, every index scan the scheduler and executor
 * make walks them: after ~1.5 million jobs with nothing vacuumed, an idle cluster kept two cores
 * busy. So:
 * - at start, a database with autovacuum off is a warning in local mode and a refusal in
 *   production, unless DB_AUTOVACUUM_OFF_OK says the operator knows (the keeper below then
 *   does the vacuuming for the job tables);
 * - every scheduler runs a VacuumKeeper: each DB_VACUUM_CHECK_INTERVAL it reads the dead-row
 *   counts of this project's tables (exported as `db_dead_tuples`, alerted on in
 *   ops/prometheus/alerts.yml) and vacuums a table past DB_VACUUM_DEAD_TUPLES. One process per
 *   database does so at a time (a session advisory lock). With autovacuum on and the per-table
 *   settings of sql/000003, autovacuum normally gets there first and the keeper is a backstop.
 */
import { TUNING, type Config } from "../config.ts";
import { firstIdAt } from "../ids.ts";
import { log } from "../log.ts";
import { metrics } from "../metrics.ts";
import type { Databases, Sql } from "./databases.ts";
import { sweepStaged } from "../jobs/batches.ts";

const VACUUM_LOCK = 0x76_61_63_75; // "vacu"
const TABLES = ["jobs", "job_history", "job_attempts", "idempotency_keys", "shard_fences", "users"] as const;

/** Names the databases whose autovacuum is off; what to do about it is the caller's. */
export async function autovacuumOff(dbs: Databases): Promise<string[]> {
  const off: string[] = [];
  for (const sql of dbs.all) {
    const [row] = (await sql`SELECT current_setting('autovacuum') AS v, current_database() AS db`) as unknown as [{ v: string; db: string }];
    if (row.v !== "on") off.push(row.db);
  }
  return off;
}

/**
 * The start-up check: returns a reason to refuse to start, or null. Autovacuum off is refused
 * in production unless overridden, and logged as a warning otherwise.
 */
export async function checkAutovacuum(dbs: Databases, config: Config): Promise<string | null> {
  const off = await autovacuumOff(dbs);
  if (off.length === 0) return null;
  const detail = {
    databases: off,
    keeper: `schedulers vacuum the job tables past ${config.maintenance.vacuumDeadTuples} dead rows (DB_VACUUM_DEAD_TUPLES)`,
  };
  if (config.mode === "production" && !config.maintenance.autovacuumOffOk) {
    return `autovacuum is off on ${off.join(", ")}: dead rows would pile up under the job tables. Turn it on, or set DB_AUTOVACUUM_OFF_OK=true to rely on the schedulers' vacuuming`;
  }
  log.warn("autovacuum is off; relying on the schedulers' vacuuming", detail);
  return null;
}

/** Runs `pass` every `intervalMs` (the first after `firstDelayMs`), one at a time, until stopped. */
abstract class Periodic {
  private timer: ReturnType<typeof setTimeout> | null = null;
  private running: Promise<unknown> = Promise.resolve();
  protected stopped = false;

  constructor(
    private readonly intervalMs: number,
    private readonly firstDelayMs: number,
  ) {}

  /** One pass; reports its own failures and never rejects. */
  protected abstract pass(): Promise<unknown>;

  start(): void {
    this.schedule(this.firstDelayMs);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.running;
  }

  private schedule(delay: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.running = this.pass().then(() => this.schedule(this.intervalMs));
    }, delay);
  }
}

export interface KeeperAction {
  table: string;
  action: "vacuum" | "analyze";
}

/**
 * Where autovacuum is off, the scheduler's periodic check does its work: a table past the
 * dead-row threshold is vacuumed (and analyzed), one whose rows changed by 50 + 10 % since the
 * last analyze is analyzed. One process per database at a time.
 */
export class VacuumKeeper extends Periodic {
  constructor(
    private readonly dbs: Databases,
    private readonly threshold: number,
    intervalMs: number,
  ) {
    super(intervalMs, 0);
  }

  protected pass(): Promise<unknown> {
    return this.checkAll();
  }

  /** One pass over every database; returns what it did (for tests). */
  async checkAll(): Promise<KeeperAction[]> {
    const done: KeeperAction[] = [];
    for (const sql of this.dbs.all) {
      try {
        done.push(...(await this.check(sql)));
      } catch (e) {
        log.warn("vacuum check failed", { error: (e as Error).message });
      }
    }
    return done;
  }

  private async check(sql: Sql): Promise<KeeperAction[]> {
    const rows = await sql<{ db: string; relname: string; dead: number; mods: number; live: number }[]>`
      SELECT current_database() AS db, relname, n_dead_tup::float8 AS dead, n_mod_since_analyze::float8 AS mods, n_live_tup::float8 AS live
      FROM pg_stat_user_tables WHERE schemaname = current_schema() AND relname = ANY(${TABLES as unknown as string[]})`;
    for (const r of rows) metrics.deadTuples.set({ database: r.db, table: r.relname }, r.dead);
    // Statistics matter as much as dead rows: without them (a new table, a burst) the planner
    // answered a 1,000-id claim with a scan of a whole index, and a fresh database fell minutes
    // behind at 1,389 jobs/s. The same rule as autovacuum's analyze: 50 rows plus 10 %.
    const work = rows
      .map((r) => ({ ...r, vacuum: this.threshold > 0 && r.dead >= this.threshold, analyze: r.mods >= 50 + 0.1 * r.live }))
      .filter((r) => r.vacuum || r.analyze);
    if (work.length === 0 || this.stopped) return [];
    // VACUUM cannot run in a transaction, and the lock must outlive single statements: one
    // reserved connection holds the session lock for the vacuums.
    const conn = await sql.reserve();
    const done: KeeperAction[] = [];
    try {
      const [{ ok }] = (await conn`SELECT pg_try_advisory_lock(${VACUUM_LOCK}) AS ok`) as unknown as [{ ok: boolean }];
      if (!ok) return [];
      try {
        for (const r of work) {
          const started = performance.now();
          // The names come from TABLES, not from input.
          await conn.unsafe(r.vacuum ? `VACUUM (ANALYZE) ${r.relname}` : `ANALYZE ${r.relname}`);
          if (r.vacuum) metrics.vacuums.inc({ database: r.db, table: r.relname });
          done.push({ table: r.relname, action: r.vacuum ? "vacuum" : "analyze" });
          log.info(r.vacuum ? "vacuumed" : "analyzed", { database: r.db, table: r.relname, dead_rows: r.dead, changed_rows: r.mods, ms: Math.round(performance.now() - started) });
        }
      } finally {
        await conn`SELECT pg_advisory_unlock(${VACUUM_LOCK})`;
      }
    } finally {
      conn.release();
    }
    return done;
  }
}

const RETENTION_LOCK = 0x72_65_74_6e; // "retn"
const { retentionBatch: RETENTION_BATCH, retentionMaxBatches: RETENTION_MAX_BATCHES, retentionPauseMs: RETENTION_PAUSE_MS } = TUNING.maintenance;

/**
 * Deletes what is kept no longer: finished jobs (and their attempts) whose finished_at is past
 * JOB_RETENTION, and idempotency keys and batch records past IDEMPOTENCY_KEY_TTL. One process at a time per
 * database (an advisory lock), in batches of 1,000 rows with a pause between them, so the hot
 * path (which never touches job_history) waits for nothing. Runs in the scheduler role.
 */
export class RetentionKeeper extends Periodic {
  constructor(
    private readonly dbs: Databases,
    private readonly retentionMs: number,
    private readonly keyTtlMs: number,
    intervalMs: number,
  ) {
    super(intervalMs, intervalMs);
  }

  protected pass(): Promise<unknown> {
    return this.runAll();
  }

  /** One pass over every database; returns rows deleted per table (for tests). Never rejects. */
  async runAll(): Promise<Record<string, number>> {
    const total: Record<string, number> = { job_history: 0, job_attempts: 0, idempotency_keys: 0, job_batches: 0 };
    for (const sql of this.dbs.all) {
      try {
        for (const [table, n] of Object.entries(await this.run(sql))) total[table]! += n;
      } catch (e) {
        log.warn("retention pass failed", { error: (e as Error).message });
      }
    }
    return total;
  }

  private async run(sql: Sql): Promise<Record<string, number>> {
    const deleted: Record<string, number> = { job_history: 0, job_attempts: 0, idempotency_keys: 0, job_batches: 0 };
    const conn = await sql.reserve();
    try {
      const [{ ok }] = (await conn`SELECT pg_try_advisory_lock(${RETENTION_LOCK}) AS ok`) as unknown as [{ ok: boolean }];
      if (!ok) return deleted;
      try {
        const cutoff = new Date(Date.now() - this.retentionMs);
        // A job finished before the cutoff was created before it: its id is below this bound,
        // so the scan stops there instead of walking the whole history each batch.
        const idBound = firstIdAt(cutoff.getTime()).toString();
        for (let b = 0; b < RETENTION_MAX_BATCHES && !this.stopped; b++) {
          const [r] = (await conn`
            WITH doomed AS (
              SELECT id FROM job_history WHERE id < ${idBound} AND finished_at < ${cutoff} ORDER BY id LIMIT ${RETENTION_BATCH}),
            a AS (DELETE FROM job_attempts WHERE job_id IN (SELECT id FROM doomed) RETURNING 1),
            h AS (DELETE FROM job_history WHERE id IN (SELECT id FROM doomed) RETURNING 1)
            SELECT (SELECT count(*) FROM h)::int AS jobs, (SELECT count(*) FROM a)::int AS attempts`) as unknown as [{ jobs: number; attempts: number }];
          deleted.job_history! += r.jobs;
          deleted.job_attempts! += r.attempts;
          if (r.jobs < RETENTION_BATCH) break;
          await Bun.sleep(RETENTION_PAUSE_MS);
        }
        const keyCutoff = new Date(Date.now() - this.keyTtlMs);
        for (let b = 0; b < RETENTION_MAX_BATCHES && !this.stopped; b++) {
          const rows = await conn`
            DELETE FROM idempotency_keys WHERE (user_id, key) IN (
              SELECT user_id, key FROM idempotency_keys WHERE created_at < ${keyCutoff} LIMIT ${RETENTION_BATCH})
            RETURNING 1`;
          deleted.idempotency_keys! += rows.length;
          if (rows.length < RETENTION_BATCH) break;
          await Bun.sleep(RETENTION_PAUSE_MS);
        }
        // Batch records (src/jobs/batches.ts) live as long as the keys that replay them.
        for (let b = 0; b < RETENTION_MAX_BATCHES && !this.stopped; b++) {
          const rows = await conn`
            DELETE FROM job_batches WHERE id IN (SELECT id FROM job_batches WHERE created_at < ${keyCutoff} LIMIT ${RETENTION_BATCH})
            RETURNING 1`;
          deleted.job_batches! += rows.length;
          if (rows.length < RETENTION_BATCH) break;
          await Bun.sleep(RETENTION_PAUSE_MS);
        }
      } finally {
        await conn`SELECT pg_advisory_unlock(${RETENTION_LOCK})`;
      }
    } finally {
      conn.release();
    }
    const [{ db }] = (await sql`SELECT current_database() AS db`) as unknown as [{ db: string }];
    for (const [table, n] of Object.entries(deleted)) {
      if (n > 0) {
        metrics.retentionDeleted.inc({ database: db, table }, n);
        log.info("retention deleted rows", { database: db, table, rows: n });
      }
    }
    return deleted;
  }
}

/**
 * Finishes the batches whose request is over (src/jobs/batches.ts): staged rows older than
 * `staleMs` (well past the API's request time bound) are moved into `jobs` when their batch was
 * committed, and deleted (the batch aborted first) when it was not. Runs in the scheduler role;
 * two schedulers doing it at once do no harm (each step is conditional and idempotent).
 */
export class StagedBatchKeeper extends Periodic {
  constructor(
    private readonly dbs: Databases,
    private readonly staleMs: number,
    intervalMs: number,
  ) {
    super(intervalMs, intervalMs);
  }

  protected async pass(): Promise<void> {
    for (const sql of this.dbs.all) {
      try {
        const done = await sweepStaged(this.dbs, sql, this.staleMs);
        if (done.moved + done.aborted > 0) log.info("finished batches whose request was over", done);
      } catch (e) {
        log.debug("staged batch pass failed", { error: (e as Error).message });
      }
    }
  }
}
