/**
 * Finished jobs leave the hot table in the transaction that finishes them (sql/000003), readers
 * see every job exactly once through all_jobs, and the schedulers' vacuum keeper keeps dead row
 * versions in check where autovacuum is off (src/db/maintenance.ts). Real PostgreSQL.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { openDatabases, type Databases } from "../src/db/databases.ts";
import { autovacuumOff, checkAutovacuum, RetentionKeeper, VacuumKeeper } from "../src/db/maintenance.ts";
import { firstIdAt } from "../src/ids.ts";
import { freshDatabases, testConfig } from "./support/env.ts";

setDefaultTimeout(60_000);

let dbs: Databases;
let drop: () => Promise<void>;
beforeAll(async () => {
  const fresh = await freshDatabases(1);
  drop = fresh.drop;
  dbs = openDatabases(fresh.urls, 4, 4);
});
afterAll(async () => {
  await dbs.close();
  await drop();
});

async function insert(n: number, from = 1): Promise<string[]> {
  const sql = dbs.all[0]!;
  const ids = Array.from({ length: n }, (_, i) => String(from + i));
  await sql`
    INSERT INTO jobs (id, shard_id, user_id, message, execute_at, due_at, max_attempts)
    SELECT id, 0, 7, 'h', now(), now(), 3 FROM unnest(${ids}::bigint[]) AS id`;
  return ids;
}

describe("job history", () => {
  test("a statement that finishes jobs moves exactly those to job_history; all_jobs shows each once", async () => {
    const sql = dbs.all[0]!;
    const ids = await insert(10);
    const [done, cancelled, waiting] = [ids.slice(0, 4), ids.slice(4, 6), ids.slice(6)];
    await sql`UPDATE jobs SET status = 'running', attempt = 1, started_at = now(), deadline_at = now() + interval '1 minute' WHERE id = ANY(${ids.slice(0, 8)}::bigint[])`;
    // One statement with mixed outcomes: two finish, two go back to waiting (retrying).
    const ret = await sql`
      UPDATE jobs SET status = CASE WHEN id = ANY(${done.slice(0, 2)}::bigint[]) THEN 'succeeded'::job_status ELSE 'retrying'::job_status END,
        finished_at = CASE WHEN id = ANY(${done.slice(0, 2)}::bigint[]) THEN now() END, deadline_at = NULL
      WHERE id = ANY(${done}::bigint[]) RETURNING id, status`;
    expect(ret.length).toBe(4); // RETURNING still reports the rows the statement changed
    await sql`UPDATE jobs SET status = 'cancelled', finished_at = now(), deadline_at = NULL WHERE id = ANY(${cancelled}::bigint[])`;

    const hot = (await sql`SELECT id::text FROM jobs ORDER BY jobs.id`).map((r) => r.id);
    const history = (await sql`SELECT id::text, status FROM job_history ORDER BY job_history.id`).map((r) => `${r.id}:${r.status}`);
    expect(hot).toEqual([...done.slice(2), ...waiting]);
    expect(history).toEqual([`${done[0]}:succeeded`, `${done[1]}:succeeded`, `${cancelled[0]}:cancelled`, `${cancelled[1]}:cancelled`]);
    const all = await sql`SELECT id::text, count(*)::int AS n FROM all_jobs GROUP BY id`;
    expect(all.length).toBe(10);
    expect(all.every((r) => r.n === 1)).toBe(true);
  });

  test("a rolled-back finish leaves the job in the hot table", async () => {
    const sql = dbs.all[0]!;
    const [id] = await insert(1, 1_000);
    await sql
      .begin(async (tx) => {
        await tx`UPDATE jobs SET status = 'cancelled', finished_at = now() WHERE id = ${id!}`;
        throw new Error("roll back");
      })
      .catch(() => {});
    expect((await sql`SELECT status FROM jobs WHERE id = ${id!}`)[0]!.status).toBe("created");
    expect((await sql`SELECT count(*)::int AS n FROM job_history WHERE id = ${id!}`)[0]!.n).toBe(0);
  });
});

describe("maintenance", () => {
  test("the keeper exports dead rows and vacuums a table past the threshold, and only then", async () => {
    const sql = dbs.all[0]!;
    const ids = await insert(3_000, 10_000);
    for (let i = 0; i < 3; i++) await sql`UPDATE jobs SET updated_at = now() WHERE id = ANY(${ids}::bigint[])`;
    const vacuums = async () => (await sql`SELECT vacuum_count::int AS n FROM pg_stat_user_tables WHERE relname = 'jobs'`)[0]!.n as number;
    // Statistics reach pg_stat_user_tables when the writing backends report (within a second or so).
    const dead = async () => (await sql`SELECT n_dead_tup::int AS n FROM pg_stat_user_tables WHERE relname = 'jobs'`)[0]!.n as number;
    for (let i = 0; i < 50 && (await dead()) < 6_000; i++) await Bun.sleep(100);
    expect(await dead()).toBeGreaterThanOrEqual(6_000);

    const before = await vacuums();
    const analyzed = async () => (await sql`SELECT analyze_count::int AS n FROM pg_stat_user_tables WHERE relname = 'jobs'`)[0]!.n as number;
    const analyzedBefore = await analyzed();
    // Below the dead-row threshold: no vacuum; but 12,000 changed rows call for fresh statistics.
    expect(await new VacuumKeeper(dbs, 1_000_000, 1_000).checkAll()).toContainEqual({ table: "jobs", action: "analyze" });
    expect(await vacuums()).toBe(before);
    expect(await analyzed()).toBe(analyzedBefore + 1);
    for (let i = 0; i < 3; i++) await sql`UPDATE jobs SET updated_at = now() WHERE id = ANY(${ids}::bigint[])`;
    for (let i = 0; i < 50 && (await dead()) < 6_000; i++) await Bun.sleep(100);
    expect(await new VacuumKeeper(dbs, 5_000, 1_000).checkAll()).toContainEqual({ table: "jobs", action: "vacuum" });
    expect(await vacuums()).toBe(before + 1);
    const { renderMetrics } = await import("../src/metrics.ts");
    expect(await renderMetrics()).toMatch(/db_dead_tuples\{database="[^"]+",table="jobs"\} \d+/);
  });

  test("autovacuum off is refused in production unless overridden, and only warned about locally", async () => {
    const off = (await autovacuumOff(dbs)).length > 0;
    const [{ v }] = (await dbs.all[0]!`SELECT current_setting('autovacuum') AS v`) as unknown as [{ v: string }];
    expect(off).toBe(v !== "on");
    const prod = { APP_MODE: "production", JWT_SECRET: "x".repeat(32), ADMIN_TOKEN: "y".repeat(32) };
    const refusal = await checkAutovacuum(dbs, testConfig(prod));
    if (off) expect(refusal).toContain("DB_AUTOVACUUM_OFF_OK");
    else expect(refusal).toBeNull();
    expect(await checkAutovacuum(dbs, testConfig({ ...prod, DB_AUTOVACUUM_OFF_OK: "true" }))).toBeNull();
    expect(await checkAutovacuum(dbs, testConfig({}))).toBeNull();
  });
});

describe("retention", () => {
  test("finished jobs past JOB_RETENTION go with their attempts, in batches; recent and unfinished ones stay; expired idempotency keys and batch records go", async () => {
    const sql = dbs.all[0]!;
    const DAY = 86_400_000;
    const idAt = (msAgo: number, k: number) => (firstIdAt(Date.now() - msAgo) + BigInt(k)).toString();
    // 2,500 jobs created 40 days ago and finished 35 days ago: past a 30-day retention.
    const old = Array.from({ length: 2_500 }, (_, k) => idAt(40 * DAY, k));
    // Created 40 days ago, finished yesterday (it ran late): kept. Created and finished recently: kept.
    const lateFinish = idAt(40 * DAY, 5_000);
    const recent = idAt(2 * DAY, 1);
    // Created 40 days ago and not finished (due far ahead): never touched.
    const pending = idAt(40 * DAY, 6_000);
    const row = (id: string, finishedDaysAgo: number) => sql`
      INSERT INTO job_history (id, shard_id, user_id, message, status, execute_at, due_at, attempt, max_attempts, created_at, updated_at, finished_at)
      VALUES (${id}, 0, 9, 'r', 'succeeded', now(), now(), 1, 3, now(), now(), now() - ${finishedDaysAgo} * interval '1 day')`;
    await sql`
      INSERT INTO job_history (id, shard_id, user_id, message, status, execute_at, due_at, attempt, max_attempts, created_at, updated_at, finished_at)
      SELECT id, 0, 9, 'r', 'succeeded', now(), now(), 1, 3, now(), now(), now() - interval '35 days' FROM unnest(${old}::bigint[]) AS id`;
    await sql`
      INSERT INTO job_attempts (job_id, attempt, user_id, started_at, finished_at, outcome)
      SELECT id, 1, 9, now(), now(), 'succeeded' FROM unnest(${[...old.slice(0, 10), recent]}::bigint[]) AS id`;
    await row(lateFinish, 1);
    await row(recent, 1);
    await sql`INSERT INTO jobs (id, shard_id, user_id, message, execute_at, due_at, max_attempts) VALUES (${pending}, 0, 9, 'p', now() + interval '300 days', now() + interval '300 days', 3)`;
    await sql`INSERT INTO idempotency_keys (user_id, key, job_id, request_hash, created_at) VALUES
      (9, 'old', 1, 'h', now() - interval '2 days'), (9, 'new', 2, 'h', now() - interval '1 hour')`;
    await sql`INSERT INTO job_batches (id, user_id, key, job_ids, state, created_at) VALUES
      (1, 9, 'old', '{1}', 'committed', now() - interval '2 days'), (2, 9, 'new', '{2}', 'committed', now() - interval '1 hour')`;

    const keeper = new RetentionKeeper(dbs, 30 * DAY, DAY, 60_000);
    const deleted = await keeper.runAll();
    expect(deleted).toEqual({ job_history: 2_500, job_attempts: 10, idempotency_keys: 1, job_batches: 1 });
    const left = (await sql`SELECT id::text FROM all_jobs WHERE user_id = 9 ORDER BY 1`).map((r) => r.id);
    expect(left.sort()).toEqual([lateFinish, recent, pending].sort());
    expect((await sql`SELECT job_id::text FROM job_attempts WHERE user_id = 9`).map((r) => r.job_id)).toEqual([recent]);
    expect((await sql`SELECT key FROM idempotency_keys WHERE user_id = 9`).map((r) => r.key)).toEqual(["new"]);
    expect((await sql`SELECT key FROM job_batches WHERE user_id = 9`).map((r) => r.key)).toEqual(["new"]);
    expect(await keeper.runAll()).toEqual({ job_history: 0, job_attempts: 0, idempotency_keys: 0, job_batches: 0 });
  });
});
