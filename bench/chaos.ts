/**
 * The fault suite: faults under steady load, measured as a user sees them. Starts its own local
 * cluster (`ops/cluster-up.sh`, 2 schedulers and 2 executors, every role supervised), serves the
 * jobs' HTTP targets itself (recording every call with its job id and attempt) and creates jobs
 * through the public API at RATE per second (default 200), due 3 s after creation, in small
 * batches every 100 ms from USERS users. The jobs live on two shard databases (DATABASE_URLS:
 * `fairshare_chaos` and `fairshare_chaos_2` on the local server). Every FAULT_GAP seconds
 * (default 25) it injects one fault: kill -9 of executor-1, scheduler-1 and the API; an executor
 * killed while it claims a burst (kill -9 of executor-1 as 2,000 jobs fall due); the second
 * shard database out for DB_OUT seconds (default 30: it lets no connection in and every role's
 * are cut); Kafka killed and started again; etcd paused (SIGSTOP) past the lease TTL; PostgreSQL
 * restarted; and a user whose 36 jobs call a target that answers after 25 s. Then it waits for
 * every acknowledged job to finish and prints: acknowledged, lost (not finished), failed, dead-
 * lettered without a call, started early (target called before execute_at), duplicate calls per
 * (job, attempt), API answers by code, and per fault the lateness (first call - execute_at) of
 * the other jobs due from the fault to FAULT_GAP - 5 s after it, and the recovery time: from the
 * fault to the last start more than 1 s late among them; for the database fault, separately for
 * the jobs on the database that stayed up. Stops the cluster at the end.
 *
 *   bun bench/chaos.ts                     # FAULTS=executor,database,... to pick some
 */
import { readFileSync } from "node:fs";
import postgres from "postgres";
import { report, summary } from "./lib.ts";

const RATE = Number(process.env.RATE ?? 200);
const FAULT_GAP = Number(process.env.FAULT_GAP ?? 25);
const USERS = Number(process.env.USERS ?? 4);
const LEASE_TTL_S = 3; // ETCD_LEASE_TTL_SECONDS of the local cluster (ops/lib.sh): the pause outlasts it
const DB_OUT = Number(process.env.DB_OUT ?? 30);
const ALL_FAULTS = ["executor", "executor-claim", "scheduler", "api", "database", "kafka", "etcd", "postgres", "slow-target"] as const;
const FAULTS = (process.env.FAULTS?.split(",") ?? ALL_FAULTS) as (typeof ALL_FAULTS)[number][];
const ROOT = new URL("..", import.meta.url).pathname;
const RUN = `${ROOT}.local/run`;
const API = `http://127.0.0.1:${process.env.API_PORT ?? 8080}`;
const DATABASES = ["fairshare_chaos", "fairshare_chaos_2"];
const dbUrl = (name: string) => `postgres://root@127.0.0.1:5432/${name}`;

const sh = (cmd: string, env: Record<string, string> = {}) => {
  const r = Bun.spawnSync(["bash", "-c", cmd], { cwd: ROOT, env: { ...process.env, ...env }, stdout: "inherit", stderr: "inherit" });
  if (r.exitCode !== 0) throw new Error(`${cmd}: exit ${r.exitCode}`);
};
const pidOf = async (file: string) => Number((await Bun.file(`${RUN}/${file}`).text()).trim());
/** Alive and not a zombie (a killed process is one until reaped). */
const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return false;
  }
};

// Targets: every call recorded per (job, attempt), with its time.
const calls = new Map<string, number[]>();
const target = Bun.serve({
  port: 0,
  hostname: "127.0.0.1",
  idleTimeout: 60,
  async fetch(req) {
    const key = `${req.headers.get("x-job-id")}/${req.headers.get("x-job-attempt")}`;
    calls.set(key, [...(calls.get(key) ?? []), Date.now()]);
    if (new URL(req.url).pathname === "/slow") await Bun.sleep(25_000);
    return new Response("ok");
  },
});

async function call(method: string, path: string, body?: unknown, token?: string): Promise<{ status: number; json: any }> {
  try {
    const res = await fetch(API + path, {
      method,
      headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(10_000),
    });
    return { status: res.status, json: await res.json().catch(() => null) };
  } catch (e) {
    return { status: 0, json: { error: { code: (e as Error).name === "TimeoutError" ? "client_timeout" : "connection_failed" } } };
  }
}

async function user(name: string): Promise<string> {
  const username = `chaos_${Date.now().toString(36)}_${name}`;
  await call("POST", "/api/v1/users", { username, password: "chaos-password" });
  return (await call("POST", "/api/v1/auth/login", { username, password: "chaos-password" })).json.data.token;
}

interface Acked {
  id: string;
  token: string;
  executeAt: number;
  /** When its create was answered. */
  ackedAt: number;
  slow: boolean;
}
const acked: Acked[] = [];
const answers = new Map<string, number>();
const okCreates: number[] = [];

async function create(token: string, jobs: { message: string; execute_at: string; target: unknown }[], slow = false) {
  const r = await call("POST", "/api/v1/me/jobs/batch", { jobs }, token);
  const code = r.status === 201 ? "201 created" : `${r.status} ${r.json?.error?.code ?? "?"}`;
  answers.set(code, (answers.get(code) ?? 0) + 1);
  if (r.status !== 201) return;
  const ackedAt = Date.now();
  okCreates.push(ackedAt);
  for (const j of r.json.data) acked.push({ id: j.id, token, executeAt: Date.parse(j.execute_at), ackedAt, slow });
}

const faults: { name: string; at: number; note?: string }[] = [];
async function inject(name: (typeof ALL_FAULTS)[number], slowToken: string, burstToken: string): Promise<void> {
  const at = Date.now();
  console.error(`[chaos] ${new Date(at).toISOString()} ${name}`);
  switch (name) {
    case "executor":
    case "scheduler":
    case "api": {
      const role = name === "api" ? "api" : `${name}-1`;
      process.kill(await pidOf(`${role}.child`), "SIGKILL");
      faults.push({ name: `kill -9 ${role}`, at });
      return;
    }
    case "executor-claim": {
      // A burst falls due at once; executor-1 dies while claiming it.
      const due = Date.now() + 2_000;
      await Promise.all(
        [0, 1, 2, 3].map(() =>
          create(burstToken, Array.from({ length: 500 }, (_, i) => ({ message: `b${i}`, execute_at: new Date(due).toISOString(), target: { url: `http://127.0.0.1:${target.port}/t` } }))),
        ),
      );
      await Bun.sleep(Math.max(0, due + 30 - Date.now()));
      process.kill(await pidOf("executor-1.child"), "SIGKILL");
      faults.push({ name: "kill -9 executor-1 claiming a 2,000-job burst", at: due });
      return;
    }
    case "database": {
      const admin = postgres(dbUrl("postgres"), { max: 1, onnotice: () => {} });
      const db = DATABASES[1]!;
      try {
        await admin.unsafe(`ALTER DATABASE "${db}" ALLOW_CONNECTIONS false`);
        await admin`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = ${db} AND pid <> pg_backend_pid()`;
        await Bun.sleep(DB_OUT * 1_000);
      } finally {
        await admin.unsafe(`ALTER DATABASE "${db}" ALLOW_CONNECTIONS true`);
        await admin.end();
      }
      faults.push({ name: `shard database 2 of 2 out ${DB_OUT} s`, at, note: "lateness of the jobs on database 1 (up); database 2's below" });
      return;
    }
    case "kafka": {
      const pid = await pidOf("kafka.pid");
      process.kill(pid, "SIGKILL");
      while (alive(pid)) await Bun.sleep(100);
      sh("bash ops/services-up.sh >/dev/null");
      faults.push({ name: "Kafka kill -9 and restart", at, note: `broker back after ${((Date.now() - at) / 1000).toFixed(1)} s` });
      return;
    }
    case "etcd": {
      const pid = await pidOf("etcd.pid");
      process.kill(pid, "SIGSTOP");
      await Bun.sleep((LEASE_TTL_S + 5) * 1_000);
      process.kill(pid, "SIGCONT");
      faults.push({ name: `etcd paused ${LEASE_TTL_S + 5} s (lease TTL ${LEASE_TTL_S} s)`, at });
      return;
    }
    case "postgres": {
      sh("pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql | tail -1) main restart");
      faults.push({ name: "PostgreSQL restart", at, note: `server back after ${((Date.now() - at) / 1000).toFixed(1)} s` });
      return;
    }
    case "slow-target": {
      const due = new Date(Date.now() + 2_000).toISOString();
      const jobs = Array.from({ length: 36 }, (_, i) => ({ message: `slow ${i}`, execute_at: due, target: { url: `http://127.0.0.1:${target.port}/slow`, timeout_ms: 30_000 } }));
      await create(slowToken, jobs, true);
      faults.push({ name: "36 jobs to a target answering after 25 s", at: Date.parse(due) });
      return;
    }
  }
}

sh("bash ops/cluster-down.sh >/dev/null 2>&1 || true");
// Both databases on one server: 5 roles x 2 databases x DB_POOL_MAX must stay under its
// max_connections (100 here) with the bench's own and a restarted role's connections.
sh("bash ops/cluster-up.sh", { SCHEDULERS: "2", EXECUTORS: "2", DATABASE_URLS: DATABASES.map(dbUrl).join(","), DB_POOL_MAX: "6" });
const rolesAtStart = ["api", "scheduler-1", "scheduler-2", "executor-1", "executor-2"];
try {
  const tokens = await Promise.all(Array.from({ length: USERS }, (_, u) => user(`u${u}`)));
  const slowToken = await user("slow");
  const burstToken = await user("burst");
  const perTick = Math.max(1, Math.round(RATE / 10 / USERS));
  let loading = true;
  let seq = 0;
  const load = (async () => {
    for (let tick = Date.now(); loading; tick += 100) {
      const due = new Date(Date.now() + 3_000).toISOString();
      await Promise.all(
        tokens.map((t) =>
          create(t, Array.from({ length: perTick }, () => ({ message: `c${seq++}`, execute_at: due, target: { url: `http://127.0.0.1:${target.port}/t` } }))),
        ),
      );
      await Bun.sleep(Math.max(0, tick + 100 - Date.now()));
    }
  })();
  await Bun.sleep(Number(process.env.WARMUP ?? 20) * 1_000); // steady state first (WARMUP seconds)
  for (const f of FAULTS) {
    await inject(f, slowToken, burstToken).catch((e) => {
      console.error(`[chaos] injecting ${f} failed: ${(e as Error).message}`);
      faults.push({ name: f, at: Date.now(), note: `injection failed: ${(e as Error).message}` });
    });
    await Bun.sleep(FAULT_GAP * 1_000);
  }
  loading = false;
  await load;

  // Every acknowledged job finished? Read each back (per user, newest first).
  const byId = new Map(acked.map((a) => [a.id, a]));
  const finished = new Map<string, { status: string; started_at: string | null; attempt: number }>();
  const deadline = Date.now() + 180_000;
  while (Date.now() < deadline) {
    for (const token of [...tokens, slowToken, burstToken]) {
      for (const status of ["succeeded", "failed"]) {
        let cursor: string | null = null;
        do {
          const r = await call("GET", `/api/v1/me/jobs?limit=1000&status=${status}${cursor ? `&cursor=${cursor}` : ""}`, undefined, token);
          for (const j of r.json?.data ?? []) if (byId.has(j.id)) finished.set(j.id, j);
          cursor = r.json?.next_cursor ?? null;
        } while (cursor);
      }
    }
    if (finished.size >= acked.length) break;
    await Bun.sleep(2_000);
  }

  // The job's first call, whatever its attempt (a run lost with a killed executor is retried as the next).
  const firstCall = (a: Acked) => {
    let first = NaN;
    for (let n = 1; n <= 5; n++) for (const t of calls.get(`${a.id}/${n}`) ?? []) if (!(t >= first)) first = t;
    return first;
  };
  const steady = acked.filter((a) => !a.slow);
  // Which jobs live on the second database (the one the database fault takes out).
  const second = new Set<string>();
  {
    const sql = postgres(dbUrl(DATABASES[1]!), { max: 1, onnotice: () => {} });
    const ids = acked.map((a) => a.id);
    for (let i = 0; i < ids.length; i += 10_000) {
      for (const r of await sql<{ id: string }[]>`SELECT id::text FROM all_jobs WHERE id = ANY(${ids.slice(i, i + 10_000)}::bigint[])`) second.add(r.id);
    }
    await sql.end();
  }
  const lateness = (a: Acked) => firstCall(a) - a.executeAt;
  const duplicates = [...calls].filter(([, at]) => at.length > 1);
  const window = (f: { at: number }, among: Acked[]) => {
    const hit = among.filter((a) => a.executeAt >= f.at && a.executeAt < f.at + (FAULT_GAP - 5) * 1_000 && !Number.isNaN(firstCall(a)));
    const slow = hit.filter((a) => lateness(a) > 1_000);
    const recovery = slow.length ? Math.max(...slow.map(firstCall)) - f.at : 0;
    // A create answered after its execute_at cannot start on time whatever the scheduler does.
    return { start_lateness_ms: summary(hit.map(lateness)), over_5s: hit.filter((a) => lateness(a) > 5_000).length, recovery_s: Math.round(recovery / 100) / 10, created_after_due: hit.filter((a) => a.ackedAt > a.executeAt).length };
  };
  const byFault = Object.fromEntries(
    faults.flatMap((f) => {
      // The longest stretch without an accepted create, around the fault.
      const oks = okCreates.filter((t) => t >= f.at - 1_000 && t < f.at + 30_000);
      let gap = 0;
      for (let i = 1; i < oks.length; i++) gap = Math.max(gap, oks[i]! - oks[i - 1]!);
      const database = f.name.startsWith("shard database");
      const first: [string, unknown] = [f.name, { ...window(f, database ? steady.filter((a) => !second.has(a.id)) : steady), api_gap_s: Math.round(gap / 100) / 10, ...(f.note ? { note: f.note } : {}) }];
      return database ? [first, [`${f.name}: jobs on database 2`, window(f, steady.filter((a) => second.has(a.id)))]] : [first];
    }),
  );
  const roles = await Promise.all(
    rolesAtStart.map(async (r) => {
      const pid = await pidOf(`${r}.child`).catch(() => 0);
      const restarts = Number((await Bun.file(`${RUN}/${r}.restarts`).text().catch(() => "?")).trim());
      return `${r}: ${pid && alive(pid) ? "alive" : "DOWN"}, ${restarts} restarts`;
    }),
  );
  report("chaos: faults under steady load", {
    rate_per_s: RATE,
    faults: FAULTS.join(","),
    acknowledged: acked.length,
    lost: acked.length - finished.size,
    failed: [...finished.values()].filter((j) => j.status !== "succeeded").length,
    started_early: acked.filter((a) => lateness(a) < 0).length,
    duplicate_calls_per_job_attempt: duplicates.length,
    rerun_attempt_gt_1: [...finished.values()].filter((j) => j.attempt > 1).length,
    never_called: steady.filter((a) => Number.isNaN(firstCall(a))).length,
    dead_lettered_never_called: acked.filter((a) => finished.get(a.id)?.status === "failed" && ![...Array(5).keys()].some((n) => calls.has(`${a.id}/${n + 1}`))).length,
    api_answers: Object.fromEntries(answers),
    start_lateness_all_ms: summary(steady.filter((a) => !Number.isNaN(firstCall(a))).map(lateness)),
    // The jobs due before the first fault (from 3 s in): what the machine does without one.
    before_faults: window({ at: acked[0]!.executeAt + 5_000 }, steady.filter((a) => a.executeAt < (faults[0]?.at ?? Infinity))),
    by_fault: byFault,
    roles_at_end: roles,
  });
} finally {
  target.stop(true);
  sh("bash ops/cluster-status.sh || true");
  sh("bash ops/cluster-down.sh >/dev/null");
}
