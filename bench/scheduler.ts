/**
 * Scheduler benchmark, against the real local services (run `bash ops/services-up.sh` first).
 *
 * Phase 1, lateness at the seed's peak: RATE jobs/s (default 1,389 = 5M/hour) due evenly over
 * DURATION seconds (default 60), spread over USERS users, already stored (created earlier).
 * Reports dispatch lateness = Kafka publish time (the message's create time) - execute_at.
 * Phase 2, capacity: BURST jobs (default 200,000) all due at once; reports the sustained
 * dispatch rate from the first to the last publish.
 * Runs SCHEDULERS scheduler processes (default 1) on a fresh database, topic and etcd prefix.
 * No executor runs: a stand-in member of the executors' consumer group commits every message as
 * soon as it is fetched (as if its jobs started at once), so the scheduler's in-flight window
 * opens as far as the scheduler itself can go. This measures the scheduler alone;
 * bench/executor.ts and bench/fairness.ts measure the whole pipeline.
 *
 *   bun bench/scheduler.ts
 *   RATE=1389 DURATION=60 BURST=200000 SCHEDULERS=1 bun bench/scheduler.ts
 */
import { IdGenerator } from "../src/ids.ts";
import { shardOf } from "../src/shard-map.ts";
import { openDatabases } from "../src/db/databases.ts";
import { testConfig } from "../test/support/env.ts";
import { collectDue, slice } from "../test/support/procs.ts";
import { finishRoles, report, startRoles, summary } from "./lib.ts";

const RATE = Number(process.env.RATE ?? 1389);
const DURATION = Number(process.env.DURATION ?? 60);
const BURST = Number(process.env.BURST ?? 200_000);
const SCHEDULERS = Number(process.env.SCHEDULERS ?? 1);
const USERS = Number(process.env.USERS ?? 50);
const SHARDS = Number(process.env.SHARD_COUNT ?? 16);

// Role settings (SCHEDULER_*, DB_POOL_MAX) given to the benchmark pass through to the schedulers.
const passed = Object.fromEntries(Object.entries(process.env).filter((e): e is [string, string] => /^(SCHEDULER_|DB_POOL_MAX$)/.test(e[0])));
const s = await slice({ env: { SHARD_COUNT: String(SHARDS), KAFKA_PARTITIONS: "12", LOG_LEVEL: "warn", DB_POOL_MAX: "10", SCHEDULED_DEADLINE: "1h", ...passed } });
const config = testConfig(s.env);
const dbs = openDatabases(config.databaseUrls, config.shardCount, 4);
const gen = new IdGenerator(4000);

async function insert(n: number, at: (i: number) => number, tag: string): Promise<void> {
  for (let start = 0; start < n; start += 5_000) {
    const rows = Array.from({ length: Math.min(5_000, n - start) }, (_, k) => {
      const i = start + k;
      const id = gen.next();
      return { id: id.toString(), shard: shardOf(id, SHARDS), user: String(1 + (i % USERS)), at: new Date(at(i)).toISOString() };
    });
    const sql = dbs.all[0]!;
    await sql`
      INSERT INTO jobs (id, shard_id, user_id, message, execute_at, due_at, max_attempts)
      SELECT id, shard, u, ${tag}, at, at, 3
      FROM unnest(${rows.map((r) => r.id)}::bigint[], ${rows.map((r) => r.shard)}::int[], ${rows.map((r) => r.user)}::bigint[], ${rows.map((r) => r.at)}::timestamptz[]) AS x(id, shard, u, at)`;
  }
}

// The stand-in executors: commit each batch as soon as it arrives, noting the wait.
const standIn = await s.bus.subscribe(s.env.KAFKA_GROUP_ID!, s.topicDue, {
  onBatch: async ({ partition, messages }) => {
    const last = messages.at(-1);
    if (!last) return null;
    const wait = Math.round(messages.reduce((sum, m) => sum + Date.now() - m.timestamp, 0) / messages.length);
    await standInCommit(new Map([[partition, { next: Number(last.offset) + 1, metadata: String(wait) }]]));
    return last.offset;
  },
});
async function standInCommit(next: Map<number, { next: number; metadata: string }>) {
  await standIn.commit(next).catch(() => {});
}

try {
  // Phase 1: a steady stream at RATE/s, starting once the schedulers are up.
  const total = RATE * DURATION;
  const t0 = Date.now() + 15_000;
  await insert(total, (i) => t0 + (i * 1000) / RATE, "steady");
  const schedulers = await startRoles(s.start, "scheduler", SCHEDULERS);
  const dueAt = new Map<string, number>();
  for (const sql of dbs.all) for (const r of await sql`SELECT id, execute_at FROM all_jobs WHERE message = 'steady'`) dueAt.set(r.id, r.execute_at.getTime());
  await Bun.sleep(Math.max(0, t0 - Date.now()) + DURATION * 1000);
  const steady = await collectDue(s, (all) => all.length >= total, 60_000);
  const lateness = steady.map((m) => m.timestamp - dueAt.get(m.value.id)!);
  const early = lateness.filter((l) => l < 0).length;
  const dupes = steady.length - new Set(steady.map((m) => m.value.id)).size;

  // Phase 2: a burst, all due now.
  const burstStart = Date.now();
  await insert(BURST, () => burstStart - 1_000, "burst");
  const all = await collectDue(s, (msgs) => msgs.length >= total + BURST, 180_000);
  const burst = all.filter((m) => !dueAt.has(m.value.id));
  const stamps = burst.map((m) => m.timestamp).sort((a, b) => a - b);
  const spanS = (stamps[stamps.length - 1]! - stamps[0]!) / 1000;

  report("scheduler dispatch", {
    schedulers: SCHEDULERS,
    shards: SHARDS,
    users: USERS,
    steady_rate_per_s: RATE,
    steady_seconds: DURATION,
    steady_jobs: total,
    steady_published: steady.length,
    steady_duplicates: dupes,
    steady_published_early: early,
    dispatch_lateness_ms: summary(lateness),
    burst_jobs: BURST,
    burst_published: burst.length,
    burst_dispatch_per_s: Math.round(burst.length / Math.max(spanS, 0.001)),
    burst_first_publish_after_insert_ms: stamps[0]! - burstStart,
  });
  // Where the time goes, from the scheduler's own histograms.
  await finishRoles(schedulers, "scheduler_dispatch_step_seconds_bucket", "dispatch steps");
} finally {
  await standIn.stop();
  await dbs.close();
  await s.close();
}
process.exit(0);
