/**
 * Gives a running cluster's database a history: JOBS finished jobs (default 3,000,000) that went
 * through the same row transitions as real ones (insert created, mark scheduled, claim running,
 * record succeeded, which moves them to job_history), in batches of BATCH, so the tables hold the
 * rows and the dead row versions that traffic leaves. Direct SQL, not Kafka: the point is the
 * state left behind, fast. Then measure with bench/idle.ts and bench/ontime.ts and compare with
 * a fresh database.
 *
 *   bun bench/history.ts && bun bench/idle.ts && bun bench/ontime.ts
 */
import postgres from "postgres";
import { report } from "./lib.ts";

const JOBS = Number(process.env.JOBS ?? 3_000_000);
const BATCH = Number(process.env.BATCH ?? 50_000);
const SHARDS = Number(process.env.SHARD_COUNT ?? 16);
const url = (process.env.DATABASE_URLS ?? "postgres://root@127.0.0.1:5432/fairshare").split(",")[0]!;
const sql = postgres(url, { max: 1, onnotice: () => {} });

// Ids far below any the API hands out (Snowflake ids of today are ~2^60), users nobody logs in as.
const [{ base }] = (await sql`SELECT coalesce(max(id), 0)::text AS base FROM job_history WHERE id < 1000000000000`) as unknown as [{ base: string }];
const t0 = performance.now();
for (let done = 0; done < JOBS; done += BATCH) {
  const n = Math.min(BATCH, JOBS - done);
  const from = BigInt(base) + BigInt(done) + 1n;
  await sql.begin(async (tx) => {
    await tx`
      INSERT INTO jobs (id, shard_id, user_id, message, execute_at, due_at, max_attempts)
      SELECT ${from.toString()}::bigint + g, g % ${SHARDS}, 1000000 + g % 100, 'history', now() - interval '1 hour', 'infinity', 3
      FROM generate_series(0, ${n - 1}) AS g`;
  });
  const range = sql`id BETWEEN ${from.toString()} AND ${(from + BigInt(n - 1)).toString()}`;
  await sql`UPDATE jobs SET status = 'scheduled', dispatch_epoch = 1, deadline_at = now() + interval '1 minute' WHERE ${range}`;
  await sql`UPDATE jobs SET status = 'running', attempt = 1, started_at = now() WHERE ${range}`;
  await sql`UPDATE jobs SET status = 'succeeded', finished_at = now(), deadline_at = NULL WHERE ${range}`;
  if ((done / BATCH) % 10 === 0) console.error(`[bench] history: ${done + n} of ${JOBS}`);
}
const seconds = (performance.now() - t0) / 1000;
const stats = await sql`SELECT relname, n_live_tup::int AS live, n_dead_tup::int AS dead FROM pg_stat_user_tables WHERE relname IN ('jobs', 'job_history') ORDER BY relname`;
report("history", {
  finished_jobs_added: JOBS,
  seconds: Math.round(seconds),
  autovacuum: (await sql`SHOW autovacuum`)[0]!.autovacuum,
  tables: Object.fromEntries(stats.map((r) => [r.relname, { live: r.live, dead: r.dead }])),
});
await sql.end();
