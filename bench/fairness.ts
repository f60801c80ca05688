/**
 * Fair share as a user measures it, through the public API only, against a running cluster
 * (`bash ops/cluster-up.sh`). A job's start is its `started_at`. Every report carries the
 * cluster's shape: SCHEDULERS and EXECUTORS as the environment says (pass the ones the cluster
 * was started with, e.g. `SCHEDULERS=3 EXECUTORS=2`; 1 each by default) and how many scheduler
 * and executor processes answer /metrics on the ports ops/cluster-up.sh gives them.
 *
 * Windows: full 1-second windows from the first start. A user is backlogged in a window if its
 * last start is after the window's end; shares are taken over the users backlogged in the window
 * (bench/fair-stats.ts).
 *
 * Phase "shares": users with weights 1, 2 and 4, each with JOBS jobs (default 100,000) due at
 * the same instant, plus a small user with 200 jobs due evenly over the next 10 s. Prints, for
 * every full window of the drain, each backlogged user's share of the backlogged users' starts
 * against its weight's share among them, and the deviation in points: while all three are
 * backlogged, then after the weight-4 user (then the weight-2 user) has run out. Worst deviation
 * per stretch and overall, and the windows over 2 points (target: none); the small user's start
 * lateness; the drain rate; and writes an SVG chart of per-user starts per second.
 * Phase "flood": one user with FLOOD jobs (default 100,000) due at once, and a small user with
 * 200 jobs due evenly over 10 s (equal weights): the small user's start lateness.
 * Phase "drain": SMALL_DRAIN jobs (default 50,000) due at once over the three weighted users:
 * the drain rate to compare with the shares phase's.
 * Phase "users": USERS users (default 10,000), weights 1, 2 and 4 in turn, each with a seeded
 * (SEED, default 1) pseudo-random 100..1,000 jobs (about 5.5M at the default), all due at one
 * instant. Prints the weighted Jain index (x_i = starts_i / weight_i) per full window over the
 * backlogged users (min, p1, median), beside a reference: the index of an ideal weighted fair
 * queue's whole-number split of the same starts (with about one start per user per second,
 * rounding alone keeps a perfect scheduler well below 1); every user's first start after the
 * due instant (p99, max); the drain rate and its ratio to the three-user drain's (phase "drain",
 * else "shares") when that ran; the schedulers' resident memory and event-loop delay p99 from
 * their /metrics (sampled each second). Users sign up and log in through the API,
 * USER_CONCURRENCY (default 4) at a time: each costs two argon2id hashes on the API (about
 * 0.12 s of CPU each on this machine), so 10,000 users take some 20 minutes before the jobs are
 * created (CREATE_CONCURRENCY requests at a time, default 8).
 * Phase "churn": a backlog user with CHURN_BACKLOG jobs (default 50,000) due at T; a second user
 * with CHURN_MOVED jobs (default 10,000) due at T + CHURN_LATER_S (default 60 s); a third with
 * CHURN_FAILS HTTP jobs (default 300, max_attempts 1) due at T whose target, a server in this
 * process on 127.0.0.1, answers 500 to a job's first call and 200 after. From T + 1 s, while the
 * backlog drains, CHURN_CONCURRENCY (default 16) API calls at a time: a third of the second
 * user's jobs are cancelled, a third rescheduled to now (PATCH execute_at), a third left; every
 * failing job is retried (POST .../retry) once it has failed. Prints rescheduled jobs' start
 * minus the PATCH's answer (target: p99 within 100 ms), cancelled jobs that started (target 0),
 * retried jobs' start minus the retry's answer, the left jobs' start lateness and the backlog
 * user's drain rate.
 * First, unmeasured, a warm-up burst of WARMUP jobs (default 20,000; 0 to skip): the roles are
 * fresh processes, and the first burst they see pays for compiling their hot paths, which a
 * long-running process pays once.
 *
 *   bash ops/cluster-up.sh && bun bench/fairness.ts
 *   API_URL=http://127.0.0.1:8080 JOBS=100000 PHASES=shares,flood,drain bun bench/fairness.ts
 *   SCHEDULERS=3 EXECUTORS=2 PHASES=shares,flood,drain,users,churn bun bench/fairness.ts
 *   (ADMIN_TOKEN is sent at sign-up when set, for clusters with SIGNUP_WEIGHTS=admin.)
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { ApiClient, ms, type Job } from "./api-client.ts";
import { jainRows, shareRows, windowsOf } from "./fair-stats.ts";
import { adminPg, clusterShape, cpuPerJob, forEachLimit, machineBusySeconds, percentile, report, sampleSchedulers, seededRandom, summary } from "./lib.ts";

const client = new ApiClient();
const JOBS = Number(process.env.JOBS ?? 100_000);
const FLOOD = Number(process.env.FLOOD ?? 100_000);
const SMALL_DRAIN = Number(process.env.SMALL_DRAIN ?? 50_000);
const TRICKLE = 200;
const TRICKLE_SPAN_MS = 10_000;
const PHASES = (process.env.PHASES ?? "shares,flood,drain").split(",");
const USERS = Number(process.env.USERS ?? 10_000);
const SEED = Number(process.env.SEED ?? 1);
const USER_CONCURRENCY = Number(process.env.USER_CONCURRENCY ?? 4);
const CREATE_CONCURRENCY = Number(process.env.CREATE_CONCURRENCY ?? 8);
const CHURN_BACKLOG = Number(process.env.CHURN_BACKLOG ?? 50_000);
const CHURN_MOVED = Number(process.env.CHURN_MOVED ?? 10_000);
const CHURN_LATER_MS = Number(process.env.CHURN_LATER_S ?? 60) * 1000;
const CHURN_FAILS = Number(process.env.CHURN_FAILS ?? 300);
const CHURN_CONCURRENCY = Number(process.env.CHURN_CONCURRENCY ?? 16);
const WARMUP = Number(process.env.WARMUP ?? 20_000);
const OUT_DIR = process.env.OUT_DIR ?? "bench/results";
const run = client.run;
const { sql: pgAdmin, parts } = adminPg();
const cluster = await clusterShape(client.base);
/** Drain rates of the phases that ran, for the users phase's ratio. */
const drainRates = new Map<string, number>();
const round1 = (x: number) => Math.round(x * 10) / 10;

const lateness = (jobs: Job[]) => summary(jobs.map((j) => ms(j.started_at) - ms(j.execute_at)));

/** Creation takes time; pick a due instant after every job is stored (measured ~25-40k jobs/s). */
const leadMs = (jobs: number) => Math.max(8_000, (jobs / 12_000) * 1000 + 4_000);

function svg(series: { name: string; color: string; perSecond: number[] }[], title: string): string {
  const W = 900, H = 420, L = 60, B = 40, T = 30, R = 150;
  const n = Math.max(...series.map((s) => s.perSecond.length));
  const max = Math.max(1, ...series.flatMap((s) => s.perSecond));
  const x = (i: number) => L + ((W - L - R) * i) / Math.max(1, n - 1);
  const y = (v: number) => H - B - ((H - B - T) * v) / max;
  const lines = series.map((s) => `<polyline fill="none" stroke="${s.color}" stroke-width="2" points="${s.perSecond.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ")}"/>`);
  const legend = series.map((s, i) => `<text x="${W - R + 10}" y="${T + 20 + i * 20}" fill="${s.color}" font-size="13">${s.name}</text>`);
  const yTicks = [0, 0.25, 0.5, 0.75, 1].map((f) => `<text x="${L - 8}" y="${y(max * f) + 4}" text-anchor="end" font-size="11">${Math.round(max * f)}</text><line x1="${L}" x2="${W - R}" y1="${y(max * f)}" y2="${y(max * f)}" stroke="#eee"/>`);
  const xTicks = Array.from({ length: n }, (_, i) => i).filter((i) => i % Math.max(1, Math.round(n / 10)) === 0).map((i) => `<text x="${x(i)}" y="${H - B + 16}" text-anchor="middle" font-size="11">${i}</text>`);
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/><text x="${L}" y="18" font-size="14">${title}</text>
${yTicks.join("\n")}
${xTicks.join("\n")}
<text x="${(W - R + L) / 2}" y="${H - 6}" text-anchor="middle" font-size="12">seconds after the due instant</text>
<text x="14" y="${(H - B + T) / 2}" transform="rotate(-90 14 ${(H - B + T) / 2})" text-anchor="middle" font-size="12">starts per second</text>
<line x1="${L}" x2="${L}" y1="${T}" y2="${H - B}" stroke="black"/><line x1="${L}" x2="${W - R}" y1="${H - B}" y2="${H - B}" stroke="black"/>
${lines.join("\n")}
${legend.join("\n")}
</svg>
`;
}

/** Starts per whole second after `t0`, for each user. */
function perSecond(jobs: Job[], t0: number, seconds: number): number[] {
  const out = new Array(seconds).fill(0);
  for (const j of jobs) {
    const k = Math.floor((ms(j.started_at) - t0) / 1000);
    if (k >= 0 && k < seconds) out[k]++;
  }
  return out;
}

async function shares() {
  const weights = [1, 2, 4];
  const tokens = await Promise.all(weights.map((w) => client.user(`w${w}`, w)));
  const small = await client.user("small", 1);
  const t0 = Date.now() + leadMs(JOBS * 3);
  const created = performance.now();
  const lasts = await Promise.all(tokens.map((t, i) => client.create(t, () => t0, JOBS, `w${weights[i]}`)));
  lasts.push(await client.create(small, (i) => t0 + (i * TRICKLE_SPAN_MS) / TRICKLE, TRICKLE, "small"));
  const createdS = (performance.now() - created) / 1000;
  if (Date.now() > t0) throw new Error(`creating ${JOBS * 3} jobs took ${createdS.toFixed(1)} s, past the due instant; raise the lead`);
  await Bun.sleep(t0 - Date.now());
  const busy0 = machineBusySeconds();
  const cpu0 = await parts();
  await client.waitFinished(lasts, 900_000);
  const busy = machineBusySeconds() - busy0;
  const cpu1 = await parts();
  const jobs = await Promise.all(tokens.map((t) => client.finished(t, JOBS)));
  const smallJobs = await client.finished(small, TRICKLE);
  const lastStart = jobs.map((js) => Math.max(...js.map((j) => ms(j.started_at))));
  const lastFinish = Math.max(...jobs.flat().map((j) => ms(j.finished_at)));
  const firstStart = Math.min(...jobs.flat().map((j) => ms(j.started_at)));
  // Every full 1-second window of the drain, each over the heavy users still backlogged in it:
  // all three first, then (the weight-4 user runs out first) two, then one. The small user is
  // not counted: it is never backlogged for long.
  const win = windowsOf(jobs.map((js) => js.map((j) => ms(j.started_at))), firstStart);
  const rows = shareRows(win, weights);
  const names = weights.map((w) => `w${w}`);
  const stretch = (users: number[]) => users.map((u) => names[u]).join("+");
  console.log(`\nwindow  backlogged  starts (${names.join("/")})      shares % / target % of the backlogged        deviation`);
  for (const r of rows) {
    const cell = (u: number, f: (i: number) => string) => (r.users.includes(u) ? f(r.users.indexOf(u)) : "-");
    const starts = weights.map((_, u) => cell(u, (i) => String(r.starts[i])).padStart(6)).join(" ");
    const shares = weights.map((_, u) => cell(u, (i) => `${r.shares_pct[i]!.toFixed(1)}/${r.target_pct[i]!.toFixed(1)}`).padStart(11)).join(" ");
    console.log(`${String(r.window).padStart(6)}  ${stretch(r.users).padEnd(10)}  ${starts}   ${shares}   ${r.stalled ? "stalled" : r.deviation_pts.toFixed(1)}`);
  }
  const byStretch: Record<string, { windows: number; worst_deviation_pts: number; windows_over_2_pts: number }> = {};
  for (const r of rows) {
    const k = stretch(r.users);
    const b = (byStretch[k] ??= { windows: 0, worst_deviation_pts: 0, windows_over_2_pts: 0 });
    b.windows++;
    b.worst_deviation_pts = Math.max(b.worst_deviation_pts, round1(r.deviation_pts));
    if (r.deviation_pts > 2) b.windows_over_2_pts++;
  }
  const seconds = Math.ceil((lastFinish - firstStart) / 1000) + 1;
  mkdirSync(OUT_DIR, { recursive: true });
  const chart = `${OUT_DIR}/fairness-${run}.svg`;
  writeFileSync(chart, svg([
    ...jobs.map((js, i) => ({ name: `weight ${weights[i]}`, color: ["#1b9e77", "#d95f02", "#7570b3"][i]!, perSecond: perSecond(js, firstStart, seconds) })),
    { name: "small user", color: "#e7298a", perSecond: perSecond(smallJobs, firstStart, seconds) },
  ], `starts per second, weights 1:2:4, ${JOBS.toLocaleString("en")} jobs each`));
  const total = JOBS * 3;
  const drainRate = Math.round(total / ((Math.max(...lastStart) - t0) / 1000));
  drainRates.set("shares", drainRate);
  report("fair shares under backlog", {
    cluster,
    jobs_per_user: JOBS,
    weights: weights.join(":"),
    full_windows: rows.length,
    full_windows_all_backlogged: rows.filter((r) => r.users.length === weights.length).length,
    worst_deviation_pts: round1(Math.max(0, ...rows.map((r) => r.deviation_pts))),
    windows_over_2_pts: rows.filter((r) => r.deviation_pts > 2).length,
    windows_over_5_pts: rows.filter((r) => r.deviation_pts > 5).length,
    stalled_windows: rows.filter((r) => r.stalled).length,
    by_backlogged_users: byStretch,
    small_user_start_lateness_ms: lateness(smallJobs),
    heavy_users_p99_start_ms: jobs.map((js) => summary(js.map((j) => ms(j.started_at) - t0)).p99),
    drain_jobs_per_s: drainRate,
    first_start_after_due_ms: firstStart - t0,
    machine_cpu_us_per_job: Math.round((busy * 1e6) / total),
    cpu_us_per_job_by_part: cpuPerJob(cpu0, cpu1, total),
    create_seconds: Math.round(createdS * 10) / 10,
    chart,
  });
}

async function flood() {
  const a = await client.user("flood", 1);
  const b = await client.user("trickle", 1);
  const t0 = Date.now() + leadMs(FLOOD);
  const lasts = [await client.create(a, () => t0, FLOOD, "flood"), await client.create(b, (i) => t0 + (i * TRICKLE_SPAN_MS) / TRICKLE, TRICKLE, "trickle")];
  if (Date.now() > t0) throw new Error("creation ran past the due instant; raise the lead");
  await Bun.sleep(t0 - Date.now());
  await client.waitFinished(lasts, 600_000);
  const [fa, fb] = [await client.finished(a, FLOOD), await client.finished(b, TRICKLE)];
  const last = Math.max(...fa.map((j) => ms(j.started_at)));
  report("small user behind a flood", {
    cluster,
    flood_jobs: FLOOD,
    small_user_jobs: TRICKLE,
    small_user_start_lateness_ms: lateness(fb),
    flood_drain_jobs_per_s: Math.round(FLOOD / ((last - t0) / 1000)),
  });
}

async function drain() {
  const weights = [1, 2, 4];
  const tokens = await Promise.all(weights.map((w) => client.user(`d${w}`, w)));
  const per = Math.round(SMALL_DRAIN / 3);
  const t0 = Date.now() + leadMs(per * 3);
  const lasts = await Promise.all(tokens.map((t, i) => client.create(t, () => t0, per, `d${weights[i]}`)));
  if (Date.now() > t0) throw new Error("creation ran past the due instant; raise the lead");
  await Bun.sleep(t0 - Date.now());
  const busy0 = machineBusySeconds();
  const cpu0 = await parts();
  await client.waitFinished(lasts, 600_000);
  const busy = machineBusySeconds() - busy0;
  const cpu1 = await parts();
  const jobs = (await Promise.all(tokens.map((t) => client.finished(t, per)))).flat();
  const last = Math.max(...jobs.map((j) => ms(j.started_at)));
  const drainRate = Math.round((per * 3) / ((last - t0) / 1000));
  drainRates.set("drain", drainRate);
  report("drain of a smaller burst", {
    cluster,
    jobs: per * 3,
    drain_jobs_per_s: drainRate,
    machine_cpu_us_per_job: Math.round((busy * 1e6) / (per * 3)),
    cpu_us_per_job_by_part: cpuPerJob(cpu0, cpu1, per * 3),
  });
}

/**
 * Tokens of many users, refreshed (POST /auth/refresh, no password hashing) once older than
 * 20 minutes: the users phase can outlast a token (JWT_TTL, 1 h by default).
 */
class Tokens {
  private readonly issued: number[];
  constructor(private readonly tokens: string[]) {
    this.issued = tokens.map(() => Date.now());
  }
  get(i: number): string {
    return this.tokens[i]!;
  }
  async freshen(indexes: number[] = this.tokens.map((_, i) => i)): Promise<void> {
    const stale = indexes.filter((i) => Date.now() - this.issued[i]! > 20 * 60_000);
    await forEachLimit(stale, CREATE_CONCURRENCY, async (i) => {
      this.tokens[i] = await client.refresh(this.tokens[i]!);
      this.issued[i] = Date.now();
    });
  }
}

/**
 * Waits until every user's last job has finished, without a request per user per second: first
 * on the user expected to finish last (most jobs per weight), then sweeps of the users still
 * open, CREATE_CONCURRENCY requests at a time, a second apart.
 */
async function waitAll(tokens: Tokens, lastIds: string[], expectedLast: number, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  const finished = async (i: number) => (await client.call("GET", `/api/v1/me/jobs/${lastIds[i]}`, undefined, tokens.get(i))).data.finished_at !== null;
  const open = new Set(lastIds.map((_, i) => i));
  for (;;) {
    await tokens.freshen([expectedLast]);
    if (await finished(expectedLast)) break;
    if (Date.now() > until) throw new Error("jobs still open after the timeout");
    await Bun.sleep(1_000);
  }
  open.delete(expectedLast);
  while (open.size > 0) {
    const ids = [...open];
    await tokens.freshen(ids);
    await forEachLimit(ids, CREATE_CONCURRENCY, async (i) => {
      if (await finished(i)) open.delete(i);
    });
    if (open.size === 0) return;
    if (Date.now() > until) throw new Error(`${open.size} users' jobs still open after the timeout`);
    await Bun.sleep(1_000);
  }
}

async function users() {
  const rand = seededRandom(SEED);
  const plan = Array.from({ length: USERS }, (_, i) => ({ weight: [1, 2, 4][i % 3]!, jobs: 100 + Math.floor(rand() * 901) }));
  const weights = plan.map((p) => p.weight);
  const total = plan.reduce((a, p) => a + p.jobs, 0);
  // Sign-up and login each hash a password (argon2id) on the API: bounded concurrency.
  const signup = performance.now();
  const raw = new Array<string>(USERS);
  await forEachLimit(plan, USER_CONCURRENCY, async (p, i) => {
    raw[i] = await client.user(`u${i}`, p.weight);
  });
  const usersS = (performance.now() - signup) / 1000;
  console.error(`[bench] users: ${USERS} users signed up and logged in in ${usersS.toFixed(1)} s`);
  const tokens = new Tokens(raw);
  await tokens.freshen();
  const t0 = Date.now() + leadMs(total);
  const created = performance.now();
  const lastIds = new Array<string>(USERS);
  await forEachLimit(plan, CREATE_CONCURRENCY, async (p, i) => {
    lastIds[i] = (await client.create(tokens.get(i), () => t0, p.jobs, `u${i}`)).id;
  });
  const createdS = (performance.now() - created) / 1000;
  if (Date.now() > t0) throw new Error(`creating ${total} jobs took ${createdS.toFixed(1)} s, past the due instant; raise the lead`);
  await Bun.sleep(t0 - Date.now());
  const busy0 = machineBusySeconds();
  const sampled = sampleSchedulers(client.base);
  // The user with the most jobs per weight should be the last to finish.
  const slowest = plan.reduce((best, p, i) => (p.jobs / p.weight > plan[best]!.jobs / plan[best]!.weight ? i : best), 0);
  await waitAll(tokens, lastIds, slowest, 3_600_000);
  const busy = machineBusySeconds() - busy0;
  const schedulers = await sampled();
  await tokens.freshen();
  const starts = new Array<Float64Array>(USERS);
  await forEachLimit(plan, CREATE_CONCURRENCY, async (p, i) => {
    starts[i] = await client.startTimes(tokens.get(i), p.jobs);
  });
  let firstStart = Infinity;
  let lastStart = -Infinity;
  const firstAfterDue: number[] = [];
  for (const s of starts) {
    let lo = Infinity;
    for (const x of s) {
      if (x < lo) lo = x;
      if (x > lastStart) lastStart = x;
    }
    firstAfterDue.push(lo - t0);
    if (lo < firstStart) firstStart = lo;
  }
  const win = windowsOf(starts, firstStart);
  const rows = jainRows(win, weights);
  const sorted = (f: (r: (typeof rows)[number]) => number) => rows.map(f).sort((a, b) => a - b);
  const stats = (v: number[]) => ({ min: Math.round(v[0]! * 1000) / 1000, p1: Math.round(percentile(v, 1) * 1000) / 1000, median: Math.round(percentile(v, 50) * 1000) / 1000 });
  console.log(`\nthe 10 windows with the lowest weighted Jain index (of ${rows.length} full windows)`);
  console.log("window  backlogged users  starts    Jain  reference: an ideal WFQ's split of the same starts");
  for (const r of [...rows].sort((a, b) => a.jain - b.jain).slice(0, 10)) {
    console.log(`${String(r.window).padStart(6)}  ${String(r.users).padStart(16)}  ${String(r.starts).padStart(6)}  ${r.jain.toFixed(3).padStart(6)}  ${r.ideal.toFixed(3).padStart(6)}`);
  }
  const drainRate = Math.round(total / ((lastStart - t0) / 1000));
  const base = drainRates.has("drain") ? "drain" : drainRates.has("shares") ? "shares" : null;
  report("many users", {
    cluster,
    users: USERS,
    weights: "1, 2, 4 in turn",
    jobs: total,
    jobs_per_user: { seed: SEED, min: Math.min(...plan.map((p) => p.jobs)), max: Math.max(...plan.map((p) => p.jobs)), mean: Math.round(total / USERS) },
    create_users_seconds: round1(usersS),
    create_users_per_s: round1(USERS / usersS),
    create_jobs_seconds: round1(createdS),
    full_windows: rows.length,
    jain_weighted: rows.length ? stats(sorted((r) => r.jain)) : null,
    jain_wfq_reference_same_starts: rows.length ? stats(sorted((r) => r.ideal)) : null,
    users_backlogged_per_window: rows.length ? summary(rows.map((r) => r.users)) : null,
    first_start_after_due_ms: (({ p99, max }) => ({ p99, max }))(summary(firstAfterDue)),
    drain_jobs_per_s: drainRate,
    drain_ratio_to_three_users: base ? { against: base, ratio: Math.round((drainRate / drainRates.get(base)!) * 100) / 100 } : null,
    ...schedulers,
    machine_cpu_us_per_job: Math.round((busy * 1e6) / total),
  });
}

/**
 * Changes while a backlog drains: cancels, reschedules to now and retries of failed jobs, each
 * through the API, and when what they change starts against when the API answered.
 */
async function churn() {
  const backlog = await client.user("churn_backlog", 1);
  const mover = await client.user("churn_moved", 1);
  const failer = await client.user("churn_failing", 1);
  // The failing jobs' target: 500 to a job's first call, 200 after (the retry's run succeeds).
  const calls = new Map<string, number>();
  const target = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    async fetch(req) {
      const message = await req.text();
      const n = (calls.get(message) ?? 0) + 1;
      calls.set(message, n);
      return new Response(n === 1 ? "failing on purpose" : "ok", { status: n === 1 ? 500 : 200 });
    },
  });
  try {
    const t0 = Date.now() + leadMs(CHURN_BACKLOG + CHURN_MOVED + CHURN_FAILS);
    const later = t0 + CHURN_LATER_MS;
    const [b, m, f] = await Promise.all([
      client.create(backlog, () => t0, CHURN_BACKLOG, "backlog"),
      client.create(mover, () => later, CHURN_MOVED, "moved"),
      client.create(failer, () => t0, CHURN_FAILS, "failing", { target: { url: `http://127.0.0.1:${target.port}/fail`, method: "POST", timeout_ms: 5_000 }, max_attempts: 1 }),
    ]);
    if (Date.now() > t0) throw new Error("creation ran past the due instant; raise the lead");
    // A third cancelled, a third rescheduled to now, a third left; interleaved, in a seeded order.
    const rand = seededRandom(SEED);
    const order = m.ids.map((id) => ({ id, r: rand() })).sort((x, y) => x.r - y.r).map((x) => x.id);
    const ops = order.map((id, i) => ({ id, op: (["cancel", "reschedule", "stay"] as const)[i % 3]! }));
    await Bun.sleep(t0 + 1_000 - Date.now());
    const answered = new Map<string, number>();
    const refused = { cancel: 0, reschedule: 0, retry: 0 };
    const opsStart = Date.now();
    const changes = forEachLimit(ops.filter((o) => o.op !== "stay"), CHURN_CONCURRENCY, async ({ id, op }) => {
      const r = op === "cancel"
        ? await client.send("POST", `/api/v1/me/jobs/${id}/cancel`, undefined, mover)
        : await client.send("PATCH", `/api/v1/me/jobs/${id}`, { execute_at: new Date().toISOString() }, mover);
      if (r.status === 200) answered.set(id, r.at);
      else if (r.status === 409) refused[op as "cancel" | "reschedule"]++;
      else throw new Error(`${op} ${id}: ${r.status} ${JSON.stringify(r.json)}`);
    }).then(() => Date.now());
    // Retries: poll the failing user's failed jobs and retry each once it has failed (a retry
    // answered 409 means the job is not failed yet: it is tried again at the next poll).
    const retried = new Map<string, number>();
    const retries = (async () => {
      for (const until = t0 + 120_000; retried.size < CHURN_FAILS && Date.now() < until; await Bun.sleep(100)) {
        const failed: string[] = [];
        let cursor: string | null = null;
        do {
          const page: any = await client.call("GET", `/api/v1/me/jobs?limit=1000&status=failed${cursor ? `&cursor=${cursor}` : ""}`, undefined, failer);
          for (const j of page.data as Job[]) if (!retried.has(j.id)) failed.push(j.id);
          cursor = page.next_cursor;
        } while (cursor);
        await forEachLimit(failed, CHURN_CONCURRENCY, async (id) => {
          const r = await client.send("POST", `/api/v1/me/jobs/${id}/retry`, undefined, failer);
          if (r.status === 200) retried.set(id, r.at);
          else if (r.status === 409) refused.retry++;
          else throw new Error(`retry ${id}: ${r.status} ${JSON.stringify(r.json)}`);
        });
      }
    })();
    const opsEnd = await changes;
    await retries;
    await client.waitFinished([b], 600_000);
    const backlogStarts = await client.startTimes(backlog, CHURN_BACKLOG);
    const backlogLast = Math.max(...backlogStarts);
    // Retried jobs: their run after the retry (attempt 2) and its start.
    const retriedStart: number[] = [];
    let retriedNotStarted = 0;
    await forEachLimit([...retried], CHURN_CONCURRENCY, async ([id, at]) => {
      for (let tries = 0; ; tries++) {
        const j: Job = (await client.call("GET", `/api/v1/me/jobs/${id}`, undefined, failer)).data;
        if (j.attempt >= 2 && j.started_at) return void retriedStart.push(ms(j.started_at) - at);
        if (tries > 600) return void retriedNotStarted++;
        await Bun.sleep(100);
      }
    });
    // The jobs left alone run at T + CHURN_LATER_S; a cancelled one must never start.
    const stays = ops.filter((o) => o.op === "stay").map((o) => o.id);
    if (stays.length) await client.waitFinished([{ token: mover, id: stays.reduce((x, y) => (BigInt(y) > BigInt(x) ? y : x)) }], CHURN_LATER_MS + 600_000);
    const moved = new Map<string, Job>();
    let cursor: string | null = null;
    do {
      const page: any = await client.call("GET", `/api/v1/me/jobs?limit=1000${cursor ? `&cursor=${cursor}` : ""}`, undefined, mover);
      for (const j of page.data as Job[]) moved.set(j.id, j);
      cursor = page.next_cursor;
    } while (cursor);
    const byOp = (op: string) => ops.filter((o) => o.op === op && answered.has(o.id)).map((o) => moved.get(o.id)!);
    const rescheduled = byOp("reschedule");
    const cancelled = byOp("cancel");
    const stayed = stays.map((id) => moved.get(id)!);
    report("changes during a drain", {
      cluster,
      backlog_jobs: CHURN_BACKLOG,
      backlog_drain_jobs_per_s: Math.round(CHURN_BACKLOG / ((backlogLast - t0) / 1000)),
      api_concurrency: CHURN_CONCURRENCY,
      changes_seconds: round1((opsEnd - opsStart) / 1000),
      changes_done_before_backlog_drained: opsEnd < backlogLast,
      rescheduled: rescheduled.length,
      reschedules_refused_409: refused.reschedule,
      rescheduled_start_after_patch_answer_ms: summary(rescheduled.filter((j) => j.started_at).map((j) => ms(j.started_at) - answered.get(j.id)!)),
      rescheduled_not_started: rescheduled.filter((j) => !j.started_at).length,
      cancelled: cancelled.length,
      cancels_refused_409: refused.cancel,
      cancelled_that_started: cancelled.filter((j) => j.started_at !== null || j.status !== "cancelled").length,
      left: stayed.length,
      left_start_lateness_ms: lateness(stayed.filter((j) => j.started_at)),
      failing_jobs: CHURN_FAILS,
      retried: retried.size,
      retries_refused_409_not_yet_failed: refused.retry,
      retried_start_after_retry_answer_ms: summary(retriedStart),
      retried_not_started: retriedNotStarted,
      failing_target_calls: [...calls.values()].reduce((a, c) => a + c, 0),
    });
  } finally {
    target.stop(true);
  }
}

if (WARMUP > 0) {
  const t = await client.user("warmup", 1);
  const t0 = Date.now() + leadMs(WARMUP);
  const last = await client.create(t, () => t0, WARMUP, "warmup");
  await client.waitFinished([last], 600_000);
  console.error(`[bench] warm-up: ${WARMUP} jobs drained`);
}

for (const phase of PHASES) {
  if (phase === "shares") await shares();
  else if (phase === "flood") await flood();
  else if (phase === "drain") await drain();
  else if (phase === "users") await users();
  else if (phase === "churn") await churn();
  else throw new Error(`unknown phase ${phase}; expected shares, flood, drain, users, churn`);
}
await pgAdmin.end();
