/**
 * Shard-ownership soak under Bun: runs SCHEDULERS (default 2) scheduler processes against the
 * real etcd, PostgreSQL and Kafka for SOAK_MINUTES (default 10), with a trickle of jobs so the
 * shard actors work, and checks once a second that every shard keeps the same owner. Reports
 * ownership changes, lease losses and shard releases seen in the schedulers' logs.
 * Exit code 0 only when ownership held steady.
 *
 *   bun ops/soak-ownership.ts
 */
import { IdGenerator } from "../src/ids.ts";
import { shardOf } from "../src/shard-map.ts";
import { connect } from "../src/db/databases.ts";
import { owners, slice } from "../test/support/procs.ts";

const minutes = Number(process.env.SOAK_MINUTES ?? 10);
const schedulers = Number(process.env.SCHEDULERS ?? 2);
const s = await slice({ env: { SHARD_COUNT: "16", LOG_LEVEL: "info", ETCD_LEASE_TTL_SECONDS: "10" } });
const procs = [];
for (let i = 0; i < schedulers; i++) procs.push(await s.start("scheduler"));
const sql = connect(s.env.DATABASE_URLS!, 2);
const gen = new IdGenerator(4090);

// Let the initial balancing settle, then take the reference assignment.
await Bun.sleep(5_000);
const reference = await owners(s);
const referenceAt = new Date().toISOString();
let changes = 0;
let samples = 0;
let jobs = 0;
const until = Date.now() + minutes * 60_000;
let lastReport = Date.now();
while (Date.now() < until) {
  const id = gen.next();
  await sql`INSERT INTO jobs (id, shard_id, user_id, message, execute_at, due_at, max_attempts)
            VALUES (${String(id)}, ${shardOf(id, 16)}, 1, 'soak', now() + interval '1 second', now() + interval '1 second', 3)`;
  jobs++;
  const now = await owners(s);
  samples++;
  for (const [shard, owner] of reference) if (now.get(shard) !== owner) changes++;
  if (now.size !== reference.size) changes++;
  if (Date.now() - lastReport > 60_000) {
    lastReport = Date.now();
    console.error(`[soak] ${(samples / 60).toFixed(1)} min: ${changes} ownership changes, ${jobs} jobs`);
  }
  await Bun.sleep(1_000);
}
// Only what happened after the reference assignment counts (the start-up hand-over does not).
const logs = procs.flatMap((p) => p.logs).filter((l) => (/"ts":"([^"]+)"/.exec(l)?.[1] ?? "") > referenceAt);
const leaseLost = logs.filter((l) => l.includes("lease lost")).length;
const released = logs.filter((l) => l.includes('"shard released"')).length;
const fenced = logs.filter((l) => l.includes("fenced out")).length;
const [{ dispatched }] = (await sql`SELECT count(*)::int AS dispatched FROM all_jobs WHERE status <> 'created'`) as unknown as [{ dispatched: number }];
await sql.end();
await s.close();
const ok = changes === 0 && leaseLost === 0 && released === 0 && fenced === 0;
console.log(JSON.stringify({ ok, minutes, schedulers, shards: reference.size, samples, ownership_changes: changes, lease_lost: leaseLost, shards_released: released, fenced_out: fenced, jobs_inserted: jobs, jobs_dispatched: dispatched }));
console.log(`ownership soak ${ok ? "PASSED" : "FAILED"}: ${minutes} min, ${schedulers} schedulers, ${samples} samples, ${changes} ownership changes, ${leaseLost} lease losses, ${dispatched}/${jobs} jobs dispatched`);
process.exit(ok ? 0 : 1);
