/**
 * Tenant controls end to end, with the real roles and services: jobs created through the API,
 * HTTP targets on a server in this test that counts the calls it holds at once.
 * - a user's concurrency cap (max_running) holds at the target and in the database, whoever
 *   else has work, and the capped user's jobs all run;
 * - a paused user's due jobs wait (none starts), and all run once after resume, in due order;
 * - a user's high-priority jobs start before its low ones due at the same time.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { connect, type Sql } from "../src/db/databases.ts";
import { apiUser, callApi, slice, waitFor, type RoleProc, type Slice } from "./support/procs.ts";

setDefaultTimeout(180_000);

const ADMIN_TOKEN = "tenant-controls-test-admin-token-0123456789";
let s: Slice;
let api: RoleProc;
let sql: Sql;

/** Calls held at once per path, and the most seen; each call is held `holdMs` (from ?hold=). */
const held = new Map<string, number>();
const most = new Map<string, number>();
const calls = new Map<string, number>();
const target = Bun.serve({
  port: 0,
  hostname: "127.0.0.1",
  async fetch(req) {
    const url = new URL(req.url);
    const path = url.pathname;
    held.set(path, (held.get(path) ?? 0) + 1);
    most.set(path, Math.max(most.get(path) ?? 0, held.get(path)!));
    calls.set(path, (calls.get(path) ?? 0) + 1);
    await Bun.sleep(Number(url.searchParams.get("hold") ?? 0));
    held.set(path, held.get(path)! - 1);
    return new Response("ok");
  },
});
const targetUrl = (path: string, holdMs: number) => `http://127.0.0.1:${target.port}${path}?hold=${holdMs}`;

beforeAll(async () => {
  // A cap count every 20 ms, so a capped user's next job follows a finished one closely.
  // A small window, so the order of starts is the scheduler's (not one claim of everything).
  s = await slice({
    env: { ADMIN_TOKEN, LOG_LEVEL: "warn", SCHEDULER_CAP_INTERVAL: "20ms", SCHEDULER_WEIGHT_REFRESH: "200ms", SCHEDULER_WINDOW_MIN: "20", SCHEDULER_WINDOW_MAX: "50", SCHEDULER_BATCH_MAX: "50" },
  });
  api = await s.start("api");
  await s.start("scheduler");
  await s.start("executor");
  sql = connect(s.env.DATABASE_URLS!, 2);
});

afterAll(async () => {
  await sql?.end();
  await s?.close();
  target.stop(true);
});

const call = (method: string, path: string, body?: unknown, token?: string) => callApi(api, method, path, body, token);

const user = (name: string) => apiUser(api, name);

/** n jobs, created in batches; `job(i)` gives each one's fields. */
async function create(token: string, n: number, job: (i: number) => Record<string, unknown>): Promise<void> {
  for (let i = 0; i < n; i += 500) {
    const jobs = Array.from({ length: Math.min(500, n - i) }, (_, k) => ({ message: `j${i + k}`, ...job(i + k) }));
    await call("POST", "/api/v1/me/jobs/batch", { jobs }, token);
  }
}

const finished = async (userId: string) =>
  (await sql`SELECT count(*)::int AS n FROM all_jobs WHERE user_id = ${userId} AND status IN ('succeeded', 'failed')`)[0]!.n as number;

describe("tenant controls, end to end", () => {
  test("max_running 5: never more than 5 of the user's jobs at the target or running, while another user runs freely; all run", async () => {
    const capped = await user("capped");
    const free = await user("free");
    await call("PATCH", `/api/v1/admin/users/${capped.id}`, { max_running: 5 }, ADMIN_TOKEN);
    const due = new Date(Date.now() + 1_500).toISOString();
    await create(capped.token, 150, () => ({ execute_at: due, target: { url: targetUrl("/capped", 100) } }));
    await create(free.token, 150, () => ({ execute_at: due, target: { url: targetUrl("/free", 100) } }));
    // Sampled from the database too: the capped user's running jobs, every 20 ms.
    let mostRunning = 0;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        const n = (await sql`SELECT count(*)::int AS n FROM jobs WHERE user_id = ${capped.id} AND status = 'running'`)[0]!.n as number;
        mostRunning = Math.max(mostRunning, n);
        await Bun.sleep(20);
      }
    })();
    await waitFor("the free user's jobs to finish", async () => (await finished(free.id)) === 150, 60_000, 200);
    // The free user is done long before the capped one (150 jobs x 100 ms / 5 at once >= 3 s).
    expect(await finished(capped.id)).toBeLessThan(150);
    await waitFor("the capped user's jobs to finish", async () => (await finished(capped.id)) === 150, 90_000, 200);
    sampling = false;
    await sampler;
    expect(most.get("/capped")).toBeLessThanOrEqual(5);
    expect(mostRunning).toBeLessThanOrEqual(5);
    // It did run 5 at a time, not one by one.
    expect(most.get("/capped")).toBeGreaterThanOrEqual(4);
    expect(most.get("/free")).toBeGreaterThan(5);
    expect(calls.get("/capped")).toBe(150);
  });

  test("a paused user's due jobs wait, none starts; after resume all run once, in due order", async () => {
    const paused = await user("paused");
    const other = await user("other");
    await call("POST", "/api/v1/me/pause", undefined, paused.token);
    const t0 = Date.now();
    // Due over the next second (while paused), in creation order.
    await create(paused.token, 300, (i) => ({ execute_at: new Date(t0 + 500 + i * 3).toISOString(), target: { url: targetUrl("/paused", 0) } }));
    await create(other.token, 100, () => ({ execute_at: new Date(t0).toISOString(), target: { url: targetUrl("/other", 0) } }));
    await waitFor("the other user's jobs to finish", async () => (await finished(other.id)) === 100, 60_000, 200);
    await Bun.sleep(3_000);
    const started = (await sql`SELECT count(*)::int AS n FROM all_jobs WHERE user_id = ${paused.id} AND started_at IS NOT NULL`)[0]!.n;
    expect(started).toBe(0);
    expect(calls.get("/paused") ?? 0).toBe(0);
    await call("POST", "/api/v1/me/resume", undefined, paused.token);
    await waitFor("the paused user's jobs to finish", async () => (await finished(paused.id)) === 300, 60_000, 200);
    const rows = await sql`SELECT execute_at, started_at, attempt FROM all_jobs WHERE user_id = ${paused.id} ORDER BY execute_at`;
    expect(rows.every((r) => r.attempt === 1)).toBe(true);
    expect(calls.get("/paused")).toBe(300);
    // In due order: the earliest-due third started before the latest-due third, on average.
    const mean = (xs: any[]) => xs.reduce((n, r) => n + r.started_at.getTime(), 0) / xs.length;
    expect(mean(rows.slice(0, 100))).toBeLessThan(mean(rows.slice(200)));
  });

  test("1,000 low then 10 high jobs due together: the high ones start first", async () => {
    const u = await user("prioritised");
    // Due a little ahead, so every job is queued before any is due, and the user is paused
    // meanwhile so the order is the scheduler's, not the creation's.
    await call("POST", "/api/v1/me/pause", undefined, u.token);
    const due = new Date(Date.now() + 500).toISOString();
    await create(u.token, 1_000, () => ({ execute_at: due, priority: "low" }));
    await create(u.token, 10, () => ({ execute_at: due, priority: "high" }));
    await Bun.sleep(2_000);
    await call("POST", "/api/v1/me/resume", undefined, u.token);
    await waitFor("every job to finish", async () => (await finished(u.id)) === 1_010, 60_000, 200);
    const rows = await sql`SELECT priority, started_at FROM all_jobs WHERE user_id = ${u.id} ORDER BY started_at, id`;
    const firstHigh = rows.findIndex((r) => r.priority === 0);
    const lastHigh = rows.map((r) => r.priority).lastIndexOf(0);
    expect(firstHigh).toBeGreaterThanOrEqual(0);
    // Every high job among the first starts (a claim statement's jobs share a start time).
    const highDone = rows[lastHigh]!.started_at.getTime();
    const lowBefore = rows.filter((r) => r.priority === 2 && r.started_at.getTime() < highDone).length;
    expect(lowBefore).toBeLessThan(100);
  });
});
