/** Small helpers shared by the benchmark programs: percentiles, machine CPU and a printed report. */
import { readdirSync, readFileSync } from "node:fs";
import postgres from "postgres";

/**
 * CPU time the whole machine has spent busy (user, nice, system, irq, softirq, steal; not idle
 * or iowait), in seconds, from /proc/stat. The difference over a run, divided by the work done,
 * is the all-in CPU cost per job of every process involved (roles, PostgreSQL, Kafka, etcd),
 * a steadier figure than throughput on a shared 2-core machine.
 */
export function machineBusySeconds(): number {
  const f = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
  const [user, nice, system, , , irq, softirq, steal] = f;
  return (user! + nice! + system! + irq! + softirq! + (steal ?? 0)) / 100;
}
export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i]!;
}

export function summary(values: number[]) {
  const s = [...values].sort((a, b) => a - b);
  const r = (x: number) => Math.round(x * 10) / 10;
  return { n: s.length, p50: r(percentile(s, 50)), p95: r(percentile(s, 95)), p99: r(percentile(s, 99)), max: r(s[s.length - 1] ?? NaN) };
}

/** Prints a readable table and one JSON line (for machines) of the same figures. */
export function report(name: string, figures: Record<string, unknown>): void {
  console.log(`\n== ${name} ==`);
  for (const [k, v] of Object.entries(figures)) console.log(`${k.padEnd(34)} ${typeof v === "object" ? JSON.stringify(v) : v}`);
  console.log(`JSON ${JSON.stringify({ bench: name, ...figures })}`);
}

export async function api(base: string, path: string, body: unknown, token?: string): Promise<any> {
  const res = await fetch(base + path, {
    method: "POST",
    headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify(body),
  });
  const json: any = await res.json();
  if (!res.ok) throw new Error(`${path}: ${res.status} ${JSON.stringify(json)}`);
  return json;
}

export async function userToken(base: string, username: string, weight = 1): Promise<string> {
  await fetch(base + "/api/v1/users", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ username, password: "bench-password", job_weight: weight }) });
  return (await api(base, "/api/v1/auth/login", { username, password: "bench-password" })).data.token;
}

type Role = { url: string; kill(signal?: number): void; exited: Promise<number> };

/** Starts `n` processes of a role; with PROFILE=1 (PROFILE=json: Chrome .cpuprofile) the first writes a CPU profile to .local/prof on exit. */
export async function startRoles<T extends Role>(start: (role: string, env: Record<string, string>, bunArgs: string[]) => Promise<T>, role: string, n: number): Promise<T[]> {
  const profile = process.env.PROFILE ? [process.env.PROFILE === "json" ? "--cpu-prof" : "--cpu-prof-md", "--cpu-prof-dir=.local/prof"] : [];
  const out: T[] = [];
  for (let i = 0; i < n; i++) out.push(await start(role, {}, i === 0 ? profile : []));
  return out;
}

/** Prints the first process's histogram lines starting with `prefix`, then stops them all (SIGTERM). */
export async function finishRoles(procs: Role[], prefix: string, label: string): Promise<void> {
  const lines = (await (await fetch(`${procs[0]!.url}/metrics`)).text()).split("\n").filter((l) => l.startsWith(prefix));
  console.log(`${label} (first process; cumulative bucket counts):\n${lines.join("\n")}`);
  for (const p of procs) p.kill(15);
  await Promise.all(procs.map((p) => p.exited));
}

/** CPU seconds (user + system) a process has used, from /proc; 0 once it is gone. */
export function processCpuSeconds(pid: number): number {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
    return (Number(f[11]) + Number(f[12])) / 100;
  } catch {
    return 0;
  }
}

/**
 * CPU per part of the system, for a before/after difference: every process whose command line
 * matches a pattern (the roles, Kafka, etcd), and PostgreSQL backends grouped by the
 * application_name the roles set (`fairshare-<role>`), read through `pg`.
 */
export async function cpuByPart(pg: (q: TemplateStringsArray) => Promise<{ pid: number; application_name: string }[]>): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  const add = (k: string, v: number) => out.set(k, (out.get(k) ?? 0) + v);
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    let cmd = "";
    try {
      cmd = readFileSync(`/proc/${d}/cmdline`, "utf8").replaceAll("\0", " ");
    } catch {
      continue;
    }
    const role = /src\/main\.ts (api|scheduler|executor|all)/.exec(cmd)?.[1];
    if (role) add(role, processCpuSeconds(Number(d)));
    else if (cmd.includes("kafka.Kafka")) add("kafka", processCpuSeconds(Number(d)));
    else if (cmd.includes("zipkin-server")) add("zipkin", processCpuSeconds(Number(d)));
    else if (/(^|\/)etcd /.test(cmd)) add("etcd", processCpuSeconds(Number(d)));
  }
  for (const b of await pg`SELECT pid, application_name FROM pg_stat_activity WHERE backend_type = 'client backend'`) {
    add(`pg:${b.application_name.replace(/^fairshare-/, "") || "other"}`, processCpuSeconds(b.pid));
  }
  return out;
}

/**
 * A connection to PostgreSQL's admin database (PG_ADMIN_URL), only to attribute CPU to backends
 * by role (pg_stat_activity) and read server counters; benchmarks create jobs through the API.
 */
export function adminPg() {
  const sql = postgres(process.env.PG_ADMIN_URL ?? "postgres://root@127.0.0.1:5432/postgres", { max: 1, onnotice: () => {} });
  return { sql, parts: () => cpuByPart((q) => sql(q) as never) };
}

/** The difference of two cpuByPart readings, in microseconds per job, largest first. */
export function cpuPerJob(before: Map<string, number>, after: Map<string, number>, jobs: number): Record<string, number> {
  const rows = [...after].map(([k, v]) => [k, Math.round(((v - (before.get(k) ?? 0)) * 1e6) / jobs)] as const);
  return Object.fromEntries(rows.filter(([, v]) => v > 0).sort((a, b) => b[1] - a[1]));
}

/** Runs `fn` over `items`, at most `limit` at a time (bounded concurrency for API calls). */
export async function forEachLimit<T>(items: readonly T[], limit: number, fn: (item: T, i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        await fn(items[i]!, i);
      }
    }),
  );
}

/** A deterministic pseudo-random number generator in [0, 1) (mulberry32), for seeded workloads. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A sample's value in Prometheus text (the first series of that name, any labels); NaN when absent. */
export function metricValue(text: string, name: string): number {
  for (const line of text.split("\n")) {
    if (line.startsWith(name) && (line[name.length] === " " || line[name.length] === "{")) return Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return NaN;
}

/**
 * The roles' HTTP ports, as ops/cluster-up.sh assigns them: scheduler i (1-based) on
 * API_PORT + 10 + i, executor i on API_PORT + 20 + i (so at most 10 of each are probed).
 */
export function rolePorts(apiBase: string, role: "scheduler" | "executor"): number[] {
  const apiPort = Number(new URL(apiBase).port || 80);
  return Array.from({ length: 10 }, (_, i) => apiPort + (role === "scheduler" ? 10 : 20) + i + 1);
}

async function metricsText(host: string, port: number): Promise<string | null> {
  try {
    const res = await fetch(`http://${host}:${port}/metrics`, { signal: AbortSignal.timeout(2_000) });
    return res.ok ? await res.text() : null;
  } catch {
    return null;
  }
}

/** The ports among `ports` whose /metrics answers. */
export async function answeringMetrics(host: string, ports: number[]): Promise<number[]> {
  const texts = await Promise.all(ports.map((p) => metricsText(host, p)));
  return ports.filter((_, i) => texts[i] !== null);
}

/**
 * The cluster's shape for a report: SCHEDULERS and EXECUTORS as the environment says (the same
 * variables ops/cluster-up.sh starts the roles with; 1 each by default) and how many processes
 * answer /metrics on those roles' ports, which is what actually ran.
 */
export async function clusterShape(apiBase: string) {
  const host = new URL(apiBase).hostname;
  const [schedulers, executors] = await Promise.all([answeringMetrics(host, rolePorts(apiBase, "scheduler")), answeringMetrics(host, rolePorts(apiBase, "executor"))]);
  return {
    schedulers_env: Number(process.env.SCHEDULERS ?? 1),
    executors_env: Number(process.env.EXECUTORS ?? 1),
    schedulers_answering_metrics: schedulers.length,
    executors_answering_metrics: executors.length,
  };
}

/**
 * Samples the schedulers' /metrics once a second while a phase runs: resident memory and
 * prom-client's event-loop delay p99 (nodejs_eventloop_lag_p99_seconds, from
 * perf_hooks.monitorEventLoopDelay, which Bun implements). prom-client resets that histogram at
 * every scrape, so each sample is the p99 of the loop delays since the previous scrape (about a
 * second, or less if a Prometheus also scrapes the role). Returns null figures when no
 * scheduler answers.
 */
export function sampleSchedulers(apiBase: string, everyMs = 1_000) {
  const host = new URL(apiBase).hostname;
  const rss: number[] = [];
  const lagP99: number[] = [];
  let ports: number[] = [];
  let stopped = false;
  const loop = (async () => {
    ports = await answeringMetrics(host, rolePorts(apiBase, "scheduler"));
    // Discard the p99 accumulated before the phase: the first scrape resets the histogram.
    await Promise.all(ports.map((p) => metricsText(host, p)));
    while (!stopped && ports.length > 0) {
      await Bun.sleep(everyMs);
      for (const text of await Promise.all(ports.map((p) => metricsText(host, p)))) {
        if (text === null) continue;
        const r = metricValue(text, "process_resident_memory_bytes");
        const l = metricValue(text, "nodejs_eventloop_lag_p99_seconds");
        if (Number.isFinite(r)) rss.push(r);
        if (Number.isFinite(l)) lagP99.push(l * 1000);
      }
    }
  })();
  return async () => {
    stopped = true;
    await loop;
    const s = [...lagP99].sort((a, b) => a - b);
    return {
      schedulers_sampled: ports.length,
      scheduler_rss_max_mib: rss.length ? Math.round(Math.max(...rss) / 1_048_576) : null,
      scheduler_loop_delay_p99_ms: lagP99.length ? { max: Math.round(s[s.length - 1]! * 10) / 10, median: Math.round(percentile(s, 50) * 10) / 10, samples: s.length } : null,
    };
  };
}
