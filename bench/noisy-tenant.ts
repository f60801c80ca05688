/**
 * A noisy tenant, as its neighbour sees it, through the public API only, against a running
 * cluster (`bash ops/cluster-up.sh`). The HTTP targets are a server in this process on
 * 127.0.0.1 (a free port): /slow answers after SLOW_MS (default 2,000 ms), /fast at once, /hang
 * never (the call is held until the executor gives up: the job's timeout, HTTP_TARGET_TIMEOUT on
 * the cluster, 10 s by default). The server counts calls in flight per path: the largest number
 * at once over the case (exact, at every call), and the largest in each second (also sampled
 * every 100 ms, so a quiet second still shows what was held through it).
 *
 * Two fresh users of equal weight (1) per case. Creation first; everything is due from T0, LEAD_S
 * after the start of creation (default max(8, jobs / 12,000 + 4) s):
 *   slow   user A: A_JOBS (default 20,000) http jobs to /slow, all due at T0; user B: B_JOBS
 *          (default 300) http jobs to /fast, due evenly over B_SPAN_S (default 15 s) from T0.
 *   hang   the same, A's jobs to /hang: they time out, are retried with backoff, fail.
 *   alone  B only: the baseline for B's lateness and rate with A absent.
 * CASES (default alone,slow,hang) picks them and their order; they run in turn on the same
 * cluster. Once B's jobs are done (or WAIT_S, default 60 s, after B's span), A's jobs are read,
 * then A is stopped: with ADMIN_TOKEN set (the cluster's; ops/cluster-up.sh keeps it in
 * .local/admin-token) A is deleted through the admin API, which cancels every job of A not yet
 * started in one call; without it (or with STOP=cancel) each of A's waiting jobs is cancelled
 * through A's own API, 16 requests at a time, again as long as retries bring some back. Then
 * the bench waits until A has nothing unfinished and nothing in flight at the target (at most
 * QUIET_TIMEOUT_S, default 180 s), and PAUSE_S (default 5 s) more, before the next case. B's
 * unfinished jobs, if any, are cancelled the same way. A's retries are not waited for.
 *
 * Per case: B's start lateness (started_at - execute_at, from B's job views: the claim) and B's
 * call lateness (first arrival of the job's call at /fast - execute_at: what B's receiver sees)
 * p50/p95/p99/max in ms, B's finish lateness; a job not started (not called) when read counts at
 * its lateness then, a lower bound (see b_not_started / b_not_called); B's jobs finished and
 * B's rate (finished / (last finish - T0)), its ratio to the alone case's; A's jobs whose start
 * (latest attempt's started_at) is within B's span, A's calls at the target within it (every
 * attempt), A's status counts when read; the most calls in flight at A's and at B's path, and
 * A's as a fraction of the executor slots: EXECUTOR_CONCURRENCY (default 4,000) x executors
 * (EXECUTORS, else the executors answering /metrics on the ports ops/cluster-up.sh gives them,
 * else 1), and of the executors' fetch capacity: Bun's fetch keeps at most
 * BUN_CONFIG_MAX_HTTP_REQUESTS (default 256) requests in flight per process, the rest queue in
 * the process. Pass the values the cluster was started with; this process cannot see them.
 * Prints a table, one row per case, with the target beside it (B's start p99 < 250 ms; B's rate
 * at least 90 % of the alone case's), and one JSON line of every figure, with per-second series.
 * It prints figures; it does not check them.
 *
 *   SCHEDULERS=3 EXECUTORS=2 bash ops/cluster-up.sh && EXECUTORS=2 bun bench/noisy-tenant.ts
 *   EXECUTORS=2 ADMIN_TOKEN=$(cat .local/admin-token) bun bench/noisy-tenant.ts   (faster stops)
 *   CASES=slow A_JOBS=20000 B_JOBS=300 B_SPAN_S=15 SLOW_MS=2000 bun bench/noisy-tenant.ts
 *   API_URL=http://127.0.0.1:8080 STOP=cancel bun bench/noisy-tenant.ts
 * Optional: A_TIMEOUT_MS (A's jobs' target.timeout_ms; default: the cluster's
 * HTTP_TARGET_TIMEOUT), A_MAX_ATTEMPTS (default: the cluster's JOB_DEFAULT_MAX_ATTEMPTS),
 * TARGET_PORT (default: a free port). The executors must be allowed to call 127.0.0.1
 * (HTTP_TARGET_ALLOW_PRIVATE, on by default in local mode).
 */
import { ApiClient, ms, type Job } from "./api-client.ts";
import { clusterShape, forEachLimit, summary } from "./lib.ts";

const USAGE = `bun bench/noisy-tenant.ts — a noisy tenant (A) against a small one (B), through the API.

Needs a running cluster:  SCHEDULERS=3 EXECUTORS=2 bash ops/cluster-up.sh
Run:                      EXECUTORS=2 bun bench/noisy-tenant.ts
Faster stops between cases: EXECUTORS=2 ADMIN_TOKEN=$(cat .local/admin-token) bun bench/noisy-tenant.ts

Environment (defaults):
  API_URL / API_PORT       http://127.0.0.1:8080
  CASES                    alone,slow,hang   (any of alone, slow, hang, in the order given)
  A_JOBS                   20000   A's jobs, all due at T0 (to /slow or /hang)
  B_JOBS                   300     B's jobs to /fast, due evenly over B_SPAN_S from T0
  B_SPAN_S                 15
  SLOW_MS                  2000    how long /slow holds a call
  LEAD_S                   max(8, jobs/12000 + 4)   T0 after the start of creation
  WAIT_S                   60      how long after B's span to wait for B's jobs to finish
  A_TIMEOUT_MS             unset   A's target.timeout_ms (unset: HTTP_TARGET_TIMEOUT, 10 s)
  A_MAX_ATTEMPTS           unset   (unset: JOB_DEFAULT_MAX_ATTEMPTS, 3)
  STOP                     auto    auto (admin with ADMIN_TOKEN, else cancel) | admin | cancel
  ADMIN_TOKEN              unset   the cluster's admin token: STOP=auto then deletes A (one call)
  QUIET_TIMEOUT_S          180     longest wait for A to stop between cases
  PAUSE_S                  5       pause after A has stopped, before the next case
  EXECUTORS                the executors answering /metrics, else 1
  EXECUTOR_CONCURRENCY     4000    as the cluster's executors run with
  BUN_CONFIG_MAX_HTTP_REQUESTS 256 Bun's per-process fetch limit, as the executors run with
  TARGET_PORT              0 (a free port)

Prints a table (one row per case) and one "JSON {...}" line; it does not check the figures.`;

/** An error whose message is the whole story: printed without a stack. */
class BenchError extends Error {}

type PathName = "slow" | "fast" | "hang";
const PATHS: readonly PathName[] = ["slow", "fast", "hang"];
type CaseName = "alone" | "slow" | "hang";
const CASE_NAMES: readonly CaseName[] = ["alone", "slow", "hang"];

function num(name: string, fallback: number, { min = 0, integer = true } = {}): number {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const v = Number(raw);
  if (!Number.isFinite(v) || v < min || (integer && !Number.isInteger(v))) throw new BenchError(`${name}=${raw}: expected ${integer ? "a whole number" : "a number"} of at least ${min}`);
  return v;
}
function optionalNum(name: string, min: number, max: number): number | undefined {
  if (!process.env[name]) return undefined;
  const v = num(name, 0, { min });
  if (v > max) throw new BenchError(`${name}=${v}: at most ${max}`);
  return v;
}

const round1 = (x: number) => Math.round(x * 10) / 10;
const round3 = (x: number) => Math.round(x * 1000) / 1000;

/**
 * The HTTP targets: /slow answers after slowMs, /fast at once, /hang when the caller gives up.
 * Counts calls in flight per path: the maximum since reset() (exact, at every call) and the
 * maximum per second from `epoch` (at every call and every 100 ms), and keeps every call's
 * arrival time and job id.
 */
class TargetServer {
  readonly inflight: Record<PathName, number> = { slow: 0, fast: 0, hang: 0 };
  max: Record<PathName, number> = { slow: 0, fast: 0, hang: 0 };
  /** Per path: the largest in flight in second k after epoch. */
  series: Record<PathName, number[]> = { slow: [], fast: [], hang: [] };
  /** Per path: calls arrived in second k after epoch. */
  callSeries: Record<PathName, number[]> = { slow: [], fast: [], hang: [] };
  /** Per path: every call's arrival (ms) and X-Job-Id. */
  arrivals: Record<PathName, { t: number; job: string }[]> = { slow: [], fast: [], hang: [] };
  epoch = Date.now();
  private readonly server: ReturnType<typeof Bun.serve>;
  private readonly sampler: ReturnType<typeof setInterval>;
  /** Seconds of series kept (a case longer than this keeps its first SERIES_MAX seconds). */
  static readonly SERIES_MAX = 3_600;

  constructor(
    private readonly slowMs: number,
    port: number,
  ) {
    this.server = Bun.serve({
      hostname: "127.0.0.1",
      port,
      // A held call must not be closed by the server's idle timeout (10 s by default): /hang is
      // held until the caller gives up.
      idleTimeout: 0,
      fetch: (req) => this.handle(req),
    });
    this.sampler = setInterval(() => {
      for (const p of PATHS) this.touch(this.series, p, this.inflight[p]);
    }, 100);
  }

  get port(): number {
    return this.server.port!;
  }
  url(path: PathName): string {
    return `http://127.0.0.1:${this.port}/${path}`;
  }

  /** Starts a case: maxima, series and arrivals from now, series seconds counted from `epoch`. */
  reset(epoch: number): void {
    this.epoch = epoch;
    for (const p of PATHS) {
      this.max[p] = this.inflight[p];
      this.series[p] = [];
      this.callSeries[p] = [];
      this.arrivals[p] = [];
    }
  }

  lastArrival(path: PathName): number {
    const a = this.arrivals[path];
    return a.length ? a[a.length - 1]!.t : 0;
  }

  private touch(series: Record<PathName, number[]>, path: PathName, value: number, add = false): void {
    const k = Math.floor((Date.now() - this.epoch) / 1000);
    if (k < 0 || k >= TargetServer.SERIES_MAX) return;
    const s = series[path];
    while (s.length <= k) s.push(0);
    s[k] = add ? s[k]! + value : Math.max(s[k]!, value);
  }

  private async handle(req: Request): Promise<Response> {
    const path = new URL(req.url).pathname.slice(1) as PathName;
    if (!PATHS.includes(path)) return new Response("not found", { status: 404 });
    this.arrivals[path].push({ t: Date.now(), job: req.headers.get("x-job-id") ?? "" });
    this.touch(this.callSeries, path, 1, true);
    this.inflight[path]++;
    if (this.inflight[path] > this.max[path]) this.max[path] = this.inflight[path];
    this.touch(this.series, path, this.inflight[path]);
    try {
      if (path === "slow") await held(req.signal, this.slowMs);
      else if (path === "hang") await held(req.signal, Infinity);
      return new Response("ok");
    } finally {
      this.inflight[path]--;
    }
  }

  stop(): void {
    clearInterval(this.sampler);
    this.server.stop(true);
  }
}

/** Resolves after `holdMs`, or as soon as the caller goes away (its request's signal aborts). */
function held(signal: AbortSignal, holdMs: number): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const done = () => {
      if (timer) clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    if (Number.isFinite(holdMs)) timer = setTimeout(done, holdMs);
    signal.addEventListener("abort", done, { once: true });
  });
}

type JobView = Job & { last_error: string | null };
type Stats = Record<string, number>;
interface User {
  name: string;
  id: number;
  token: string;
}
const UNFINISHED = ["created", "scheduled", "running", "retrying"] as const;

const client = new ApiClient();

/** Signs a user up with weight 1 (with the admin token when there is one, as ApiClient.user) and logs in. */
async function signUp(name: string, admin: string | null): Promise<User> {
  const username = `b_${client.run}_${name}`;
  await client.call("POST", "/api/v1/users", { username, password: "bench-password", job_weight: 1 }, undefined, admin ? { authorization: `Bearer ${admin}` } : {});
  const login = (await client.call("POST", "/api/v1/auth/login", { username, password: "bench-password" })).data;
  return { name, id: Number(login.user.id), token: login.token };
}

/** Every job of a user (or those in `status`), paging through GET /me/jobs. */
async function listJobs(token: string, status?: string): Promise<JobView[]> {
  const out: JobView[] = [];
  let cursor: string | null = null;
  do {
    const page: any = await client.call("GET", `/api/v1/me/jobs?limit=1000${status ? `&status=${status}` : ""}${cursor ? `&cursor=${cursor}` : ""}`, undefined, token);
    out.push(...page.data);
    cursor = page.next_cursor;
  } while (cursor);
  return out;
}

const stats = async (token: string): Promise<Stats> => (await client.call("GET", "/api/v1/me/jobs/stats", undefined, token)).data;
const unfinished = (s: Stats) => UNFINISHED.reduce((a, st) => a + (s[st] ?? 0), 0);

/** Cancels every job of the user that has not started, through the user's own API (409s skipped). */
async function cancelWaiting(token: string): Promise<number> {
  const waiting = await listJobs(token, "created,retrying,scheduled");
  let cancelled = 0;
  await forEachLimit(waiting, 16, async (j) => {
    const r = await client.send("POST", `/api/v1/me/jobs/${j.id}/cancel`, undefined, token);
    if (r.status === 200) cancelled++;
    else if (r.status !== 409 && r.status !== 404) throw new BenchError(`cancel ${j.id}: ${r.status} ${JSON.stringify(r.json)}`);
  });
  return cancelled;
}

/** A's unfinished jobs by the admin API (A's token no longer works once A is deleted). */
async function adminUnfinished(admin: string, userId: number): Promise<number> {
  let n = 0;
  for (const st of UNFINISHED) {
    const page: any = await client.call("GET", `/api/v1/admin/jobs?status=${st}&user_id=${userId}&limit=1000`, undefined, admin);
    n += page.data.length;
  }
  return n;
}

/**
 * Stops a user's jobs from competing: deletes the user through the admin API (every job not yet
 * started is cancelled) or cancels them one by one through the user's API, then waits until the
 * user has nothing unfinished and nothing in flight at `path` (calls still held end when their
 * caller times out). Jobs that go back to waiting after a run (retries) are cancelled again.
 */
async function stopUser(u: User, path: PathName, target: TargetServer, admin: string | null, mode: string, timeoutMs: number) {
  const began = Date.now();
  let method = mode === "cancel" || !admin ? "cancel" : "admin_delete";
  let cancelled = 0;
  if (method === "admin_delete") {
    const r = await fetch(`${client.base}/api/v1/admin/users/${u.id}`, { method: "DELETE", headers: { authorization: `Bearer ${admin}` } });
    const json: any = await r.json().catch(() => null);
    if (r.ok) cancelled = json?.data?.jobs_cancelled ?? 0;
    else {
      if (mode === "admin") throw new BenchError(`DELETE /api/v1/admin/users/${u.id}: ${r.status} ${JSON.stringify(json)} (is ADMIN_TOKEN the cluster's?)`);
      console.error(`[bench] the admin API refused (${r.status}); cancelling ${u.name}'s jobs one by one instead`);
      method = "cancel";
    }
  }
  let quiet = false;
  let left = NaN;
  while (Date.now() - began < timeoutMs) {
    if (method === "cancel") {
      cancelled += await cancelWaiting(u.token);
      left = unfinished(await stats(u.token));
    } else {
      left = await adminUnfinished(admin!, u.id);
    }
    if (left === 0 && target.inflight[path] === 0 && Date.now() - target.lastArrival(path) > 2_000) {
      quiet = true;
      break;
    }
    await Bun.sleep(1_000);
  }
  if (!quiet) console.error(`[bench] ${u.name} still busy after ${timeoutMs / 1000} s (${left} unfinished, ${target.inflight[path]} calls in flight at /${path}); going on`);
  return { method, cancelled, seconds: round1((Date.now() - began) / 1000), quiet };
}

/** `series` trimmed of its trailing zeros. */
const trimmed = (s: number[]) => {
  let n = s.length;
  while (n > 0 && s[n - 1] === 0) n--;
  return s.slice(0, n);
};

async function preflight(): Promise<void> {
  let why: string;
  try {
    const res = await fetch(`${client.base}/readyz`, { signal: AbortSignal.timeout(3_000) });
    if (res.ok) return;
    why = `/readyz answered ${res.status}: the API is up but not ready`;
  } catch (e) {
    why = (e as Error).name === "TimeoutError" ? "no answer within 3 s" : (e as Error).message.replace(/[.?\s]+$/, "");
  }
  throw new BenchError(`cannot use the API at ${client.base}: ${why}.\nStart the cluster first (SCHEDULERS=3 EXECUTORS=2 bash ops/cluster-up.sh), or point API_URL (or API_PORT) at it. --help for the options.`);
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  if (args.includes("--help") || args.includes("-h")) {
    console.log(USAGE);
    return;
  }
  if (args.length) throw new BenchError(`unexpected argument ${args[0]}: options are environment variables (--help)`);

  const CASES = (process.env.CASES ?? "alone,slow,hang").split(",").map((c) => c.trim()).filter(Boolean);
  for (const c of CASES) if (!CASE_NAMES.includes(c as CaseName)) throw new BenchError(`CASES: unknown case ${c}; expected any of ${CASE_NAMES.join(", ")}`);
  if (CASES.length === 0) throw new BenchError("CASES is empty");
  if (new Set(CASES).size !== CASES.length) throw new BenchError(`CASES=${CASES.join(",")}: each case at most once`);
  const A_JOBS = num("A_JOBS", 20_000, { min: 1 });
  const B_JOBS = num("B_JOBS", 300, { min: 1 });
  const B_SPAN_MS = num("B_SPAN_S", 15, { min: 0, integer: false }) * 1000;
  const SLOW_MS = num("SLOW_MS", 2_000);
  const WAIT_MS = num("WAIT_S", 60, { integer: false }) * 1000;
  const QUIET_TIMEOUT_MS = num("QUIET_TIMEOUT_S", 180, { integer: false }) * 1000;
  const PAUSE_MS = num("PAUSE_S", 5, { integer: false }) * 1000;
  const A_TIMEOUT_MS = optionalNum("A_TIMEOUT_MS", 100, 300_000);
  const A_MAX_ATTEMPTS = optionalNum("A_MAX_ATTEMPTS", 1, 100);
  const STOP = process.env.STOP ?? "auto";
  if (!["auto", "admin", "cancel"].includes(STOP)) throw new BenchError(`STOP=${STOP}: expected auto, admin or cancel`);
  const EXECUTOR_CONCURRENCY = num("EXECUTOR_CONCURRENCY", 4_000, { min: 1 });
  const FETCH_CAP = num("BUN_CONFIG_MAX_HTTP_REQUESTS", 256, { min: 1 });
  const TARGET_PORT = num("TARGET_PORT", 0);
  const leadMs = (jobs: number) => (process.env.LEAD_S ? num("LEAD_S", 8, { integer: false }) * 1000 : Math.max(8_000, (jobs / 12_000) * 1000 + 4_000));

  await preflight();
  const admin = STOP === "cancel" ? null : process.env.ADMIN_TOKEN || null;
  if (STOP === "admin" && !admin) throw new BenchError("STOP=admin needs ADMIN_TOKEN (the cluster's: ADMIN_TOKEN=$(cat .local/admin-token))");
  const cluster = await clusterShape(client.base);
  const executors = process.env.EXECUTORS ? num("EXECUTORS", 1, { min: 1 }) : cluster.executors_answering_metrics || 1;
  const slots = EXECUTOR_CONCURRENCY * executors;
  const fetchSlots = Math.min(EXECUTOR_CONCURRENCY, FETCH_CAP) * executors;

  const target = new TargetServer(SLOW_MS, TARGET_PORT);
  let current: { a: User | null; b: User | null; aPath: PathName } | null = null;
  const onSignal = () => {
    target.stop();
    if (current?.a) console.error(`\n[bench] interrupted: user ${current.a.id} (A) may still have jobs; they fail once their target is gone`);
    process.exit(130);
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);

  const results: Record<string, any> = {};
  try {
    console.error(`[bench] target server on 127.0.0.1:${target.port}; API ${client.base}; executors ${executors} (slots ${slots}, fetch cap ${fetchSlots}); stop A by ${admin ? "admin delete" : "cancels"}`);
    for (const [i, name] of (CASES as CaseName[]).entries()) {
      if (i > 0 && PAUSE_MS > 0) await Bun.sleep(PAUSE_MS);
      const aPath: PathName = name === "hang" ? "hang" : "slow";
      const withA = name !== "alone";
      const [a, b] = await Promise.all([withA ? signUp(`${name}_A`, admin) : null, signUp(`${name}_B`, admin)]);
      current = { a, b, aPath };
      const aJobs = withA ? A_JOBS : 0;
      const created = Date.now();
      const t0 = created + leadMs(aJobs + B_JOBS);
      target.reset(t0);
      const aTarget = { url: target.url(aPath), method: "POST", ...(A_TIMEOUT_MS ? { timeout_ms: A_TIMEOUT_MS } : {}) };
      const [, bCreated] = await Promise.all([
        a ? client.create(a.token, () => t0, aJobs, `A ${name}`, { target: aTarget, ...(A_MAX_ATTEMPTS ? { max_attempts: A_MAX_ATTEMPTS } : {}) }) : null,
        client.create(b!.token, (k) => t0 + (k * B_SPAN_MS) / B_JOBS, B_JOBS, `B ${name}`, { target: { url: target.url("fast"), method: "POST" } }),
      ]);
      const createS = (Date.now() - created) / 1000;
      if (Date.now() > t0 - 500) throw new BenchError(`${name}: creating ${aJobs + B_JOBS} jobs took ${createS.toFixed(1)} s, past (or within 0.5 s of) T0; raise LEAD_S`);
      console.error(`[bench] ${name}: ${aJobs} A jobs to /${aPath}, ${B_JOBS} B jobs to /fast created in ${createS.toFixed(1)} s; T0 in ${((t0 - Date.now()) / 1000).toFixed(1)} s`);

      // B's span, then until B's jobs are done or WAIT_S more.
      const spanEnd = t0 + B_SPAN_MS;
      await Bun.sleep(spanEnd + 1_000 - Date.now());
      let bStats = await stats(b!.token);
      while (unfinished(bStats) > 0 && Date.now() < spanEnd + WAIT_MS) {
        await Bun.sleep(1_000);
        bStats = await stats(b!.token);
      }
      const readAt = Date.now();
      const aMax = target.max[aPath];
      const bMax = target.max.fast;
      const series = { a: trimmed(target.series[aPath]), b: trimmed(target.series.fast), aCalls: trimmed(target.callSeries[aPath]), bCalls: trimmed(target.callSeries.fast) };
      const bArrivals = [...target.arrivals.fast];
      const aArrivals = [...target.arrivals[aPath]];
      const bJobs = await listJobs(b!.token);
      const aStats = a ? await stats(a.token) : null;
      const aJobsRead = a ? await listJobs(a.token) : [];
      console.error(`[bench] ${name}: B ${unfinished(bStats) === 0 ? "done" : `${unfinished(bStats)} unfinished`} ${((readAt - t0) / 1000).toFixed(1)} s after T0; stopping`);

      // Stop what still competes: A, and B's leftovers.
      const stopA = a ? await stopUser(a, aPath, target, admin, STOP, QUIET_TIMEOUT_MS) : null;
      if (unfinished(bStats) > 0) await stopUser(b!, "fast", target, null, "cancel", QUIET_TIMEOUT_MS);
      current = null;

      // B's figures, from its job views and the calls at /fast.
      const firstCall = new Map<string, number>();
      for (const c of bArrivals) if (!firstCall.has(c.job)) firstCall.set(c.job, c.t);
      const started = bJobs.filter((j) => j.started_at);
      const finished = bJobs.filter((j) => j.finished_at);
      const lastFinish = Math.max(...finished.map((j) => ms(j.finished_at)));
      const rate = finished.length && lastFinish > t0 ? round1(finished.length / ((lastFinish - t0) / 1000)) : 0;
      const startLate = summary(bJobs.map((j) => (j.started_at ? ms(j.started_at) : readAt) - ms(j.execute_at)));
      const refused = bJobs.filter((j) => j.status === "failed" && /internal address|refused/.test(j.last_error ?? ""));
      if (refused.length) console.error(`[bench] ${name}: ${refused.length} of B's jobs failed at once (${refused[0]!.last_error}): the executors must run with HTTP_TARGET_ALLOW_PRIVATE=true to call 127.0.0.1`);
      const inSpan = (t: number) => t >= t0 && t <= spanEnd;
      results[name] = {
        a_jobs: aJobs,
        a_path: withA ? `/${aPath}` : null,
        b_jobs: B_JOBS,
        t0: new Date(t0).toISOString(),
        create_seconds: round1(createS),
        read_seconds_after_t0: round1((readAt - t0) / 1000),
        b_finished: finished.length,
        b_succeeded: bJobs.filter((j) => j.status === "succeeded").length,
        b_failed: bJobs.filter((j) => j.status === "failed").length,
        b_not_started: B_JOBS - started.length,
        b_not_called: B_JOBS - bJobs.filter((j) => firstCall.has(j.id)).length,
        b_rerun: bJobs.filter((j) => j.attempt > 1).length,
        b_start_lateness_ms: startLate,
        b_call_lateness_ms: summary(bJobs.map((j) => (firstCall.get(j.id) ?? readAt) - ms(j.execute_at))),
        b_finish_lateness_ms: summary(finished.map((j) => ms(j.finished_at) - ms(j.execute_at))),
        b_start_p99_below_250ms: startLate.p99 < 250,
        b_finished_per_s: rate,
        b_rate_ratio_to_alone: null as number | null,
        a_jobs_started_in_b_span: withA ? aJobsRead.filter((j) => j.started_at && inSpan(ms(j.started_at))).length : null,
        a_calls_in_b_span: withA ? aArrivals.filter((c) => inSpan(c.t)).length : null,
        a_jobs_called_in_b_span: withA ? new Set(aArrivals.filter((c) => inSpan(c.t)).map((c) => c.job)).size : null,
        a_calls_until_read: withA ? aArrivals.length : null,
        a_status_when_read: aStats,
        a_target_max_concurrency: withA ? aMax : null,
        b_target_max_concurrency: bMax,
        a_max_fraction_of_executor_slots: withA ? round3(aMax / slots) : null,
        a_max_fraction_of_fetch_slots: withA ? round3(aMax / fetchSlots) : null,
        a_inflight_max_per_s: withA ? series.a : null,
        a_calls_per_s: withA ? series.aCalls : null,
        b_inflight_max_per_s: series.b,
        b_calls_per_s: series.bCalls,
        stop_a: stopA,
      };
      const r = results[name];
      console.error(`[bench] ${name}: B start p99 ${r.b_start_lateness_ms.p99} ms, call p99 ${r.b_call_lateness_ms.p99} ms, ${r.b_finished}/${B_JOBS} finished; A max ${aMax} in flight${stopA ? `; A stopped (${stopA.method}) in ${stopA.seconds} s` : ""}`);
    }
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    target.stop();
  }

  const alone = results.alone;
  for (const r of Object.values(results)) if (alone && alone.b_finished_per_s > 0) r.b_rate_ratio_to_alone = round3(r.b_finished_per_s / alone.b_finished_per_s);

  // The table: one row per case.
  const cols: [string, number, (name: string, r: any) => string][] = [
    ["case", 6, (n) => n],
    ["A jobs", 7, (_, r) => String(r.a_jobs)],
    ["B fin", 8, (_, r) => `${r.b_finished}/${r.b_jobs}`],
    ["B start p50/p95/p99/max ms", 28, (_, r) => ["p50", "p95", "p99", "max"].map((k) => String(r.b_start_lateness_ms[k])).join("/") + (r.b_not_started ? " *" : "")],
    ["p99<250", 7, (_, r) => (r.b_start_p99_below_250ms ? "yes" : "NO")],
    ["B call p99 ms", 13, (_, r) => String(r.b_call_lateness_ms.p99)],
    ["B rate/s", 8, (_, r) => String(r.b_finished_per_s)],
    ["vs alone", 10, (_, r) => (r.b_rate_ratio_to_alone === null ? "-" : `${r.b_rate_ratio_to_alone}${r.b_rate_ratio_to_alone >= 0.9 ? "" : " <0.9"}`)],
    ["A starts in span", 16, (_, r) => (r.a_jobs_started_in_b_span === null ? "-" : `${r.a_jobs_started_in_b_span} (${r.a_calls_in_b_span} calls)`)],
    ["A max conc", 10, (_, r) => (r.a_target_max_concurrency === null ? "-" : String(r.a_target_max_concurrency))],
    ["B max conc", 10, (_, r) => String(r.b_target_max_concurrency)],
    ["A/slots", 7, (_, r) => (r.a_max_fraction_of_executor_slots === null ? "-" : String(r.a_max_fraction_of_executor_slots))],
    ["A/fetch cap", 11, (_, r) => (r.a_max_fraction_of_fetch_slots === null ? "-" : String(r.a_max_fraction_of_fetch_slots))],
  ];
  console.log(`\n== noisy tenant == (A: ${A_JOBS} jobs due at once; B: ${B_JOBS} jobs over ${B_SPAN_MS / 1000} s; equal weights; executor slots ${slots} = ${EXECUTOR_CONCURRENCY} x ${executors}, fetch cap ${fetchSlots})`);
  console.log("targets: B start p99 < 250 ms; B rate at least 0.9 of alone");
  console.log(cols.map(([h, w]) => h.padEnd(w)).join("  "));
  for (const [n, r] of Object.entries(results)) console.log(cols.map(([, w, f]) => f(n, r).padEnd(w)).join("  ").trimEnd());
  if (Object.values(results).some((r) => r.b_not_started)) console.log("* some of B's jobs had not started when read: they count at their lateness then (a lower bound)");
  console.log(
    `JSON ${JSON.stringify({
      bench: "noisy tenant",
      cluster: { ...cluster, executors_used: executors },
      params: { cases: CASES, a_jobs: A_JOBS, b_jobs: B_JOBS, b_span_s: B_SPAN_MS / 1000, slow_ms: SLOW_MS, wait_s: WAIT_MS / 1000, a_timeout_ms: A_TIMEOUT_MS ?? null, a_max_attempts: A_MAX_ATTEMPTS ?? null, stop: admin ? "admin_delete" : "cancel" },
      slots: { executor_concurrency: EXECUTOR_CONCURRENCY, executors, executor_slots: slots, fetch_cap_per_process: FETCH_CAP, fetch_slots: fetchSlots },
      targets: { b_start_p99_ms_below: 250, b_rate_ratio_to_alone_at_least: 0.9 },
      cases: results,
    })}`,
  );
}

try {
  await main();
} catch (e) {
  console.error(`noisy-tenant: ${e instanceof Error ? e.message : String(e)}`);
  process.exitCode = 1;
}
