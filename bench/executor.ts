/**
 * End-to-end drain benchmark, against the real local services (`bash ops/services-up.sh`):
 * JOBS jobs (default 100,000; `log` handler) all due at the same instant, dispatched by the
 * scheduler(s) and run by the executor(s). Reports jobs/s from the due instant to the last
 * `succeeded`, and completion lateness (finished_at - execute_at) percentiles, from SQL.
 * A warm-up burst (WARMUP jobs, default 10,000) is drained first and not measured: the roles
 * are fresh processes, and without it the measured drain also pays for compiling the hot paths
 * (in a cold 8-second drain Bun's JIT threads took ~10 % of the machine), which a long-running
 * process pays once. Completion is watched through the executors' jobs_processed_total counters
 * (polling a count over the whole table once a second cost ~5 % of the drain's database time);
 * the figures come from SQL.
 * With PROFILE=1 (PROFILE=json: .cpuprofile) the first scheduler and the first executor write
 * CPU profiles to .local/prof. Executors log at warn here: the `log` handler's one info line per
 * job is not the subject.
 *
 *   bun bench/executor.ts
 *   JOBS=100000 WARMUP=10000 EXECUTORS=1 SCHEDULERS=1 bun bench/executor.ts
 */
import { IdGenerator } from "../src/ids.ts";
import { shardOf } from "../src/shard-map.ts";
import { openDatabases } from "../src/db/databases.ts";
import { testConfig } from "../test/support/env.ts";
import { slice, waitFor } from "../test/support/procs.ts";
import { finishRoles, machineBusySeconds, report, startRoles, summary } from "./lib.ts";

const JOBS = Number(process.env.JOBS ?? 100_000);
const WARMUP = Number(process.env.WARMUP ?? 10_000);
const EXECUTORS = Number(process.env.EXECUTORS ?? 1);
const SCHEDULERS = Number(process.env.SCHEDULERS ?? 1);
const USERS = Number(process.env.USERS ?? 20);
const SHARDS = 16;

// Role settings (EXECUTOR_*, SCHEDULER_*, DB_POOL_MAX, OTEL_*) given to the benchmark pass through to the roles.
const passed = Object.fromEntries(Object.entries(process.env).filter((e): e is [string, string] => /^(EXECUTOR_|SCHEDULER_|OTEL_|DB_POOL_MAX$)/.test(e[0])));
const s = await slice({ env: { SHARD_COUNT: String(SHARDS), KAFKA_PARTITIONS: "12", LOG_LEVEL: "warn", DB_POOL_MAX: "10", ...passed } });
const config = testConfig(s.env);
const dbs = openDatabases(config.databaseUrls, config.shardCount, 4);
const sql = dbs.all[0]!;
try {
  const schedulers = await startRoles(s.start, "scheduler", SCHEDULERS);
  const executors = await startRoles(s.start, "executor", EXECUTORS);
  const gen = new IdGenerator(4001);
  /** Inserts n `log` jobs with this message, all due at dueAt, spread over USERS users. */
  const insertJobs = async (n: number, message: string, dueAt: number) => {
    for (let start = 0; start < n; start += 5_000) {
      const k = Math.min(5_000, n - start);
      const ids = Array.from({ length: k }, () => gen.next());
      await sql`
        INSERT INTO jobs (id, shard_id, user_id, message, execute_at, due_at, max_attempts)
        SELECT id, shard, u, ${message}, ${new Date(dueAt)}, ${new Date(dueAt)}, 3
        FROM unnest(${ids.map(String)}::bigint[], ${ids.map((id) => shardOf(id, SHARDS))}::int[], ${ids.map((_, i) => String(1 + ((start + i) % USERS)))}::bigint[]) AS x(id, shard, u)`;
    }
  };
  /** Finished runs (succeeded or failed) across the executors, from their metrics. */
  const finished = async () => {
    let n = 0;
    for (const e of executors) {
      const text = await (await fetch(`${e.url}/metrics`)).text();
      for (const m of text.matchAll(/^jobs_processed_total\{outcome="(?:succeeded|failed)"\} (\d+)$/gm)) n += Number(m[1]);
    }
    return n;
  };
  if (WARMUP > 0) {
    await insertJobs(WARMUP, "warmup", Date.now() + 3_000);
    await waitFor("the warm-up jobs to finish", async () => (await finished()) >= WARMUP, 300_000, 200);
  }
  const dueAt = Date.now() + 10_000;
  await insertJobs(JOBS, "drain", dueAt);
  console.error(`[bench] ${JOBS} jobs due at ${new Date(dueAt).toISOString()} (after a warm-up of ${WARMUP})`);
  await Bun.sleep(Math.max(0, dueAt - Date.now()));
  const busy0 = machineBusySeconds();
  await waitFor("all jobs to finish", async () => (await finished()) >= WARMUP + JOBS, 600_000, 100);
  const busy = machineBusySeconds() - busy0;
  const [agg] = await sql`SELECT count(*)::int AS n, count(*) FILTER (WHERE status = 'succeeded')::int AS ok, max(attempt)::int AS max_attempt,
    extract(epoch from max(finished_at) - min(execute_at)) * 1000 AS span_ms FROM all_jobs WHERE message = 'drain'`;
  if (agg!.n !== JOBS) throw new Error(`expected ${JOBS} measured jobs, found ${agg!.n}`);
  const lateness = (await sql`SELECT extract(epoch from finished_at - execute_at) * 1000 AS ms FROM all_jobs WHERE message = 'drain'`).map((r) => Number(r.ms));
  report("executor drain (end to end)", {
    jobs: JOBS,
    warmup_jobs: WARMUP,
    schedulers: SCHEDULERS,
    executors: EXECUTORS,
    succeeded: agg!.ok,
    max_attempt: agg!.max_attempt,
    drain_seconds: Math.round(Number(agg!.span_ms) / 100) / 10,
    jobs_per_s_end_to_end: Math.round(JOBS / (Number(agg!.span_ms) / 1000)),
    completion_lateness_ms: summary(lateness),
    // All processes on the machine, from the due instant until the last job finished (seen
    // within 100 ms).
    machine_cpu_us_per_job: Math.round((busy * 1e6) / JOBS),
  });
  await finishRoles(executors, "executor_step_seconds_", "executor steps");
  await finishRoles(schedulers, "scheduler_dispatch_step_seconds_", "scheduler dispatch steps");
} finally {
  await dbs.close();
  await s.close();
}
process.exit(0);
