/**
 * Faults under load, against real processes: the database going away and coming back while
 * jobs are created through the API. Every role stays alive, readiness tells the truth while it
 * is gone, and every acknowledged job runs exactly once afterwards; an executor killed under
 * load, whose partitions the survivor takes without restarting. (The slow-target case is in
 * executor.test.ts, a scheduler's death in scheduler.test.ts; bench/chaos.ts runs them all
 * at scale.)
 */
import { afterAll, describe, expect, test } from "bun:test";
import { connect } from "../src/db/databases.ts";
import { PG_BASE } from "./support/env.ts";
import { metric, slice, waitFor, type Slice } from "./support/procs.ts";

const slices: Slice[] = [];
afterAll(async () => {
  for (const s of slices) await s.close();
});

describe("database restart under load", () => {
  test("every role survives, the scheduler is not ready while the database is gone, and every acknowledged job runs once", async () => {
    const s = await slice({ env: { SHARD_COUNT: "4", LOG_LEVEL: "warn", RESCUE_INTERVAL: "1s", SCHEDULED_DEADLINE: "15s" } });
    slices.push(s);
    const api = await s.start("api");
    const scheduler = await s.start("scheduler");
    const executor = await s.start("executor");
    const roles = [api, scheduler, executor];
    const call = async (path: string, body: unknown, token?: string) => {
      const r = await fetch(api.url + path, { method: "POST", headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) }, body: JSON.stringify(body) });
      return { status: r.status, json: (await r.json()) as any };
    };
    await call("/api/v1/users", { username: "steady", password: "password123" });
    const token = (await call("/api/v1/auth/login", { username: "steady", password: "password123" })).json.data.token as string;

    // Steady load: a job due ~1 s out every 20 ms, until told to stop.
    const acked: string[] = [];
    const codes = new Map<string, number>();
    let loading = true;
    const load = (async () => {
      for (let i = 0; loading; i++) {
        const r = await call("/api/v1/me/jobs", { message: `j${i}`, execute_at: new Date(Date.now() + 1_000).toISOString() }, token).catch(() => ({ status: 0, json: null }));
        const code = r.status === 201 ? "created" : `${r.status} ${r.json?.error?.code ?? "?"}`;
        codes.set(code, (codes.get(code) ?? 0) + 1);
        if (r.status === 201) acked.push(r.json.data.id);
        await Bun.sleep(20);
      }
    })();
    await Bun.sleep(3_000);

    // Down: no new connection is let in and every open one is cut (what a restart does to the
    // clients), for 5 s.
    const admin = connect(`${PG_BASE}/postgres`, 1);
    const db = new URL(s.env.DATABASE_URLS!).pathname.slice(1);
    let schedulerNotReady = false;
    try {
      await admin.unsafe(`ALTER DATABASE "${db}" ALLOW_CONNECTIONS false`);
      await admin`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = ${db} AND pid <> pg_backend_pid()`;
      const until = Date.now() + 5_000;
      while (Date.now() < until) {
        if ((await fetch(`${scheduler.url}/readyz`)).status === 503) schedulerNotReady = true;
        await Bun.sleep(100);
      }
    } finally {
      await admin.unsafe(`ALTER DATABASE "${db}" ALLOW_CONNECTIONS true`);
      await admin.end();
    }
    await Bun.sleep(3_000);
    loading = false;
    await load;

    console.log(`API answers: ${JSON.stringify(Object.fromEntries(codes))}`);
    expect(schedulerNotReady).toBe(true);
    // Requests during the outage were refused with 503 'unavailable', never a 500.
    expect([...codes.keys()].filter((c) => c !== "created" && c !== "503 unavailable")).toEqual([]);
    expect(codes.get("503 unavailable") ?? 0).toBeGreaterThan(0);
    for (const r of roles) expect(r.proc.exitCode).toBeNull();
    // Every line the API logged while answering those requests carries the request's trace id.
    const unavailable = api.logs.filter((l) => l.includes('"database unavailable"')).map((l) => JSON.parse(l));
    expect(unavailable.length).toBeGreaterThan(0);
    expect(unavailable.filter((l) => !/^[0-9a-f]{32}$/.test(l.trace_id ?? ""))).toEqual([]);
    for (const r of roles) await waitFor(`${r.role} to be ready again`, async () => (await fetch(`${r.url}/readyz`)).ok, 30_000, 200);

    const sql = connect(s.env.DATABASE_URLS!, 1);
    try {
      await waitFor("every acknowledged job to succeed", async () => (await sql`SELECT count(*)::int AS n FROM all_jobs WHERE status = 'succeeded' AND id = ANY(${acked}::bigint[])`)[0]!.n === acked.length, 60_000, 500);
      const [{ n }] = (await sql`SELECT count(*)::int AS n FROM all_jobs`) as unknown as [{ n: number }];
      expect(n).toBe(acked.length); // nothing that was refused was created
      const attempts = await sql`SELECT attempt, count(*)::int AS n FROM all_jobs GROUP BY attempt`;
      expect(attempts.map((r) => [r.attempt, r.n])).toEqual([[1, acked.length]]);
    } finally {
      await sql.end();
    }
    for (const r of roles) expect(r.proc.exitCode).toBeNull();
  }, 120_000);
});

describe("executor death under load", () => {
  test("the survivor takes the dead executor's partitions without a consumer restart; every job runs, again only if its run died with the victim", async () => {
    const s = await slice({ env: { SHARD_COUNT: "4", KAFKA_PARTITIONS: "6" } });
    slices.push(s);
    const api = await s.start("api");
    await s.start("scheduler");
    const victim = await s.start("executor");
    const survivor = await s.start("executor");
    const post = (path: string, body: unknown, token?: string) =>
      fetch(api.url + path, { method: "POST", headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) }, body: JSON.stringify(body) }).then((r) => r.json() as Promise<any>);
    await post("/api/v1/users", { username: "handover", password: "password123" });
    const token = (await post("/api/v1/auth/login", { username: "handover", password: "password123" })).data.token;
    await waitFor("both executors to hold partitions", async () => {
      const held = await metric(survivor, "executor_partitions_assigned");
      return (held > 0 && held < 6) || null;
    }, 30_000);
    // 3,000 jobs due every 10 ms from 3 s on; the victim dies 8 s in, with work in flight.
    const t0 = Date.now() + 3_000;
    const jobs = Array.from({ length: 3_000 }, (_, i) => ({ message: `m${i}`, execute_at: new Date(t0 + i * 10).toISOString() }));
    for (let i = 0; i < jobs.length; i += 1_000) expect((await post("/api/v1/me/jobs/batch", { jobs: jobs.slice(i, i + 1_000) }, token)).success).toBe(true);
    await Bun.sleep(t0 + 8_000 - Date.now());
    const killedAt = Date.now();
    victim.kill(9);
    const sql = connect(s.env.DATABASE_URLS!, 1);
    try {
      await waitFor("every job to succeed", async () => (await sql`SELECT count(*)::int AS n FROM all_jobs WHERE status = 'succeeded'`)[0]!.n === jobs.length, 90_000, 500);
      // A job re-runs only if its run died with the victim: attempt 1 is in its history as lost.
      const rerun = await sql`
        SELECT j.id, j.attempt, a.outcome FROM all_jobs j LEFT JOIN job_attempts a ON a.job_id = j.id AND a.attempt = 1 WHERE j.attempt > 1`;
      expect(rerun.filter((r) => r.attempt !== 2 || r.outcome !== "lost")).toEqual([]);
      console.log(`re-run after a lost first attempt: ${rerun.length} of ${jobs.length}`);
      const after = await sql`SELECT execute_at, started_at FROM all_jobs WHERE execute_at >= ${new Date(killedAt)}`;
      const late = after.map((r) => (r.started_at as Date).getTime() - (r.execute_at as Date).getTime());
      console.log(`jobs due after the kill: ${after.length}, start lateness max ${Math.max(...late)} ms, over 1 s: ${late.filter((l) => l > 1_000).length}`);
    } finally {
      await sql.end();
    }
    // The survivor took every partition in one rebalance (after the session timeout), and did
    // not choke on messages it had already taken (they come again from the committed offset).
    await waitFor("the survivor to hold every partition", async () => (await metric(survivor, "executor_partitions_assigned")) === 6 || null, 30_000);
    expect(await metric(survivor, "kafka_consumer_batch_errors_total")).toBe(0);
    expect(await metric(survivor, "kafka_consumer_crashes_total")).toBe(0);
    expect(survivor.proc.exitCode).toBeNull();
  }, 150_000);
});
