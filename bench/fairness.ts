/**
 * Fair share as a user measures it, through the public API only, against a running cluster
 * (`bash ops/cluster-up.sh`). A job's start is its `started_at`.
 *
 * Phase "shares": users with weights 1, 2 and 4, each with JOBS jobs (default 100,000) due at
 * the same instant, plus a small user with 200 jobs due evenly over the next 10 s. Prints, for
 * every full 1-second window while all three are backlogged, each user's share of the three's
 * starts against its weight share, and the worst deviation in points; the small user's start
 * lateness; the drain rate; and writes an SVG chart of per-user starts per second.
 * Phase "flood": one user with FLOOD jobs (default 100,000) due at once, and a small user with
 * 200 jobs due evenly over 10 s (equal weights): the small user's start lateness.
 * Phase "drain": SMALL_DRAIN jobs (default 50,000) due at once over the three weighted users:
 * the drain rate to compare with the shares phase's.
 * First, unmeasured, a warm-up burst of WARMUP jobs (default 20,000; 0 to skip): the roles are
 * fresh processes, and the first burst they see pays for compiling their hot paths, which a
 * long-running process pays once.
 *
 *   bash ops/cluster-up.sh && bun bench/fairness.ts
 *   API_URL=http://127.0.0.1:8080 JOBS=100000 PHASES=shares,flood,drain bun bench/fairness.ts
 *   (ADMIN_TOKEN is sent at sign-up when set, for clusters with SIGNUP_WEIGHTS=admin.)
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { ApiClient, ms, type Job } from "./api-client.ts";
import { adminPg, cpuPerJob, machineBusySeconds, report, summary } from "./lib.ts";

const client = new ApiClient();
const JOBS = Number(process.env.JOBS ?? 100_000);
const FLOOD = Number(process.env.FLOOD ?? 100_000);
const SMALL_DRAIN = Number(process.env.SMALL_DRAIN ?? 50_000);
const TRICKLE = 200;
const TRICKLE_SPAN_MS = 10_000;
const PHASES = (process.env.PHASES ?? "shares,flood,drain").split(",");
const WARMUP = Number(process.env.WARMUP ?? 20_000);
const OUT_DIR = process.env.OUT_DIR ?? "bench/results";
const run = client.run;
const { sql: pgAdmin, parts } = adminPg();

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
  // Full 1-second windows from the first start while every heavy user still has jobs to start.
  const windows = Math.floor((Math.min(...lastStart) - firstStart) / 1000);
  const counts = jobs.map((js) => perSecond(js, firstStart, windows));
  const wsum = weights.reduce((a, b) => a + b, 0);
  const rows: { window: number; starts: number[]; shares_pct: number[]; deviation_pts: number }[] = [];
  for (let k = 0; k < windows; k++) {
    const starts = counts.map((c) => c[k]!);
    const total = starts.reduce((a, b) => a + b, 0);
    const sharesPct = starts.map((s) => (100 * s) / Math.max(1, total));
    const dev = Math.max(...sharesPct.map((s, i) => Math.abs(s - (100 * weights[i]!) / wsum)));
    rows.push({ window: k, starts, shares_pct: sharesPct.map((s) => Math.round(s * 10) / 10), deviation_pts: Math.round(dev * 10) / 10 });
  }
  console.log(`\nwindow  starts (w1/w2/w4)         shares % (target ${weights.map((w) => ((100 * w) / wsum).toFixed(1)).join("/")})  deviation`);
  for (const r of rows) console.log(`${String(r.window).padStart(6)}  ${r.starts.map((s) => String(s).padStart(6)).join(" ")}      ${r.shares_pct.map((s) => s.toFixed(1).padStart(5)).join(" ")}          ${r.deviation_pts.toFixed(1)}`);
  const seconds = Math.ceil((lastFinish - firstStart) / 1000) + 1;
  mkdirSync(OUT_DIR, { recursive: true });
  const chart = `${OUT_DIR}/fairness-${run}.svg`;
  writeFileSync(chart, svg([
    ...jobs.map((js, i) => ({ name: `weight ${weights[i]}`, color: ["#1b9e77", "#d95f02", "#7570b3"][i]!, perSecond: perSecond(js, firstStart, seconds) })),
    { name: "small user", color: "#e7298a", perSecond: perSecond(smallJobs, firstStart, seconds) },
  ], `starts per second, weights 1:2:4, ${JOBS.toLocaleString("en")} jobs each`));
  const total = JOBS * 3;
  report("fair shares under backlog", {
    jobs_per_user: JOBS,
    weights: weights.join(":"),
    full_windows_all_backlogged: windows,
    worst_deviation_pts: Math.max(...rows.map((r) => r.deviation_pts)),
    windows_over_5_pts: rows.filter((r) => r.deviation_pts > 5).length,
    small_user_start_lateness_ms: lateness(smallJobs),
    heavy_users_p99_start_ms: jobs.map((js) => summary(js.map((j) => ms(j.started_at) - t0)).p99),
    drain_jobs_per_s: Math.round(total / ((Math.max(...lastStart) - t0) / 1000)),
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
  report("drain of a smaller burst", {
    jobs: per * 3,
    drain_jobs_per_s: Math.round((per * 3) / ((last - t0) / 1000)),
    machine_cpu_us_per_job: Math.round((busy * 1e6) / (per * 3)),
    cpu_us_per_job_by_part: cpuPerJob(cpu0, cpu1, per * 3),
  });
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
  else throw new Error(`unknown phase ${phase}; expected shares, flood, drain`);
}
await pgAdmin.end();
