/**
 * Per-target limits end to end, with the real roles and services (two executors sharing each
 * limit by leases): jobs created through the API, HTTP targets on a server in this test that
 * counts the calls it holds at once and when each arrives.
 * - a user's max_concurrent holds at the target across both executors, while another user's
 *   calls to the same host are not limited; every limited job runs once, on its first attempt;
 * - a user's max_per_second holds at the target in every window;
 * - an operator's limit on a host holds for every user's calls together.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { connect, type Sql } from "../src/db/databases.ts";
import { apiUser, callApi, metric, slice, waitFor, type RoleProc, type Slice } from "./support/procs.ts";

setDefaultTimeout(180_000);

const ADMIN_TOKEN = "target-limits-test-admin-token-0123456789";
let s: Slice;
let api: RoleProc;
let executors: RoleProc[];
let sql: Sql;

/** Per path: calls held at once, the most seen, and when each call arrived. */
const held = new Map<string, number>();
const most = new Map<string, number>();
const arrivals = new Map<string, number[]>();
const target = Bun.serve({
  port: 0,
  hostname: "127.0.0.1",
  async fetch(req) {
    const url = new URL(req.url);
    const path = url.pathname;
    held.set(path, (held.get(path) ?? 0) + 1);
    most.set(path, Math.max(most.get(path) ?? 0, held.get(path)!));
    arrivals.set(path, [...(arrivals.get(path) ?? []), performance.now()]);
    await Bun.sleep(Number(url.searchParams.get("hold") ?? 0));
    held.set(path, held.get(path)! - 1);
    return new Response("ok");
  },
});

beforeAll(async () => {
  s = await slice({ env: { ADMIN_TOKEN, LOG_LEVEL: "warn" } });
  api = await s.start("api");
  await s.start("scheduler");
  executors = [await s.start("executor"), await s.start("executor")];
  sql = connect(s.env.DATABASE_URLS!, 2);
});

afterAll(async () => {
  await sql?.end();
  await s?.close();
  target.stop(true);
});

const call = (method: string, path: string, body?: unknown, token?: string) => callApi(api, method, path, body, token);

const user = (name: string) => apiUser(api, name);

/** n HTTP jobs of the user to `url`, due now. */
async function create(token: string, n: number, url: string): Promise<void> {
  const execute_at = new Date().toISOString();
  const jobs = Array.from({ length: n }, (_, i) => ({ message: `j${i}`, execute_at, target: { url, method: "POST" } }));
  await call("POST", "/api/v1/me/jobs/batch", { jobs }, token);
}

/** Waits until all the user's jobs succeeded; returns their attempts (the runs each took). */
async function allRan(userId: string, n: number, timeoutMs = 90_000): Promise<number[]> {
  await waitFor(`${n} jobs of user ${userId} to succeed`, async () => {
    const [r] = await sql`SELECT count(*)::int AS n FROM all_jobs WHERE user_id = ${userId} AND status = 'succeeded'`;
    return r!.n === n;
  }, timeoutMs, 250);
  return (await sql`SELECT attempt FROM all_jobs WHERE user_id = ${userId}`).map((r) => r.attempt as number);
}

/** The most calls that arrived within any `windowMs`. */
function mostWithin(times: number[], windowMs: number): number {
  const t = [...times].sort((a, b) => a - b);
  let best = 0;
  for (let i = 0, j = 0; j < t.length; j++) {
    while (t[j]! - t[i]! >= windowMs) i++;
    best = Math.max(best, j - i + 1);
  }
  return best;
}

describe("per-target limits, end to end", () => {
  test("max_concurrent 3: never more than 3 of the user's calls at the host across two executors; another user's calls to it are not limited; each job ran once", async () => {
    const limited = await user("limited");
    const other = await user("other");
    const port = target.port;
    const set = await call("PUT", "/api/v1/me/targets/127.0.0.1", { max_concurrent: 3 }, limited.token);
    expect(set.data).toMatchObject({ host: "127.0.0.1", max_concurrent: 3, max_per_second: null });
    await Bun.sleep(1_500); // the executors re-read the limits every second
    await create(limited.token, 150, `http://127.0.0.1:${port}/limited?hold=50`);
    await create(other.token, 150, `http://127.0.0.1:${port}/other?hold=50`);
    const attempts = await allRan(limited.id, 150);
    await allRan(other.id, 150);
    expect(most.get("/limited")).toBeLessThanOrEqual(3);
    expect(most.get("/limited")).toBeGreaterThanOrEqual(2); // both executors' leases used (not one stuck at 0)
    expect(most.get("/other")).toBeGreaterThan(3);
    // Waiting for the limit used no attempt: every job succeeded on its first, called once.
    expect(attempts.every((a) => a === 1)).toBe(true);
    expect(arrivals.get("/limited")!.length).toBe(150);
    // Most waited in the database, not in an executor: deferred (150 x 50 ms over 3 calls is 2.5 s).
    const deferred = (await Promise.all(executors.map((e) => metric(e, "executor_target_deferred_jobs_total")))).reduce((a, b) => a + b, 0);
    expect(deferred).toBeGreaterThan(0);
  });

  test("max_per_second 20: at most 20 calls of the user arrive within any 900 ms (jitter: 100 ms), 100 jobs, each once", async () => {
    const paced = await user("paced");
    await call("PUT", "/api/v1/me/targets/localhost", { max_per_second: 20 }, paced.token);
    await Bun.sleep(1_500);
    const t0 = performance.now();
    await create(paced.token, 100, `http://localhost:${target.port}/paced`);
    const attempts = await allRan(paced.id, 100);
    const times = arrivals.get("/paced")!;
    expect(times.length).toBe(100);
    expect(mostWithin(times, 900)).toBeLessThanOrEqual(20);
    // 100 calls at 20 a second take at least 4 s from the first.
    expect(Math.max(...times) - Math.min(...times)).toBeGreaterThan(3_900);
    expect(Math.max(...times) - t0).toBeLessThan(60_000);
    expect(attempts.every((a) => a === 1)).toBe(true);
  });

  test("an operator's max_concurrent 2 on a host holds for every user's calls together", async () => {
    const admin = await fetch(`${api.url}/api/v1/admin/targets/localhost`, {
      method: "PUT",
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
      body: JSON.stringify({ max_concurrent: 2 }),
    });
    expect(admin.status).toBe(200);
    await Bun.sleep(1_500);
    const a = await user("op-a");
    const b = await user("op-b");
    held.set("/shared", 0);
    most.set("/shared", 0);
    await create(a.token, 60, `http://localhost:${target.port}/shared?hold=40`);
    await create(b.token, 60, `http://localhost:${target.port}/shared?hold=40`);
    const attempts = [...(await allRan(a.id, 60)), ...(await allRan(b.id, 60))];
    expect(most.get("/shared")).toBeLessThanOrEqual(2);
    expect(attempts.every((x) => x === 1)).toBe(true);
  });
});
