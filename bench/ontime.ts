/**
 * On time at the handler, as a user measures it, through the public API only, against a running
 * cluster (`bash ops/cluster-up.sh`): `log` jobs due evenly at RATE per second (default 1,389, the
 * seed's 5M/hour) for DURATION seconds (default 30), created ahead in batches over USERS users.
 * Prints start lateness (`started_at - execute_at`) and finish lateness (`finished_at -
 * execute_at`) p50/p95/p99/max, jobs that started early (must be 0), lost (not finished in time),
 * re-run (attempt > 1), and the whole machine's CPU busy over the run (every process on it) with
 * the CPU per job of each part. Then the same at RATE2 (default 5,000/s; 0 to skip). First, not
 * measured, a WARMUP-second stream (default 10) at RATE: fresh role processes (and a freshly
 * started broker) spend their first seconds compiling their hot paths.
 *
 *   bash ops/cluster-up.sh && bun bench/ontime.ts
 *   RATE=1389 DURATION=30 RATE2=5000 USERS=10 bun bench/ontime.ts
 */
import { ApiClient, ms, type Job } from "./api-client.ts";
import { adminPg, cpuPerJob, machineBusySeconds, report, summary } from "./lib.ts";

const RATE = Number(process.env.RATE ?? 1389);
const RATE2 = Number(process.env.RATE2 ?? 5000);
const DURATION = Number(process.env.DURATION ?? 30);
const USERS = Number(process.env.USERS ?? 10);
const WARMUP = Number(process.env.WARMUP ?? 10);
const CORES = navigator.hardwareConcurrency;

const client = new ApiClient();
const ROLE_URLS = (process.env.ROLE_URLS ?? "http://127.0.0.1:8091,http://127.0.0.1:8101").split(",");
const { sql: pgAdmin, parts } = adminPg();

/** Work counts behind the CPU: transactions in the job databases, Kafka requests by the roles. */
async function counts(): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const r of await pgAdmin`SELECT sum(xact_commit)::float8 AS n FROM pg_stat_database WHERE datname LIKE 'fairshare%'`) out.set("pg_transactions", r.n);
  for (const url of ROLE_URLS) {
    const text = await (await fetch(`${url}/metrics`)).text().catch(() => "");
    for (const m of text.matchAll(/^kafka_requests_total\{(.*)\} (\S+)$/gm)) {
      const client = /client="([^"]+)"/.exec(m[1]!)![1]!;
      const api = /api="([^"]+)"/.exec(m[1]!)![1]!;
      const k = `kafka_${client}_${api}`;
      out.set(k, (out.get(k) ?? 0) + Number(m[2]));
    }
  }
  return out;
}
const perSecond = (a: Map<string, number>, b: Map<string, number>, seconds: number) =>
  Object.fromEntries([...b].map(([k, v]) => [k, Math.round((v - (a.get(k) ?? 0)) / seconds)] as const).filter(([, v]) => v > 0).sort((x, y) => y[1] - x[1]));

async function phase(rate: number, label: string, seconds = DURATION, measure = true): Promise<void> {
  const total = Math.round(rate * seconds);
  const tokens = await Promise.all(Array.from({ length: USERS }, (_, u) => client.user(`${label}${u}`)));
  // Creation takes time; the stream starts once every job is stored (~10-40k jobs/s through
  // batch creates here) and the database has settled, a margin later: creation still running
  // when the first jobs fall due delays their loads and marks, and the bench would measure that.
  const t0 = Date.now() + Math.max(5_000, (total / 6_000) * 1000 + 5_000);
  const created0 = Date.now();
  const per = Math.ceil(total / USERS);
  // Job i of user u is the (i * USERS + u)-th of the stream: users interleave evenly.
  const lasts = await Promise.all(tokens.map((t, u) => client.create(t, (i) => t0 + ((i * USERS + u) * 1000) / rate, per, label)));
  if (Date.now() > t0 - 2_000) throw new Error(`creating ${total} jobs ran to within 2 s of the stream's start; lower RATE or DURATION`);
  console.error(`[bench] ${label}: ${total} jobs created in ${((Date.now() - created0) / 1000).toFixed(1)} s, ${((t0 - Date.now()) / 1000).toFixed(1)} s before the first is due`);
  await Bun.sleep(t0 - Date.now());
  if (!measure) {
    await client.waitFinished(lasts, 120_000);
    console.error(`[bench] warm-up: ${total} jobs at ${rate}/s`);
    return;
  }
  const busy0 = machineBusySeconds();
  const cpu0 = await parts();
  const n0 = await counts();
  const w0 = Date.now();
  await Bun.sleep(seconds * 1000);
  const busy = machineBusySeconds() - busy0;
  const cpu1 = await parts();
  const n1 = await counts();
  const wall = (Date.now() - w0) / 1000;
  await client.waitFinished(lasts, 120_000).catch(() => {}); // what is not finished by then is lost
  const jobs: Job[] = (await Promise.all(tokens.map((t) => client.finished(t, per)))).flat();
  const start = jobs.map((j) => ms(j.started_at) - ms(j.execute_at));
  const finish = jobs.map((j) => ms(j.finished_at) - ms(j.execute_at));
  report(`on time at ${rate} jobs/s`, {
    rate_per_s: rate,
    seconds,
    jobs: per * USERS,
    start_lateness_ms: summary(start),
    finish_lateness_ms: summary(finish),
    started_early: start.filter((l) => l < 0).length,
    lost: per * USERS - jobs.length,
    failed: jobs.filter((j) => j.status !== "succeeded").length,
    rerun: jobs.filter((j) => j.attempt > 1).length,
    machine_cpu_busy_pct: Math.round((1000 * busy) / (wall * CORES)) / 10,
    cpu_us_per_job_by_part: cpuPerJob(cpu0, cpu1, rate * wall),
    work_per_second: perSecond(n0, n1, wall),
  });
}

if (WARMUP > 0) await phase(RATE, "w", WARMUP, false);
await phase(RATE, "s");
if (RATE2 > 0) await phase(RATE2, "f");
await pgAdmin.end();
