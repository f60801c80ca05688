/**
 * End-to-end drain benchmark, against the real local services (`bash ops/services-up.sh`):
 * JOBS jobs (default 100,000; `log` handler) all due at the same instant, dispatched by the
 * scheduler(s) and run by the executor(s). Reports jobs/s from the due instant to the last
 * `succeeded`, and completion lateness (finished_at - execute_at) percentiles, from SQL.
 * With PROFILE=1 the first scheduler and the first executor write CPU profiles to .local/prof.
 * Executors log at warn here: the `log` handler's one info line per job is not the subject.
 *
 *   bun bench/executor.ts
 *   JOBS=100000 EXECUTORS=1 SCHEDULERS=1 bun bench/executor.ts
 */
import { IdGenerator } from "../actors/ids.ts";
import { shardOf } from "../actors/shard-map.ts";
import { openDatabases } from "../src/db/databases.ts";
import { testConfig } from "../test/support/env.ts";
import { slice, waitFor } from "../test/support/procs.ts";
import { finishRoles, machineBusySeconds, report, startRoles, summary } from "./lib.ts";

const JOBS = Number(process.env.JOBS ?? 100_000);
const EXECUTORS = Number(process.env.EXECUTORS ?? 1);
const SCHEDULERS = Number(process.env.SCHEDULERS ?? 1);
const USERS = Number(process.env.USERS ?? 20);
const SHARDS = 16;

// Role settings (EXECUTOR_*, SCHEDULER_*, DB_POOL_MAX) given to the benchmark pass through to the roles.
const passed = Object.fromEntries(Object.entries(process.env).filter((e): e is [string, string] => /^(EXECUTOR_|SCHEDULER_|DB_POOL_MAX$)/.test(e[0])));
const s = await slice({ env: { SHARD_COUNT: String(SHARDS), KAFKA_PARTITIONS: "12", LOG_LEVEL: "warn", DB_POOL_MAX: "10", ...passed } });
const config = testConfig(s.env);
const dbs = openDatabases(config.databaseUrls, config.shardCount, 4);
const sql = dbs.all[0]!;
try {
  const schedulers = await startRoles(s.start, "scheduler", SCHEDULERS);
  const executors = await startRoles(s.start, "executor", EXECUTORS);
  const dueAt = Date.now() + 10_000;
  const gen = new IdGenerator(4001);
  for (let start = 0; start < JOBS; start += 5_000) {
    const n = Math.min(5_000, JOBS - start);
    const ids = Array.from({ length: n }, () => gen.next());
    await sql`
      INSERT INTO jobs (id, shard_id, user_id, job_weight, message, execute_at, max_attempts)
      SELECT id, shard, u, 1, 'drain', ${new Date(dueAt)}, 3
      FROM unnest(${ids.map(String)}::bigint[], ${ids.map((id) => shardOf(id, SHARDS))}::int[], ${ids.map((_, k) => String(1 + ((start + k) % USERS)))}::bigint[]) AS x(id, shard, u)`;
  }
  console.error(`[bench] ${JOBS} jobs due at ${new Date(dueAt).toISOString()}`);
  await Bun.sleep(Math.max(0, dueAt - Date.now()));
  const busy0 = machineBusySeconds();
  await waitFor("all jobs to finish", async () => (await sql`SELECT count(*)::int AS n FROM jobs WHERE status IN ('succeeded', 'failed')`)[0]!.n >= JOBS, 600_000, 1_000);
  const busy = machineBusySeconds() - busy0;
  const [agg] = await sql`SELECT count(*) FILTER (WHERE status = 'succeeded')::int AS ok, max(attempt)::int AS max_attempt,
    extract(epoch from max(finished_at) - min(execute_at)) * 1000 AS span_ms FROM jobs`;
  const lateness = (await sql`SELECT extract(epoch from finished_at - execute_at) * 1000 AS ms FROM jobs`).map((r) => Number(r.ms));
  report("executor drain (end to end)", {
    jobs: JOBS,
    schedulers: SCHEDULERS,
    executors: EXECUTORS,
    succeeded: agg!.ok,
    max_attempt: agg!.max_attempt,
    drain_seconds: Math.round(Number(agg!.span_ms) / 100) / 10,
    jobs_per_s_end_to_end: Math.round(JOBS / (Number(agg!.span_ms) / 1000)),
    completion_lateness_ms: summary(lateness),
    // All processes on the machine, from the due instant until the last job finished (polled
    // once a second, so it includes up to a second of near-idle time).
    machine_cpu_us_per_job: Math.round((busy * 1e6) / JOBS),
  });
  await finishRoles(executors, "executor_step_seconds_", "executor steps");
  await finishRoles(schedulers, "scheduler_dispatch_step_seconds_", "scheduler dispatch steps");
} finally {
  await dbs.close();
  await s.close();
}
process.exit(0);
