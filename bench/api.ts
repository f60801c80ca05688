/**
 * API throughput: single creates (POST /me/jobs) and batch creates (POST /me/jobs/batch of
 * 1,000) against a running API, with request latency percentiles. Jobs are scheduled a day
 * ahead so the scheduler stays idle and the figures are the API's alone.
 *
 *   bash ops/cluster-up.sh && bun bench/api.ts
 *   API_URL=http://127.0.0.1:8080 SECONDS=15 CONCURRENCY=64 bun bench/api.ts
 */
import { api, report, summary, userToken } from "./lib.ts";

const base = process.env.API_URL ?? "http://127.0.0.1:8080";
const seconds = Number(process.env.SECONDS ?? 15);
const concurrency = Number(process.env.CONCURRENCY ?? 64);
const batchConcurrency = Number(process.env.BATCH_CONCURRENCY ?? 4);

const token = await userToken(base, `bench_${Date.now()}`);
const dayAhead = () => new Date(Date.now() + 86_400_000).toISOString();

async function run(label: string, workers: number, once: () => Promise<number>) {
  const latencies: number[] = [];
  let jobs = 0;
  let errors = 0;
  const until = performance.now() + seconds * 1000;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: workers }, async () => {
      while (performance.now() < until) {
        const t0 = performance.now();
        try {
          const n = await once(); // not `jobs += await once()`: that reads `jobs` before awaiting
          jobs += n;
          latencies.push(performance.now() - t0);
        } catch {
          errors++;
        }
      }
    }),
  );
  const elapsed = (performance.now() - started) / 1000;
  return { label, requests: latencies.length, errors, jobs, elapsed_s: Math.round(elapsed * 10) / 10, requests_per_s: Math.round(latencies.length / elapsed), jobs_per_s: Math.round(jobs / elapsed), latency_ms: summary(latencies) };
}

// Warm up connections and JIT.
await run("warmup", 8, async () => (await api(base, "/api/v1/me/jobs", { message: "warm", execute_at: dayAhead() }, token), 1)).catch(() => {});

const single = await run("single", concurrency, async () => {
  await api(base, "/api/v1/me/jobs", { message: "bench job", execute_at: dayAhead() }, token);
  return 1;
});
const batchBody = () => ({ jobs: Array.from({ length: 1000 }, (_, i) => ({ message: `bench ${i}`, execute_at: dayAhead() })) });
const batch = await run("batch", batchConcurrency, async () => (await api(base, "/api/v1/me/jobs/batch", batchBody(), token)).data.length);

report("api create throughput", {
  api: base,
  seconds,
  single_creates_per_s: single.requests_per_s,
  single_latency_ms: single.latency_ms,
  single_errors: single.errors,
  batch_jobs_per_s: batch.jobs_per_s,
  batch_requests_per_s: batch.requests_per_s,
  batch_latency_ms: batch.latency_ms,
  batch_errors: batch.errors,
  concurrency: { single: concurrency, batch: batchConcurrency },
});
