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
