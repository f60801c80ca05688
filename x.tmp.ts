import { IdGenerator } from "./actors/ids.ts";
import { shardOf } from "./actors/shard-map.ts";
import { openDatabases } from "./src/db/databases.ts";
import { testConfig } from "./test/support/env.ts";
import { slice, waitFor } from "./test/support/procs.ts";
const N = 30000;
const s = await slice({ env: { SHARD_COUNT: "16", KAFKA_PARTITIONS: "12", LOG_LEVEL: "warn", DB_POOL_MAX: "10", EXECUTOR_CONCURRENCY: process.env.CONC ?? "1000" } });
const config = testConfig(s.env);
const dbs = openDatabases(config.databaseUrls, 16, 4);
const sql = dbs.all[0]!;
const gen = new IdGenerator(4002);
const ids = Array.from({ length: N }, () => gen.next());
for (let i = 0; i < N; i += 5000) {
  const part = ids.slice(i, i + 5000);
  await sql`INSERT INTO jobs (id, shard_id, user_id, job_weight, message, execute_at, max_attempts, status, deadline_at)
    SELECT id, shard, 1, 1, 'x', now(), 3, 'scheduled', now() + interval '1 hour' FROM unnest(${part.map(String)}::bigint[], ${part.map((id) => shardOf(id, 16))}::int[]) AS x(id, shard)`;
}
const pub = await s.bus.publisher();
for (let i = 0; i < N; i += 2000) await pub.publish(s.topicDue, ids.slice(i, i + 2000).map((id) => ({ key: String(id), value: JSON.stringify({ id: String(id), shard: shardOf(id, 16), attempt: 1, user_id: "1", execute_at: new Date().toISOString(), epoch: "1" }) })));
await pub.close();
const t0 = Date.now();
const ex = await s.start("executor", { DEBUG_EXEC: "1" }, process.env.PROFILE ? ["--cpu-prof-md", "--cpu-prof-dir=.local/prof"] : []);
const ready = Date.now();
await waitFor("drain", async () => (await sql`SELECT count(*)::int n FROM jobs WHERE status = 'succeeded'`)[0]!.n >= N, 300_000, 200);
const done = Date.now();
const [agg] = await sql`SELECT extract(epoch from max(finished_at) - min(started_at)) AS s FROM jobs`;
console.log(`executor alone, first claim to last finish: ${Number(agg!.s).toFixed(2)} s = ${Math.round(N / Number(agg!.s))}/s`);
console.log(`executor alone: ${N} jobs in ${((done - ready) / 1000).toFixed(1)} s after ready = ${Math.round(N / ((done - ready) / 1000))}/s (startup ${ready - t0} ms)`);
ex.kill(15); await ex.exited;
console.log(ex.logs.filter((l) => l.includes("[dbg]")).join("\n"));
await dbs.close(); await s.close();
process.exit(0);
