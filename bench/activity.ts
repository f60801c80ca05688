/**
 * What the console's operator view costs the databases: GET /api/v1/admin/activity's queries
 * (src/jobs/activity.ts) over job_attempts holding an hour at the seed's peak (5M attempts per
 * hour, RATE per second, spread over two databases and USERS users), a due backlog of WAITING
 * jobs and FUTURE jobs due later. Prints, for each window the console offers, the time of a first answer (the
 * whole window read) and of the refreshes after it (only what has not settled is read again).
 *   bash ops/services-up.sh && bun bench/activity.ts
 */
import { TUNING } from "../src/config.ts";
import { ActivityReader } from "../src/jobs/activity.ts";
import { openDatabases } from "../src/db/databases.ts";
import { freshDatabases } from "../test/support/env.ts";
import { report, summary } from "./lib.ts";

const RATE = Number(process.env.RATE ?? 1_389);
const SECONDS = Number(process.env.SECONDS ?? 3_600);
const USERS = Number(process.env.USERS ?? 50);
const WAITING = Number(process.env.WAITING ?? 100_000);
const FUTURE = Number(process.env.FUTURE ?? 2_000_000);
const RUNS = Number(process.env.RUNS ?? 10);
const SHARDS = 16;

const fresh = await freshDatabases(2);
const dbs = openDatabases(fresh.urls, SHARDS, 4);
try {
  await dbs.users`INSERT INTO users (id, username, password_hash, job_weight, signing_secret)
    SELECT g, 'user' || g, 'x', 1 + g % 4, 'x' FROM generate_series(1, ${USERS}) g`;
  const now = Date.now();
  const filled = performance.now();
  // Attempts started evenly over the last SECONDS, each a little late; half in each database.
  await Promise.all(
    dbs.all.map((sql, d) => sql`
      INSERT INTO job_attempts (job_id, attempt, user_id, due_at, started_at, finished_at, outcome)
      SELECT g * 2 + ${d}::int, 1, 1 + g % ${USERS}::int, t - (random() * 50) * interval '1 millisecond', t, t + interval '5 milliseconds', 'succeeded'
      FROM generate_series(0, ${Math.round((RATE * SECONDS) / 2)}::int - 1) g,
        LATERAL (SELECT to_timestamp(${now / 1000 - SECONDS}::float8 + g * 2.0 / ${RATE}::float8) AS t) s`),
  );
  // A due backlog: jobs waiting, due in the last minute.
  await Promise.all(
    dbs.all.map((sql, d) => sql`
      INSERT INTO jobs (id, shard_id, user_id, kind, message, status, execute_at, due_at, max_attempts)
      SELECT 10000000000 + g * 2 + ${d}::int, ${d}::int + (g % ${SHARDS / 2}::int) * 2, 1 + g % ${USERS}::int, 'log', 'm', 'created', now() - random() * interval '1 minute', now() - random() * interval '1 minute', 3
      FROM generate_series(0, ${WAITING / 2}::int - 1) g`),
  );
  // Jobs due later (the next day): the backlog count must not pay for them.
  await Promise.all(
    dbs.all.map((sql, d) => sql`
      INSERT INTO jobs (id, shard_id, user_id, kind, message, status, execute_at, due_at, max_attempts)
      SELECT 20000000000 + g * 2 + ${d}::int, ${d}::int + (g % ${SHARDS / 2}::int) * 2, 1 + g % ${USERS}::int, 'log', 'm', 'created', t, t, 3
      FROM generate_series(0, ${FUTURE / 2}::int - 1) g, LATERAL (SELECT now() + interval '1 hour' + random() * interval '1 day' AS t) s`),
  );
  for (const sql of dbs.all) await sql`VACUUM ANALYZE job_attempts, jobs`;
  const fillS = (performance.now() - filled) / 1000;

  const figures: Record<string, unknown> = { attempts: Math.round(RATE * SECONDS), rate_per_s: RATE, users: USERS, waiting: WAITING, future: FUTURE, fill_s: Math.round(fillS) };
  for (const [windowS, intervalS] of [[120, 2], [600, 10], [3_600, 60]] as const) {
    // A new reader reads the whole window once (cold); later refreshes read what has not settled.
    const reader = new ActivityReader(dbs, { defaultWeight: 1, maxUsers: 20, settleMs: TUNING.api.activitySettleMs, keepMs: 3_700_000 });
    let t0 = performance.now();
    let view = await reader.read(windowS * 1000, intervalS * 1000);
    figures[`window_${windowS}s_cold_ms`] = Math.round(performance.now() - t0);
    const times: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      t0 = performance.now();
      view = await reader.read(windowS * 1000, intervalS * 1000);
      times.push(performance.now() - t0);
    }
    figures[`window_${windowS}s_refresh_ms`] = summary(times);
    figures[`window_${windowS}s_starts`] = view.intervals.reduce((s, x) => s + x.starts, 0);
  }
  report("activity", figures);
} finally {
  await dbs.close();
  if (process.env.KEEP) console.log(`kept: ${fresh.urls.join(" ")}`);
  else await fresh.drop();
}
