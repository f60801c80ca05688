/**
 * A noisy tenant, as its neighbour sees it, through the public API only, against a running
 * cluster (`bash ops/cluster-up.sh`). The HTTP targets are a server in this process on
 * 127.0.0.1 (a free port): /slow answers after SLOW_MS (default 2,000 ms), /fast at once, /hang
 * never (the call is held until the executor gives up: the job's timeout, HTTP_TARGET_TIMEOUT on
 * the cluster, 10 s by default); /cap after CAP_HOLD_MS (default 200 ms), /paused, /prio and
 * /fast2 at once (the cases below). The server counts calls in flight per path: the largest number
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
 * Three more cases, each with two fresh users of weight 1 and a table of its own (the figures
 * also go into the JSON line's `cases`), run only when named (CASES=cap,pause,priority):
 *   cap       user C gets max_running CAP_MAX_RUNNING (default 10) through the admin API (PATCH
 *             /api/v1/admin/users/{id}; needs ADMIN_TOKEN) and has CAP_JOBS (default 5,000) jobs
 *             to /cap, all due at T0; user D has B_JOBS to /fast over B_SPAN_S, as B. The bench
 *             waits until C's jobs are done (at most CAP_TIMEOUT_S, default 200 s, after T0;
 *             ideally CAP_JOBS x CAP_HOLD_MS / cap = 100 s). Figures: the most calls in flight at
 *             /cap (exact; and their mean over 50 ms samples while C is called), the most of C's
 *             jobs running (and scheduled + running) in C's GET /me/jobs/stats read every 100 ms
 *             (both counts from one statement per database; the admin list of running jobs reads
 *             the same rows and sends them), the gaps between consecutive arrivals of C's calls
 *             from the first to the last (largest, p99: how soon a freed place is used), C's
 *             calls/s against the ideal cap / CAP_HOLD_MS, D's lateness as B's.
 *   pause     user P pauses itself (POST /me/pause), then creates PAUSE_JOBS (default 10,000) jobs
 *             to /paused, due over 2 s from T0; user Q as B. PAUSE_HOLD_S (default 30) s after T0:
 *             P's calls at the target (should be 0) and P's jobs started (stats); then P resumes
 *             (POST /me/resume) and the bench waits until P's jobs are done (at most
 *             PAUSE_TIMEOUT_S, default 180 s, after the resume). Figures: P's calls while paused,
 *             P's jobs finished, lost (created - finished), duplicated (more than one call per
 *             x-job-id), the time from the resume to P's first and last call, the fraction of
 *             consecutive calls after the resume in due order (execute_at never earlier than the
 *             call before's) and the most a call came behind one due later, Q's lateness.
 *   priority  user R creates PRIO_LOW_JOBS (default 1,000) "low" then PRIO_HIGH_JOBS (default 10)
 *             "high" jobs to /prio, user S PRIO_S_JOBS (default 1,000) normal ones to /fast2, all
 *             due at T0; the bench waits until both are done (at most WAIT_S after T0). Figures:
 *             the rank of each of R's high jobs among R's jobs in the order of their first calls
 *             (ideal: the first PRIO_HIGH_JOBS or a few more), S's share of the first 200 calls at
 *             /prio and /fast2 together (fair share: about 50 %).
 * Leftovers (jobs not done by the timeout) are stopped as A's are.
 *
 *   SCHEDULERS=3 EXECUTORS=2 bash ops/cluster-up.sh && EXECUTORS=2 bun bench/noisy-tenant.ts
 *   EXECUTORS=2 ADMIN_TOKEN=$(cat .local/admin-token) bun bench/noisy-tenant.ts   (faster stops)
 *   CASES=slow A_JOBS=20000 B_JOBS=300 B_SPAN_S=15 SLOW_MS=2000 bun bench/noisy-tenant.ts
 *   API_URL=http://127.0.0.1:8080 STOP=cancel bun bench/noisy-tenant.ts
 *   CASES=cap,pause,priority EXECUTORS=2 ADMIN_TOKEN=$(cat .local/admin-token) bun bench/noisy-tenant.ts
 *   CASES=cap CAP_JOBS=1000 ADMIN_TOKEN=$(cat .local/admin-token) bun bench/noisy-tenant.ts   (C: 20 s ideally)
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
  CASES                    alone,slow,hang   (any of alone, slow, hang, cap, pause, priority, in the order given)
  A_JOBS                   20000   A's jobs, all due at T0 (to /slow or /hang)
  B_JOBS                   300     B's jobs to /fast, due evenly over B_SPAN_S from T0
  B_SPAN_S                 15
  SLOW_MS                  2000    how long /slow holds a call
  LEAD_S                   max(8, jobs/12000 + 4)   T0 after the start of creation
  WAIT_S                   60      how long after B's span to wait for B's jobs to finish
  A_TIMEOUT_MS             unset   A's target.timeout_ms (unset: HTTP_TARGET_TIMEOUT, 10 s)
  A_MAX_ATTEMPTS           unset   (unset: JOB_DEFAULT_MAX_ATTEMPTS, 3)
  A_MAX_CONCURRENT         unset   A's own target limit (PUT /api/v1/me/targets/{host}): calls at once
  STOP                     auto    auto (admin with ADMIN_TOKEN, else cancel) | admin | cancel
  ADMIN_TOKEN              unset   the cluster's admin token: STOP=auto then deletes A (one call)
  QUIET_TIMEOUT_S          180     longest wait for A to stop between cases
  PAUSE_S                  5       pause after A has stopped, before the next case
  EXECUTORS                the executors answering /metrics, else 1
  EXECUTOR_CONCURRENCY     4000    as the cluster's executors run with
  BUN_CONFIG_MAX_HTTP_REQUESTS 256 Bun's per-process fetch limit, as the executors run with
  TARGET_PORT              0 (a free port)
 cap (C capped at CAP_MAX_RUNNING jobs running; D as B; needs ADMIN_TOKEN):
  CAP_JOBS                 5000    C's jobs to /cap, all due at T0
  CAP_HOLD_MS              200     how long /cap holds a call
  CAP_MAX_RUNNING          10      C's max_running, set through the admin API
  CAP_TIMEOUT_S            200     longest wait for C's jobs after T0 (ideal: CAP_JOBS x hold / cap)
 pause (P paused, then resumed; Q as B):
  PAUSE_JOBS               10000   P's jobs to /paused, due over 2 s from T0
  PAUSE_HOLD_S             30      P stays paused this long after T0
  PAUSE_TIMEOUT_S          180     longest wait for P's jobs after the resume
 priority (R: low then high jobs; S: normal jobs; all due at T0):
  PRIO_LOW_JOBS            1000
  PRIO_HIGH_JOBS           10
  PRIO_S_JOBS              1000

Prints a table (one row per case; cap, pause and priority each have a table of their own) and one
"JSON {...}" line; it does not check the figures.`;

/** An error whose message is the whole story: printed without a stack. */
class BenchError extends Error {}

type PathName = "slow" | "fast" | "hang" | "cap" | "paused" | "prio" | "fast2";
const PATHS: readonly PathName[] = ["slow", "fast", "hang", "cap", "paused", "prio", "fast2"];
type CaseName = "alone" | "slow" | "hang" | "cap" | "pause" | "priority";
const CASE_NAMES: readonly CaseName[] = ["alone", "slow", "hang", "cap", "pause", "priority"];
/** The cases of A against B (one table); the others have a table each. */
const AB_CASES: readonly CaseName[] = ["alone", "slow", "hang"];
/** A record with a value for every path. */
const perPath = <T>(init: () => T) => Object.fromEntries(PATHS.map((p) => [p, init()])) as Record<PathName, T>;

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
 * The HTTP targets: /slow answers after slowMs, /cap after capMs, /hang when the caller gives
 * up, the others (/fast, /paused, /prio, /fast2) at once.
 * Counts calls in flight per path: the maximum since reset() (exact, at every call) and the
 * maximum per second from `epoch` (at every call and every 100 ms), and keeps every call's
 * arrival time and job id.
 */
class TargetServer {
  readonly inflight: Record<PathName, number> = perPath(() => 0);
  max: Record<PathName, number> = perPath(() => 0);
  /** Per path: the largest in flight in second k after epoch. */
  series: Record<PathName, number[]> = perPath(() => []);
  /** Per path: calls arrived in second k after epoch. */
  callSeries: Record<PathName, number[]> = perPath(() => []);
  /** Per path: every call's arrival (ms), X-Job-Id and arrival number (one count over every path). */
  arrivals: Record<PathName, { t: number; job: string; n: number }[]> = perPath(() => []);
  private calls = 0;
  epoch = Date.now();
  private readonly server: ReturnType<typeof Bun.serve>;
  private readonly sampler: ReturnType<typeof setInterval>;
  /** Seconds of series kept (a case longer than this keeps its first SERIES_MAX seconds). */
  static readonly SERIES_MAX = 3_600;

  constructor(
    private readonly slowMs: number,
    port: number,
    private readonly capMs: number,
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
    this.arrivals[path].push({ t: Date.now(), job: req.headers.get("x-job-id") ?? "", n: this.calls++ });
    this.touch(this.callSeries, path, 1, true);
    this.inflight[path]++;
    if (this.inflight[path] > this.max[path]) this.max[path] = this.inflight[path];
    this.touch(this.series, path, this.inflight[path]);
    try {
      if (path === "slow") await held(req.signal, this.slowMs);
      else if (path === "cap") await held(req.signal, this.capMs);
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

/** What the cap, pause and priority cases share with main: the target server, settings, stops. */
interface Ctx {
  target: TargetServer;
  /** The admin token stops use (null: cancels one by one), as STOP decides. */
  admin: string | null;
  /** ADMIN_TOKEN whatever STOP says: sign-ups, and the cap case's PATCH. */
  adminToken: string | null;
  stop: string;
  quietTimeoutMs: number;
  waitMs: number;
  bJobs: number;
  bSpanMs: number;
  leadMs: (jobs: number) => number;
  /** Names the user an interrupted bench leaves jobs (or a pause) behind for; null: none. */
  busy: (u: User | null, note?: string) => void;
}

const httpTarget = (target: TargetServer, path: PathName) => ({ target: { url: target.url(path), method: "POST" } });
const sumOf = (s: Stats, statuses: readonly string[]) => statuses.reduce((a, st) => a + (s[st] ?? 0), 0);
const finishedOf = (s: Stats) => sumOf(s, ["succeeded", "failed"]);

/**
 * T0 (LEAD_S after now), the target's counts reset to it, then `create(t0)`; throws if creating
 * took until T0 (less than 0.5 s before it).
 */
async function createFor(name: string, ctx: Ctx, jobs: number, what: string, create: (t0: number) => Promise<unknown>) {
  const created = Date.now();
  const t0 = created + ctx.leadMs(jobs);
  ctx.target.reset(t0);
  await create(t0);
  const createS = (Date.now() - created) / 1000;
  if (Date.now() > t0 - 500) throw new BenchError(`${name}: creating ${jobs} jobs took ${createS.toFixed(1)} s, past (or within 0.5 s of) T0; raise LEAD_S`);
  console.error(`[bench] ${name}: ${what} created in ${createS.toFixed(1)} s; T0 in ${((t0 - Date.now()) / 1000).toFixed(1)} s`);
  return { t0, createS: round1(createS) };
}

/** Polls the users' stats every `everyMs` until none has a job unfinished, or `until`; the last stats, in order. */
async function waitDone(users: User[], until: number, everyMs = 500): Promise<Stats[]> {
  for (;;) {
    const s = await Promise.all(users.map((u) => stats(u.token)));
    if (s.every((x) => unfinished(x) === 0) || Date.now() >= until) return s;
    await Bun.sleep(everyMs);
  }
}

/** Waits (at most maxMs) until nothing is in flight at the paths and nothing arrived for idleMs, so late calls (duplicates) are counted. */
async function settle(target: TargetServer, paths: PathName[], idleMs = 2_000, maxMs = 10_000): Promise<void> {
  const until = Date.now() + maxMs;
  while (Date.now() < until && paths.some((p) => target.inflight[p] > 0 || Date.now() - target.lastArrival(p) < idleMs)) await Bun.sleep(200);
}

/**
 * A neighbour's figures (D's, Q's: B_JOBS jobs to /fast over B_SPAN_S from T0), as B's: waits
 * until its jobs are done (or WAIT_S after the span), then reads them and the calls at /fast.
 * Lateness of a job not started (not called) when read counts at the read, a lower bound.
 */
async function neighbour(u: User, ctx: Ctx, t0: number) {
  const spanEnd = t0 + ctx.bSpanMs;
  await Bun.sleep(Math.max(0, spanEnd + 1_000 - Date.now()));
  let s = await stats(u.token);
  while (unfinished(s) > 0 && Date.now() < spanEnd + ctx.waitMs) {
    await Bun.sleep(1_000);
    s = await stats(u.token);
  }
  const readAt = Date.now();
  const arrivals = [...ctx.target.arrivals.fast];
  const views = await listJobs(u.token);
  const firstCall = new Map<string, number>();
  for (const c of arrivals) if (!firstCall.has(c.job)) firstCall.set(c.job, c.t);
  const finished = views.filter((j) => j.finished_at);
  const lastFinish = Math.max(...finished.map((j) => ms(j.finished_at)));
  const startLate = summary(views.map((j) => (j.started_at ? ms(j.started_at) : readAt) - ms(j.execute_at)));
  return {
    unfinished: unfinished(s),
    jobs: views.length,
    finished: finished.length,
    not_started: views.filter((j) => !j.started_at).length,
    not_called: views.filter((j) => !firstCall.has(j.id)).length,
    start_lateness_ms: startLate,
    call_lateness_ms: summary(views.map((j) => (firstCall.get(j.id) ?? readAt) - ms(j.execute_at))),
    start_p99_below_250ms: startLate.p99 < 250,
    finished_per_s: finished.length && lastFinish > t0 ? round1(finished.length / ((lastFinish - t0) / 1000)) : 0,
    read_seconds_after_t0: round1((readAt - t0) / 1000),
  };
}

/**
 * cap: C, capped at `maxRunning` through the admin API, has `jobs` jobs to /cap (held holdMs)
 * due at T0; D has B_JOBS to /fast over B_SPAN_S. Runs until C's jobs are done (or timeoutMs
 * after T0), sampling the calls in flight at /cap every 50 ms and C's stats every 100 ms.
 */
async function capCase(ctx: Ctx, cfg: { jobs: number; holdMs: number; maxRunning: number; timeoutMs: number }) {
  const { target } = ctx;
  const [c, d] = await Promise.all([signUp("cap_C", ctx.adminToken), signUp("cap_D", ctx.adminToken)]);
  ctx.busy(c, "(C) may still have jobs to /cap; they fail once their target is gone");
  let view: any;
  try {
    view = (await client.call("PATCH", `/api/v1/admin/users/${c.id}`, { max_running: cfg.maxRunning }, ctx.adminToken!)).data;
  } catch (e) {
    throw new BenchError(`cap: setting max_running failed: ${(e as Error).message} (is ADMIN_TOKEN the cluster's?)`);
  }
  if (view?.max_running !== cfg.maxRunning) throw new BenchError(`cap: PATCH /api/v1/admin/users/${c.id} answered max_running ${view?.max_running}, not ${cfg.maxRunning}`);
  const { t0, createS } = await createFor("cap", ctx, cfg.jobs + ctx.bJobs, `${cfg.jobs} C jobs to /cap (max_running ${cfg.maxRunning}), ${ctx.bJobs} D jobs to /fast`, (t0) =>
    Promise.all([
      client.create(c.token, () => t0, cfg.jobs, "C cap", httpTarget(target, "cap")),
      client.create(d.token, (k) => t0 + (k * ctx.bSpanMs) / ctx.bJobs, ctx.bJobs, "D cap", httpTarget(target, "fast")),
    ]),
  );

  // Calls in flight at /cap every 50 ms; C's stats every 100 ms (a poll never overlaps the previous one).
  const inflight: { t: number; v: number }[] = [];
  const sampler = setInterval(() => inflight.push({ t: Date.now(), v: target.inflight.cap }), 50);
  const poll = { on: true, latest: null as Stats | null, runningMax: 0, inFlightMax: 0, polls: 0, errors: 0 };
  const poller = (async () => {
    while (poll.on) {
      const began = Date.now();
      try {
        const s = await stats(c.token);
        poll.latest = s;
        poll.polls++;
        poll.runningMax = Math.max(poll.runningMax, s.running ?? 0);
        poll.inFlightMax = Math.max(poll.inFlightMax, sumOf(s, ["scheduled", "running"]));
      } catch {
        poll.errors++;
      }
      await Bun.sleep(Math.max(0, began + 100 - Date.now()));
    }
  })();
  const until = t0 + cfg.timeoutMs;
  const waitC = async () => {
    while (Date.now() < until && !(poll.latest && unfinished(poll.latest) === 0)) await Bun.sleep(250);
  };
  let dFig: Awaited<ReturnType<typeof neighbour>>;
  try {
    [dFig] = await Promise.all([neighbour(d, ctx, t0), waitC()]);
  } finally {
    poll.on = false;
    clearInterval(sampler);
    await poller;
  }
  const cStats = await stats(c.token);
  const cLeft = unfinished(cStats);
  if (cLeft === 0) await settle(target, ["cap"]);
  const readAt = Date.now();
  const arrivals = [...target.arrivals.cap];
  const maxConc = target.max.cap;
  const series = { inflight: trimmed(target.series.cap), calls: trimmed(target.callSeries.cap) };
  console.error(`[bench] cap: C ${cLeft === 0 ? "done" : `${cLeft} unfinished`} ${((readAt - t0) / 1000).toFixed(1)} s after T0`);
  const stopC = cLeft > 0 ? await stopUser(c, "cap", target, ctx.admin, ctx.stop, ctx.quietTimeoutMs) : null;
  if (dFig.unfinished > 0) await stopUser(d, "fast", target, null, "cancel", ctx.quietTimeoutMs);
  ctx.busy(null);

  // Gaps between consecutive arrivals of C's calls, from the first to the last (C had jobs waiting throughout).
  const first = arrivals[0]?.t ?? NaN;
  const last = arrivals[arrivals.length - 1]?.t ?? NaN;
  const gaps = summary(arrivals.slice(1).map((a, i) => a.t - arrivals[i]!.t));
  const rate = arrivals.length ? round1(arrivals.length / ((last - first + cfg.holdMs) / 1000)) : 0;
  const ideal = round1((cfg.maxRunning * 1000) / cfg.holdMs);
  const during = inflight.filter((x) => x.t >= first && x.t <= last);
  return {
    c_jobs: cfg.jobs,
    c_max_running: cfg.maxRunning,
    cap_hold_ms: cfg.holdMs,
    d_jobs: ctx.bJobs,
    t0: new Date(t0).toISOString(),
    create_seconds: createS,
    read_seconds_after_t0: round1((readAt - t0) / 1000),
    c_done: cLeft === 0,
    c_finished: finishedOf(cStats),
    c_status_when_read: cStats,
    c_calls: arrivals.length,
    c_jobs_called: new Set(arrivals.map((a) => a.job)).size,
    c_first_call_after_t0_ms: arrivals.length ? first - t0 : null,
    c_last_call_after_t0_ms: arrivals.length ? last - t0 : null,
    c_target_max_concurrency: maxConc,
    c_target_over_cap: maxConc > cfg.maxRunning,
    c_target_concurrency_mean: during.length ? round1(during.reduce((a, x) => a + x.v, 0) / during.length) : null,
    c_target_at_cap_fraction: during.length ? round3(during.filter((x) => x.v >= cfg.maxRunning).length / during.length) : null,
    c_target_samples: during.length,
    c_api_running_max: poll.runningMax,
    c_api_scheduled_or_running_max: poll.inFlightMax,
    c_api_polls: poll.polls,
    c_api_poll_errors: poll.errors,
    c_call_gap_ms: gaps,
    c_calls_per_s: rate,
    c_ideal_calls_per_s: ideal,
    c_rate_ratio_to_ideal: ideal > 0 ? round3(rate / ideal) : null,
    c_inflight_max_per_s: series.inflight,
    c_calls_per_s_series: series.calls,
    d: dFig,
    stop_c: stopC,
  };
}

/**
 * pause: P pauses itself, creates `jobs` jobs to /paused due over spreadMs from T0, stays paused
 * until holdMs after T0, resumes; Q has B_JOBS to /fast over B_SPAN_S.
 */
async function pauseCase(ctx: Ctx, cfg: { jobs: number; holdMs: number; timeoutMs: number; spreadMs: number }) {
  const { target } = ctx;
  const [p, q] = await Promise.all([signUp("pause_P", ctx.adminToken), signUp("pause_Q", ctx.adminToken)]);
  ctx.busy(p, "(P) is paused with jobs waiting: resume it (POST /api/v1/me/resume) or delete it");
  const paused = (await client.call("POST", "/api/v1/me/pause", undefined, p.token)).data;
  if (paused?.paused !== true) throw new BenchError(`pause: POST /api/v1/me/pause answered paused ${paused?.paused}`);
  const dueAt = new Map<string, number>();
  const at = (t0: number) => (k: number) => t0 + Math.floor((k * cfg.spreadMs) / cfg.jobs);
  const { t0, createS } = await createFor("pause", ctx, cfg.jobs + ctx.bJobs, `${cfg.jobs} jobs of P (paused) to /paused, ${ctx.bJobs} Q jobs to /fast`, async (t0) => {
    const [created] = await Promise.all([
      client.create(p.token, at(t0), cfg.jobs, "P pause", httpTarget(target, "paused")),
      client.create(q.token, (k) => t0 + (k * ctx.bSpanMs) / ctx.bJobs, ctx.bJobs, "Q pause", httpTarget(target, "fast")),
    ]);
    created.ids.forEach((id, k) => dueAt.set(id, at(t0)(k)));
  });
  const qRead = neighbour(q, ctx, t0);
  qRead.catch(() => {}); // awaited below; this only keeps a failure from being unhandled meanwhile

  // PAUSE_HOLD_S after T0: what P got while paused; then the resume, and P's jobs done.
  await Bun.sleep(Math.max(0, t0 + cfg.holdMs - Date.now()));
  const callsAtHold = target.arrivals.paused.length;
  const heldStats = await stats(p.token);
  const resumeAt = Date.now();
  const resumed = (await client.call("POST", "/api/v1/me/resume", undefined, p.token)).data;
  const resumeRequestMs = Date.now() - resumeAt;
  if (resumed?.paused !== false) throw new BenchError(`pause: POST /api/v1/me/resume answered paused ${resumed?.paused}`);
  ctx.busy(p, "(P) may still have jobs to /paused; they fail once their target is gone");
  console.error(`[bench] pause: ${callsAtHold} calls of P while paused, ${sumOf(heldStats, ["running", "retrying", "succeeded", "failed"])} jobs started; resumed ${((resumeAt - t0) / 1000).toFixed(1)} s after T0`);
  const [pStats] = await waitDone([p], Date.now() + cfg.timeoutMs);
  const pLeft = unfinished(pStats!);
  if (pLeft === 0) await settle(target, ["paused"]);
  const readAt = Date.now();
  const arrivals = [...target.arrivals.paused];
  const pFinal = await stats(p.token);
  const qFig = await qRead;
  console.error(`[bench] pause: P ${pLeft === 0 ? "done" : `${pLeft} unfinished`} ${((readAt - resumeAt) / 1000).toFixed(1)} s after the resume`);
  const stopP = pLeft > 0 ? await stopUser(p, "paused", target, ctx.admin, ctx.stop, ctx.quietTimeoutMs) : null;
  if (qFig.unfinished > 0) await stopUser(q, "fast", target, null, "cancel", ctx.quietTimeoutMs);
  ctx.busy(null);

  const whilePaused = arrivals.filter((a) => a.t < resumeAt).length;
  const after = arrivals.filter((a) => a.t >= resumeAt);
  const perJob = new Map<string, number>();
  for (const a of arrivals) perJob.set(a.job, (perJob.get(a.job) ?? 0) + 1);
  const counts = [...perJob.values()];
  const called = [...dueAt.keys()].filter((id) => perJob.has(id)).length;
  // Due order of the calls after the resume: consecutive pairs whose execute_at does not go back,
  // and the most a call's execute_at is before that of a call that came earlier.
  const dues = after.map((a) => dueAt.get(a.job)).filter((x): x is number => x !== undefined);
  let inOrder = 0;
  let latest = -Infinity;
  let behind = 0;
  dues.forEach((due, i) => {
    if (i > 0 && due >= dues[i - 1]!) inOrder++;
    latest = Math.max(latest, due);
    behind = Math.max(behind, latest - due);
  });
  const finished = finishedOf(pFinal);
  return {
    p_jobs: cfg.jobs,
    p_due_spread_ms: cfg.spreadMs,
    pause_hold_s: cfg.holdMs / 1000,
    q_jobs: ctx.bJobs,
    t0: new Date(t0).toISOString(),
    create_seconds: createS,
    p_calls_while_paused: whilePaused,
    p_calls_at_hold_end: callsAtHold,
    p_no_calls_while_paused: whilePaused === 0,
    p_started_while_paused: sumOf(heldStats, ["running", "retrying", "succeeded", "failed"]),
    p_dispatched_while_paused: sumOf(heldStats, ["scheduled", "running", "retrying", "succeeded", "failed"]),
    p_status_at_hold_end: heldStats,
    resume_seconds_after_t0: round1((resumeAt - t0) / 1000),
    resume_request_ms: resumeRequestMs,
    read_seconds_after_resume: round1((readAt - resumeAt) / 1000),
    p_done: pLeft === 0,
    p_finished: finished,
    p_succeeded: pFinal.succeeded ?? 0,
    p_status_when_read: pFinal,
    p_lost: cfg.jobs - finished,
    p_not_called: cfg.jobs - called,
    p_calls: arrivals.length,
    p_duplicate_jobs: counts.filter((n) => n > 1).length,
    p_extra_calls: counts.reduce((a, n) => a + n - 1, 0),
    resume_to_first_call_ms: after.length ? after[0]!.t - resumeAt : null,
    resume_to_last_call_ms: after.length ? after[after.length - 1]!.t - resumeAt : null,
    p_calls_per_s_after_resume: after.length > 1 ? round1(after.length / ((after[after.length - 1]!.t - after[0]!.t) / 1000 || 0.001)) : null,
    p_calls_in_due_order_fraction: dues.length > 1 ? round3(inOrder / (dues.length - 1)) : null,
    p_call_max_behind_due_ms: dues.length ? behind : null,
    p_inflight_max_per_s: trimmed(target.series.paused),
    p_calls_per_s_series: trimmed(target.callSeries.paused),
    q: qFig,
    stop_p: stopP,
  };
}

/**
 * priority: R creates `low` low-priority then `high` high-priority jobs to /prio, S `sJobs`
 * normal ones to /fast2, all due at T0; runs until both are done (or WAIT_S after T0).
 */
async function priorityCase(ctx: Ctx, cfg: { low: number; high: number; sJobs: number; firstN: number }) {
  const { target } = ctx;
  const [r, s] = await Promise.all([signUp("priority_R", ctx.adminToken), signUp("priority_S", ctx.adminToken)]);
  ctx.busy(r, "(R) may still have jobs to /prio; they fail once their target is gone");
  const highIds: string[] = [];
  const { t0, createS } = await createFor("priority", ctx, cfg.low + cfg.high + cfg.sJobs, `${cfg.low} low then ${cfg.high} high R jobs to /prio, ${cfg.sJobs} S jobs to /fast2`, (t0) =>
    Promise.all([
      (async () => {
        if (cfg.low) await client.create(r.token, () => t0, cfg.low, "R low", { ...httpTarget(target, "prio"), priority: "low" });
        highIds.push(...(await client.create(r.token, () => t0, cfg.high, "R high", { ...httpTarget(target, "prio"), priority: "high" })).ids);
      })(),
      cfg.sJobs ? client.create(s.token, () => t0, cfg.sJobs, "S", httpTarget(target, "fast2")) : null,
    ]),
  );
  await Bun.sleep(Math.max(0, t0 + 1_000 - Date.now()));
  const [rStats, sStats] = await waitDone([r, s], t0 + ctx.waitMs);
  const rLeft = unfinished(rStats!);
  const sLeft = unfinished(sStats!);
  if (rLeft + sLeft === 0) await settle(target, ["prio", "fast2"]);
  const readAt = Date.now();
  const prio = [...target.arrivals.prio];
  const fast2 = [...target.arrivals.fast2];
  console.error(`[bench] priority: R ${rLeft === 0 ? "done" : `${rLeft} unfinished`}, S ${sLeft === 0 ? "done" : `${sLeft} unfinished`} ${((readAt - t0) / 1000).toFixed(1)} s after T0`);
  const stopR = rLeft > 0 ? await stopUser(r, "prio", target, ctx.admin, ctx.stop, ctx.quietTimeoutMs) : null;
  const stopS = sLeft > 0 ? await stopUser(s, "fast2", target, null, "cancel", ctx.quietTimeoutMs) : null;
  ctx.busy(null);

  // Rank of each of R's jobs by its first call's arrival among R's calls.
  const rank = new Map<string, number>();
  for (const a of prio) if (!rank.has(a.job)) rank.set(a.job, rank.size + 1);
  const firstCall = new Map<string, number>();
  for (const a of prio) if (!firstCall.has(a.job)) firstCall.set(a.job, a.t);
  const ranks = highIds.map((id) => rank.get(id)).filter((x): x is number => x !== undefined).sort((a, b) => a - b);
  const highCalls = highIds.map((id) => firstCall.get(id)).filter((x): x is number => x !== undefined);
  // The first calls at both paths in arrival order (the server numbers every call).
  const firstCalls = [...prio.map((a) => ({ n: a.n, s: false })), ...fast2.map((a) => ({ n: a.n, s: true }))].sort((a, b) => a.n - b.n).slice(0, cfg.firstN);
  return {
    r_low_jobs: cfg.low,
    r_high_jobs: cfg.high,
    s_jobs: cfg.sJobs,
    t0: new Date(t0).toISOString(),
    create_seconds: createS,
    read_seconds_after_t0: round1((readAt - t0) / 1000),
    r_high_ranks: ranks,
    r_high_rank_max: ranks.length ? ranks[ranks.length - 1]! : null,
    r_high_not_called: cfg.high - ranks.length,
    r_high_last_first_call_after_t0_ms: highCalls.length ? Math.max(...highCalls) - t0 : null,
    r_first_call_after_t0_ms: prio.length ? prio[0]!.t - t0 : null,
    first_calls_counted: firstCalls.length,
    s_share_of_first_calls: firstCalls.length ? round3(firstCalls.filter((x) => x.s).length / firstCalls.length) : null,
    r_calls: prio.length,
    s_calls: fast2.length,
    r_done: rLeft === 0,
    s_done: sLeft === 0,
    r_status_when_read: rStats,
    s_status_when_read: sStats,
    stop_r: stopR,
    stop_s: stopS,
  };
}

/** Prints one case's table: a title, its targets, a header and one row. */
function printRow(title: string, targets: string, cols: [string, number, (r: any) => string][], r: any): void {
  console.log(`\n${title}`);
  console.log(targets);
  console.log(cols.map(([h, w]) => h.padEnd(w)).join("  "));
  console.log(cols.map(([, w, f]) => f(r).padEnd(w)).join("  ").trimEnd());
}
const lateness = (l: { p50: number; p95: number; p99: number; max: number }) => [l.p50, l.p95, l.p99, l.max].join("/");

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
  const A_MAX_CONCURRENT = optionalNum("A_MAX_CONCURRENT", 1, 100_000);
  const STOP = process.env.STOP ?? "auto";
  if (!["auto", "admin", "cancel"].includes(STOP)) throw new BenchError(`STOP=${STOP}: expected auto, admin or cancel`);
  const EXECUTOR_CONCURRENCY = num("EXECUTOR_CONCURRENCY", 4_000, { min: 1 });
  const FETCH_CAP = num("BUN_CONFIG_MAX_HTTP_REQUESTS", 256, { min: 1 });
  const TARGET_PORT = num("TARGET_PORT", 0);
  const leadMs = (jobs: number) => (process.env.LEAD_S ? num("LEAD_S", 8, { integer: false }) * 1000 : Math.max(8_000, (jobs / 12_000) * 1000 + 4_000));
  const CAP_JOBS = num("CAP_JOBS", 5_000, { min: 1 });
  const CAP_HOLD_MS = num("CAP_HOLD_MS", 200, { min: 1 });
  const CAP_MAX_RUNNING = num("CAP_MAX_RUNNING", 10, { min: 1 });
  const CAP_TIMEOUT_MS = num("CAP_TIMEOUT_S", 200, { integer: false }) * 1000;
  const PAUSE_JOBS = num("PAUSE_JOBS", 10_000, { min: 1 });
  const PAUSE_HOLD_MS = num("PAUSE_HOLD_S", 30, { integer: false }) * 1000;
  const PAUSE_TIMEOUT_MS = num("PAUSE_TIMEOUT_S", 180, { integer: false }) * 1000;
  const PRIO_LOW_JOBS = num("PRIO_LOW_JOBS", 1_000);
  const PRIO_HIGH_JOBS = num("PRIO_HIGH_JOBS", 10, { min: 1 });
  const PRIO_S_JOBS = num("PRIO_S_JOBS", 1_000);
  const adminToken = process.env.ADMIN_TOKEN || null;
  if (CASES.includes("cap") && !adminToken) throw new BenchError("CASES=cap needs ADMIN_TOKEN to set C's max_running (the cluster's: ADMIN_TOKEN=$(cat .local/admin-token))");

  await preflight();
  const admin = STOP === "cancel" ? null : process.env.ADMIN_TOKEN || null;
  if (STOP === "admin" && !admin) throw new BenchError("STOP=admin needs ADMIN_TOKEN (the cluster's: ADMIN_TOKEN=$(cat .local/admin-token))");
  const cluster = await clusterShape(client.base);
  const executors = process.env.EXECUTORS ? num("EXECUTORS", 1, { min: 1 }) : cluster.executors_answering_metrics || 1;
  const slots = EXECUTOR_CONCURRENCY * executors;
  const fetchSlots = Math.min(EXECUTOR_CONCURRENCY, FETCH_CAP) * executors;

  const target = new TargetServer(SLOW_MS, TARGET_PORT, CAP_HOLD_MS);
  let current: { user: User; note: string } | null = null;
  const onSignal = () => {
    target.stop();
    if (current) console.error(`\n[bench] interrupted: user ${current.user.id} ${current.note}`);
    process.exit(130);
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);

  const results: Record<string, any> = {};
  try {
    console.error(`[bench] target server on 127.0.0.1:${target.port}; API ${client.base}; executors ${executors} (slots ${slots}, fetch cap ${fetchSlots}); stop A by ${admin ? "admin delete" : "cancels"}`);
    const ctx: Ctx = {
      target,
      admin,
      adminToken,
      stop: STOP,
      quietTimeoutMs: QUIET_TIMEOUT_MS,
      waitMs: WAIT_MS,
      bJobs: B_JOBS,
      bSpanMs: B_SPAN_MS,
      leadMs,
      busy: (u, note = "") => (current = u ? { user: u, note } : null),
    };
    for (const [i, name] of (CASES as CaseName[]).entries()) {
      if (i > 0 && PAUSE_MS > 0) await Bun.sleep(PAUSE_MS);
      if (name === "cap") {
        results[name] = await capCase(ctx, { jobs: CAP_JOBS, holdMs: CAP_HOLD_MS, maxRunning: CAP_MAX_RUNNING, timeoutMs: CAP_TIMEOUT_MS });
        continue;
      }
      if (name === "pause") {
        results[name] = await pauseCase(ctx, { jobs: PAUSE_JOBS, holdMs: PAUSE_HOLD_MS, timeoutMs: PAUSE_TIMEOUT_MS, spreadMs: 2_000 });
        continue;
      }
      if (name === "priority") {
        results[name] = await priorityCase(ctx, { low: PRIO_LOW_JOBS, high: PRIO_HIGH_JOBS, sJobs: PRIO_S_JOBS, firstN: 200 });
        continue;
      }
      const aPath: PathName = name === "hang" ? "hang" : "slow";
      const withA = name !== "alone";
      const [a, b] = await Promise.all([withA ? signUp(`${name}_A`, admin) : null, signUp(`${name}_B`, admin)]);
      current = a ? { user: a, note: "(A) may still have jobs; they fail once their target is gone" } : null;
      const aJobs = withA ? A_JOBS : 0;
      const created = Date.now();
      const t0 = created + leadMs(aJobs + B_JOBS);
      target.reset(t0);
      const aTarget = { url: target.url(aPath), method: "POST", ...(A_TIMEOUT_MS ? { timeout_ms: A_TIMEOUT_MS } : {}) };
      // A's own limit on its target's host (B's calls to the same host are not bound by it).
      if (a && A_MAX_CONCURRENT) await client.call("PUT", `/api/v1/me/targets/${new URL(aTarget.url).hostname}`, { max_concurrent: A_MAX_CONCURRENT }, a.token);
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

  const abResults = Object.entries(results).filter(([n]) => AB_CASES.includes(n as CaseName));
  const alone = results.alone;
  for (const [, r] of abResults) if (alone && alone.b_finished_per_s > 0) r.b_rate_ratio_to_alone = round3(r.b_finished_per_s / alone.b_finished_per_s);

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
  if (abResults.length) {
    console.log(`\n== noisy tenant == (A: ${A_JOBS} jobs due at once; B: ${B_JOBS} jobs over ${B_SPAN_MS / 1000} s; equal weights; executor slots ${slots} = ${EXECUTOR_CONCURRENCY} x ${executors}, fetch cap ${fetchSlots})`);
    console.log("targets: B start p99 < 250 ms; B rate at least 0.9 of alone");
    console.log(cols.map(([h, w]) => h.padEnd(w)).join("  "));
    for (const [n, r] of abResults) console.log(cols.map(([, w, f]) => f(n, r).padEnd(w)).join("  ").trimEnd());
    if (abResults.some(([, r]) => r.b_not_started)) console.log("* some of B's jobs had not started when read: they count at their lateness then (a lower bound)");
  }
  const notStarted = (n: { not_started: number }) => (n.not_started ? " *" : "");
  const lowerBound = (who: string) => `* some of ${who}'s jobs had not started when read: they count at their lateness then (a lower bound)`;
  if (results.cap) {
    const r = results.cap;
    printRow(
      `== noisy tenant: cap == (C: ${r.c_jobs} jobs due at once to /cap, held ${r.cap_hold_ms} ms, max_running ${r.c_max_running}; D: ${r.d_jobs} jobs over ${B_SPAN_MS / 1000} s)`,
      `targets: at most ${r.c_max_running} of C's calls in flight; C near ${r.c_max_running} / ${r.cap_hold_ms / 1000} s = ${r.c_ideal_calls_per_s} calls/s; D start p99 < 250 ms`,
      [
        ["C fin", 11, (r) => `${r.c_finished}/${r.c_jobs}`],
        ["max conc", 8, (r) => `${r.c_target_max_concurrency}${r.c_target_over_cap ? " >cap" : ""}`],
        ["mean conc", 9, (r) => String(r.c_target_concurrency_mean ?? "-")],
        ["API run (+sched) max", 20, (r) => `${r.c_api_running_max} (${r.c_api_scheduled_or_running_max})`],
        ["C calls/s (ideal)", 17, (r) => `${r.c_calls_per_s} (${r.c_ideal_calls_per_s})`],
        ["vs ideal", 8, (r) => String(r.c_rate_ratio_to_ideal ?? "-")],
        ["gap max/p99 ms", 14, (r) => `${r.c_call_gap_ms.max}/${r.c_call_gap_ms.p99}`],
        ["D start p50/p95/p99/max ms", 26, (r) => lateness(r.d.start_lateness_ms) + notStarted(r.d)],
        ["p99<250", 7, (r) => (r.d.start_p99_below_250ms ? "yes" : "NO")],
        ["D fin", 8, (r) => `${r.d.finished}/${r.d.jobs}`],
      ],
      r,
    );
    if (r.d.not_started) console.log(lowerBound("D"));
  }
  if (results.pause) {
    const r = results.pause;
    printRow(
      `== noisy tenant: pause == (P: ${r.p_jobs} jobs due over ${r.p_due_spread_ms / 1000} s from T0, paused until ${r.pause_hold_s} s after T0; Q: ${r.q_jobs} jobs over ${B_SPAN_MS / 1000} s)`,
      "targets: no call of P while paused; nothing lost or duplicated after the resume; calls in due order; Q start p99 < 250 ms",
      [
        ["calls paused", 12, (r) => `${r.p_calls_while_paused}${r.p_no_calls_while_paused ? "" : " NOT 0"}`],
        ["started paused", 14, (r) => String(r.p_started_while_paused)],
        ["P fin", 13, (r) => `${r.p_finished}/${r.p_jobs}`],
        ["lost", 5, (r) => String(r.p_lost)],
        ["dup jobs", 8, (r) => String(r.p_duplicate_jobs)],
        ["resume->first/last call s", 25, (r) => (r.resume_to_first_call_ms === null ? "-" : `${round1(r.resume_to_first_call_ms / 1000)}/${round1(r.resume_to_last_call_ms / 1000)}`)],
        ["in due order", 12, (r) => String(r.p_calls_in_due_order_fraction ?? "-")],
        ["max behind ms", 13, (r) => String(r.p_call_max_behind_due_ms ?? "-")],
        ["Q start p99 ms", 14, (r) => String(r.q.start_lateness_ms.p99) + notStarted(r.q)],
      ],
      r,
    );
    if (r.q.not_started) console.log(lowerBound("Q"));
  }
  if (results.priority) {
    const r = results.priority;
    printRow(
      `== noisy tenant: priority == (R: ${r.r_low_jobs} low then ${r.r_high_jobs} high jobs, S: ${r.s_jobs} normal jobs, all due at T0)`,
      `targets: R's high jobs among R's first ${r.r_high_jobs} calls or a few more; S about 0.5 of the first ${r.first_calls_counted} calls`,
      [
        ["high rank max", 13, (r) => String(r.r_high_rank_max ?? "-")],
        ["high ranks", Math.max(10, 5 * r.r_high_jobs), (r) => r.r_high_ranks.join(",") || "-"],
        ["high not called", 15, (r) => String(r.r_high_not_called)],
        [`S share first ${r.first_calls_counted}`, 18, (r) => String(r.s_share_of_first_calls ?? "-")],
        ["R calls", 7, (r) => String(r.r_calls)],
        ["S calls", 7, (r) => String(r.s_calls)],
      ],
      r,
    );
  }
  console.log(
    `JSON ${JSON.stringify({
      bench: "noisy tenant",
      cluster: { ...cluster, executors_used: executors },
      params: {
        cases: CASES,
        a_jobs: A_JOBS,
        b_jobs: B_JOBS,
        b_span_s: B_SPAN_MS / 1000,
        slow_ms: SLOW_MS,
        wait_s: WAIT_MS / 1000,
        a_timeout_ms: A_TIMEOUT_MS ?? null,
        a_max_attempts: A_MAX_ATTEMPTS ?? null,
        stop: admin ? "admin_delete" : "cancel",
        cap_jobs: CAP_JOBS,
        cap_hold_ms: CAP_HOLD_MS,
        cap_max_running: CAP_MAX_RUNNING,
        cap_timeout_s: CAP_TIMEOUT_MS / 1000,
        pause_jobs: PAUSE_JOBS,
        pause_hold_s: PAUSE_HOLD_MS / 1000,
        pause_timeout_s: PAUSE_TIMEOUT_MS / 1000,
        prio_low_jobs: PRIO_LOW_JOBS,
        prio_high_jobs: PRIO_HIGH_JOBS,
        prio_s_jobs: PRIO_S_JOBS,
      },
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
