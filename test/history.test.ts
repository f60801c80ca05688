/**
 * Finished jobs leave the hot table in the transaction that finishes them (sql/000003), readers
 * see every job exactly once through all_jobs, and the schedulers' vacuum keeper keeps dead row
 * versions in check where autovacuum is off (src/db/maintenance.ts). Real PostgreSQL.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { openDatabases, type Databases } from "../src/db/databases.ts";
import { autovacuumOff, checkAutovacuum, VacuumKeeper } from "../src/db/maintenance.ts";
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
    expect(await new VacuumKeeper(dbs, 1_000_000, 1_000).checkAll()).toEqual([]);
    expect(await vacuums()).toBe(before);
    expect(await new VacuumKeeper(dbs, 5_000, 1_000).checkAll()).toContain("jobs");
    expect(await vacuums()).toBe(before + 1);
    const { renderMetrics } = await import("../src/metrics.ts");
    expect(renderMetrics()).toMatch(/db_dead_tuples\{database="[^"]+",table="jobs"\} \d+/);
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
