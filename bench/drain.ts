/**
 * Drain rate against a peer: BullMQ (Redis) and this system on the same JOBS jobs (default
 * 50,000), in the same run, one after the other, on this machine.
 *
 * Every job is due at one instant T, and each side is timed from T:
 * - BullMQ: delayed jobs (`timestamp` = when added, `delay` = T - that), added with addBulk in
 *   chunks of 1,000 well before T, into a queue named for this run (obliterated at the end), on
 *   the machine's Redis (REDIS_URL, default redis://127.0.0.1:6379). EXECUTORS (default 2) worker
 *   processes (this file in worker mode) with a no-op processor; this system's default job kind
 *   only logs its message, so neither side does work beyond starting the job.
 * - this system: `execute_at` = T, created through the public API (POST /api/v1/me/jobs/batch)
 *   well before T, spread over three users with weights 1, 2 and 4, so fair share is on.
 * A job's start is BullMQ's `processedOn` (set by the script that moves the job to active, with
 * the worker's clock; each worker records it from the job it is handed) and this system's
 * `started_at`. Drain rate = jobs / (last start - T). The ratio is this system's over the
 * fastest BullMQ configuration tried (target: >= 2.0 with fair share on).
 *
 * BullMQ settings, chosen so the peer is not handicapped:
 * - Redis client: Bun's built-in RedisClient through BullMQ's own adapter (createBunRedisClient;
 *   `ioredis` is an optional peer of BullMQ 6 and not installed here). At 3,000 jobs and 2
 *   workers on this 2-core machine it drained as fast as ioredis or faster (runs of 1,500 to
 *   7,300 jobs/s against 800 to 4,200; the machine was shared, so the spread is wide).
 * - Concurrency per worker: BULLMQ_CONCURRENCY, a comma list, each value run in turn (default
 *   100,1000). This system's executor takes up to EXECUTOR_CONCURRENCY = 4,000 jobs at a time;
 *   for a no-op processor BullMQ's concurrency only bounds how many jobs a worker holds at once.
 *   At 3,000 jobs neither 100 nor 1,000 (nor 50, 300) was consistently faster, so both run and
 *   the ratio takes the faster.
 * - removeOnComplete: a completed job is deleted, BullMQ's cheapest setting (this system keeps
 *   every job's row and history), so the worker records start times instead of reading them back.
 * Both sides first run an unmeasured warm-up burst (WARMUP jobs, default 10,000; 0 to skip): the
 * processes are fresh, and a first burst pays for compiling their hot paths.
 *
 * Machine CPU per job (machineBusySeconds from T until the side is seen done) counts every
 * process on the machine: the other side's idle processes too (the cluster's roles poll while
 * BullMQ runs), so the per-part figures beside it (Redis, the workers; the roles, PostgreSQL,
 * Kafka, etcd) say where each side's CPU went.
 *
 *   bash ops/cluster-up.sh && bun bench/drain.ts
 *   SCHEDULERS=3 EXECUTORS=2 JOBS=50000 BULLMQ_CONCURRENCY=100,1000 SIDES=bullmq,fairshare bun bench/drain.ts
 *   (SIDES=bullmq needs only Redis; ADMIN_TOKEN is sent at sign-up when set.)
 */
import { createBunRedisClient, Queue, Worker } from "bullmq";
import { RedisClient } from "bun";
import { readdirSync, readFileSync } from "node:fs";
import { ApiClient } from "./api-client.ts";
import { adminPg, clusterShape, cpuPerJob, machineBusySeconds, processCpuSeconds, report, summary } from "./lib.ts";

const REDIS_URL = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
const redis = () => createBunRedisClient(new RedisClient(REDIS_URL));

// Worker mode: `bun bench/drain.ts bullmq-worker QUEUE CONCURRENCY`. Prints "ready" once
// connected; on SIGTERM closes and prints the measured jobs' start times as one JSON line.
if (process.argv[2] === "bullmq-worker") {
  const [queueName, concurrency] = process.argv.slice(3);
  const starts: number[] = [];
  const worker = new Worker(
    queueName!,
    async (job) => {
      if (job.name === "m") starts.push(job.processedOn ?? Date.now());
    },
    { connection: redis(), concurrency: Number(concurrency) },
  );
  await worker.waitUntilReady();
  console.log("ready");
  process.on("SIGTERM", async () => {
    await worker.close();
    console.log(`starts ${JSON.stringify(starts)}`);
    process.exit(0);
  });
} else {
  await main();
}

async function main() {
  const JOBS = Number(process.env.JOBS ?? 50_000);
  const WORKERS = Number(process.env.EXECUTORS ?? 2);
  const CONCURRENCY = (process.env.BULLMQ_CONCURRENCY ?? "100,1000").split(",").map(Number);
  const WARMUP = Number(process.env.WARMUP ?? 10_000);
  const SIDES = (process.env.SIDES ?? "bullmq,fairshare").split(",");
  const client = new ApiClient();
  const run = client.run;
  const shape = SIDES.includes("fairshare") ? await clusterShape(client.base) : null;
  if (shape && shape.executors_answering_metrics > 0 && shape.executors_answering_metrics !== WORKERS) {
    console.error(`[bench] ${shape.executors_answering_metrics} executors answer /metrics but EXECUTORS=${WORKERS} BullMQ workers will run; set EXECUTORS to the cluster's`);
  }

  type Side = { side: string; jobs: number; drain_jobs_per_s: number; first_start_ms: number; last_start_ms: number; start_after_due_ms: ReturnType<typeof summary>; machine_cpu_us_per_job: number; cpu_us_per_job_by_part: Record<string, number>; create_seconds: number };
  const sides: Side[] = [];

  /** The figures of one side from its start times, T and the machine's busy CPU over the drain. */
  const figures = (side: string, starts: ArrayLike<number>, t0: number, busy: number, parts: Record<string, number>, createS: number): Side => {
    const s = Array.from(starts);
    const last = Math.max(...s);
    return {
      side,
      jobs: s.length,
      drain_jobs_per_s: Math.round(s.length / ((last - t0) / 1000)),
      first_start_ms: Math.round(Math.min(...s) - t0),
      last_start_ms: Math.round(last - t0),
      start_after_due_ms: summary(s.map((x) => x - t0)),
      machine_cpu_us_per_job: Math.round((busy * 1e6) / s.length),
      cpu_us_per_job_by_part: parts,
      create_seconds: Math.round(createS * 10) / 10,
    };
  };

  for (const side of SIDES) {
    if (side === "bullmq") for (const c of CONCURRENCY) sides.push(await bullmq(c));
    else if (side === "fairshare") sides.push(await fairshare());
    else throw new Error(`unknown side ${side}; expected bullmq, fairshare`);
  }

  console.log(`\n${"side".padEnd(22)}${"jobs".padStart(8)}${"drain jobs/s".padStart(14)}${"first start ms".padStart(16)}${"last start ms".padStart(15)}${"machine CPU us/job".padStart(20)}`);
  for (const s of sides) console.log(`${s.side.padEnd(22)}${String(s.jobs).padStart(8)}${String(s.drain_jobs_per_s).padStart(14)}${String(s.first_start_ms).padStart(16)}${String(s.last_start_ms).padStart(15)}${String(s.machine_cpu_us_per_job).padStart(20)}`);
  const ours = sides.find((s) => s.side === "fairshare");
  const best = sides.filter((s) => s.side.startsWith("bullmq")).sort((a, b) => b.drain_jobs_per_s - a.drain_jobs_per_s)[0];
  const ratio = ours && best ? Math.round((ours.drain_jobs_per_s / best.drain_jobs_per_s) * 100) / 100 : null;
  if (ratio !== null) console.log(`ratio (this system / fastest BullMQ, ${best!.side}): ${ratio} (target >= 2.0)`);
  report("drain against BullMQ", {
    jobs: JOBS,
    due: "all at one instant T; drain = jobs / (last start - T)",
    bullmq_workers: WORKERS,
    bullmq_concurrency_per_worker: CONCURRENCY.join(","),
    fair_share_users: "weights 1:2:4",
    cluster: shape,
    ...Object.fromEntries(sides.map((s) => [s.side, s])),
    ratio_fairshare_over_best_bullmq: ratio,
  });

  /** BullMQ with `concurrency` per worker: warm-up, then JOBS delayed jobs due at T. */
  async function bullmq(concurrency: number): Promise<Side> {
    const name = `fairshare-drain-${run}-c${concurrency}`;
    const queue = new Queue(name, { connection: redis() });
    const workers = Array.from({ length: WORKERS }, () => spawnWorker(name, concurrency));
    try {
      await Promise.all(workers.map((w) => w.ready));
      const idle = async (timeoutMs: number) => {
        for (const until = Date.now() + timeoutMs; ; await Bun.sleep(100)) {
          const counts = await queue.getJobCounts("delayed", "wait", "active", "prioritized", "waiting-children");
          if (Object.values(counts).every((n) => n === 0)) return;
          if (Date.now() > until) throw new Error(`BullMQ jobs still open after ${timeoutMs} ms: ${JSON.stringify(counts)}`);
        }
      };
      if (WARMUP > 0) {
        await add(queue, "w", WARMUP, () => ({ removeOnComplete: true }));
        await idle(300_000);
        console.error(`[bench] BullMQ c=${concurrency}: warm-up of ${WARMUP} jobs drained`);
      }
      // addBulk measured ~5-15k jobs/s here; leave room for a slower moment.
      const t0 = Date.now() + Math.max(5_000, (JOBS / 4_000) * 1000 + 3_000);
      const created = performance.now();
      await add(queue, "m", JOBS, () => {
        const now = Date.now();
        return { timestamp: now, delay: t0 - now, removeOnComplete: true };
      });
      const createS = (performance.now() - created) / 1000;
      if (Date.now() > t0) throw new Error(`adding ${JOBS} BullMQ jobs took ${createS.toFixed(1)} s, past the due instant; raise the lead`);
      await Bun.sleep(t0 - Date.now());
      const pids = workers.map((w) => w.proc.pid);
      const cpu0 = bullmqCpu(pids);
      const busy0 = machineBusySeconds();
      await Bun.sleep(50);
      await idle(600_000);
      const busy = machineBusySeconds() - busy0;
      const cpu1 = bullmqCpu(pids);
      const starts = (await Promise.all(workers.map((w) => w.stop()))).flat();
      if (starts.length !== JOBS) throw new Error(`BullMQ workers recorded ${starts.length} starts of ${JOBS}`);
      return figures(`bullmq_c${concurrency}`, starts, t0, busy, cpuPerJob(cpu0, cpu1, JOBS), createS);
    } finally {
      for (const w of workers) w.proc.kill(15);
      await queue.obliterate({ force: true }).catch((e) => console.error(`[bench] obliterate ${name}: ${e}`));
      await queue.close();
    }
  }

  /** This system: three users (weights 1, 2, 4) share JOBS jobs due at T, through the API. */
  async function fairshare(): Promise<Side> {
    const { sql, parts } = adminPg();
    try {
      if (WARMUP > 0) {
        const t = await client.user("warmup", 1);
        const last = await client.create(t, () => Date.now() + 5_000, WARMUP, "warmup");
        await client.waitFinished([last], 600_000);
        console.error(`[bench] this system: warm-up of ${WARMUP} jobs drained`);
      }
      const weights = [1, 2, 4];
      const tokens = await Promise.all(weights.map((w) => client.user(`drain_w${w}`, w)));
      const per = weights.map((_, i) => Math.floor(JOBS / 3) + (i < JOBS % 3 ? 1 : 0));
      // Creation measured ~25-40k jobs/s; the same lead as bench/fairness.ts.
      const t0 = Date.now() + Math.max(8_000, (JOBS / 12_000) * 1000 + 4_000);
      const created = performance.now();
      const lasts = await Promise.all(tokens.map((t, i) => client.create(t, () => t0, per[i]!, `drain_w${weights[i]}`)));
      const createS = (performance.now() - created) / 1000;
      if (Date.now() > t0) throw new Error(`creating ${JOBS} jobs took ${createS.toFixed(1)} s, past the due instant; raise the lead`);
      await Bun.sleep(t0 - Date.now());
      const busy0 = machineBusySeconds();
      const cpu0 = await parts();
      await client.waitFinished(lasts.map(({ token, id }) => ({ token, id })), 600_000);
      const busy = machineBusySeconds() - busy0;
      const cpu1 = await parts();
      const starts = (await Promise.all(tokens.map((t, i) => client.startTimes(t, per[i]!)))).flatMap((s) => Array.from(s));
      return figures("fairshare", starts, t0, busy, cpuPerJob(cpu0, cpu1, JOBS), createS);
    } finally {
      await sql.end();
    }
  }
}

/** Adds n jobs named `name` in addBulk chunks of 1,000; opts() is called per chunk. */
async function add(queue: Queue, name: string, n: number, opts: () => Record<string, unknown>) {
  for (let i = 0; i < n; i += 1000) {
    const o = opts();
    await queue.addBulk(Array.from({ length: Math.min(1000, n - i) }, (_, k) => ({ name, data: { i: i + k }, opts: o })));
  }
}

/** A BullMQ worker process (this file in worker mode): ready once connected; stop() returns its recorded starts. */
function spawnWorker(queue: string, concurrency: number) {
  const proc = Bun.spawn([process.execPath, import.meta.path, "bullmq-worker", queue, String(concurrency)], { stdout: "pipe", stderr: "inherit" });
  let out = "";
  let seen = () => {};
  const output = (async () => {
    const decoder = new TextDecoder();
    for await (const chunk of proc.stdout) {
      out += decoder.decode(chunk, { stream: true });
      seen();
    }
    return out;
  })();
  const ready = new Promise<void>((resolve, reject) => {
    seen = () => out.includes("ready\n") && resolve();
    proc.exited.then((code) => reject(new Error(`BullMQ worker exited (${code}) before it was ready`)));
    setTimeout(() => reject(new Error("BullMQ worker not ready after 30 s")), 30_000).unref();
  });
  const stop = async (): Promise<number[]> => {
    proc.kill(15);
    const line = (await output).split("\n").find((l) => l.startsWith("starts "));
    if (!line) throw new Error("a BullMQ worker exited without its start times");
    return JSON.parse(line.slice("starts ".length));
  };
  return { proc, ready, stop };
}

/** CPU seconds of Redis (every redis-server process), the BullMQ workers and this process, for cpuPerJob. */
function bullmqCpu(workerPids: number[]): Map<string, number> {
  const out = new Map<string, number>([["redis", 0], ["bullmq-workers", 0], ["bench", processCpuSeconds(process.pid)]]);
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      if (readFileSync(`/proc/${d}/cmdline`, "utf8").split("\0")[0]!.includes("redis-server")) out.set("redis", out.get("redis")! + processCpuSeconds(Number(d)));
    } catch {
      // gone
    }
  }
  for (const pid of workerPids) out.set("bullmq-workers", out.get("bullmq-workers")! + processCpuSeconds(pid));
  return out;
}
