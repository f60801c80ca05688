// Direct in-process executor drive to time the stages without Kafka.
import { IdGenerator } from "./actors/ids.ts";
import { shardOf } from "./actors/shard-map.ts";
import { openDatabases } from "./src/db/databases.ts";
import { freshDatabases, testConfig } from "./test/support/env.ts";
import { claimMany, recordMany } from "./src/executor/job-sql.ts";
const { urls, drop } = await freshDatabases(1);
const dbs = openDatabases(urls, 16, 10);
const sql = dbs.all[0]!;
const gen = new IdGenerator(5);
const N = 20000;
const ids = Array.from({ length: N }, () => gen.next());
for (let i = 0; i < N; i += 5000) {
  const part = ids.slice(i, i + 5000);
  await sql`INSERT INTO jobs (id, shard_id, user_id, job_weight, message, execute_at, max_attempts, status, deadline_at)
    SELECT id, shard, 1, 1, 'x', now(), 3, 'scheduled', now() + interval '1 hour' FROM unnest(${part.map(String)}::bigint[], ${part.map((id) => shardOf(id, 16))}::int[]) AS x(id, shard)`;
}
for (const size of [50, 500]) {
  const t = performance.now();
  let claimT = 0, recT = 0;
  const base = size === 50 ? 0 : 10000;
  for (let i = base; i < base + 10000; i += size) {
    const msgs = ids.slice(i, i + size).map((id) => ({ id: String(id), shard: shardOf(id, 16), attempt: 1 }));
    const a = performance.now();
    const claimed = await claimMany(sql, msgs, 10000, 30000);
    const b = performance.now();
    await recordMany(sql, claimed.filter((c) => c).map((job) => ({ job: job!, decision: { kind: "succeeded" as const } })));
    claimT += b - a; recT += performance.now() - b;
  }
  console.log(`batch ${size}: 10000 jobs in ${(performance.now() - t).toFixed(0)} ms (claim ${claimT.toFixed(0)} ms, record ${recT.toFixed(0)} ms)`);
}
await dbs.close(); await drop();
process.exit(0);
