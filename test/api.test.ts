import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { Elysia } from "elysia";
import { SignJWT } from "jose";
import { IdGenerator } from "../src/ids.ts";
import { databaseOf, shardOf } from "../src/shard-map.ts";
import { connect, openDatabases, type Databases } from "../src/db/databases.ts";
import { apiRoutes } from "../src/http/api.ts";
import { etcdClient } from "../src/etcd.ts";
import { ActivityReader } from "../src/jobs/activity.ts";
import { listen, rootApp } from "../src/http/server.ts";
import { ERROR_CODES } from "../src/http/errors.ts";
import { initTelemetry } from "../src/telemetry.ts";
import { ACTIVE_TTL_MS } from "../src/users/user-store.ts";
import { JOB_STATUSES } from "../src/jobs/job-store.ts";
import { client, expectError, signup as signupWith } from "./support/http.ts";
import { freshDatabases, PG_BASE, testConfig } from "./support/env.ts";

// Real services: allow for broker rebalances and lease expiry on a loaded 2-core machine.
setDefaultTimeout(60_000);

const SHARDS = 8;
let dbs: Databases;
let drop: () => Promise<void>;
let call: ReturnType<typeof client>;
const signup = (username: string, job_weight?: number) => signupWith(call, username, job_weight);
const ADMIN_TOKEN = "test-admin-token-0123456789abcdefghijkl";
const config = (env: Record<string, string> = {}) =>
  testConfig({ DATABASE_URLS: urls.join(","), SHARD_COUNT: String(SHARDS), API_MAX_BODY_BYTES: "65536", JOB_HORIZON: "30d", ADMIN_TOKEN, LOGIN_ATTEMPTS_PER_MINUTE: "1000", ...env });
let urls: string[] = [];
/** The same API with SIGNUP_WEIGHTS=admin: only the operator chooses weights. */
let adminMode: ReturnType<typeof client>;

beforeAll(async () => {
  initTelemetry({ exporter: "none", otlpEndpoint: "", zipkinEndpoint: "", serviceName: "fairshare-test", sampler: "parentbased_always_on", samplerRatio: 1 }, "api"); // as src/main.ts does
  const fresh = await freshDatabases(2);
  urls = fresh.urls;
  drop = fresh.drop;
  dbs = openDatabases(urls, SHARDS, 5);
  const app = rootApp(config().api.maxBodyBytes, () => [], apiRoutes(config(), dbs, new IdGenerator(7)));
  call = client(app);
  const strict = config({ SIGNUP_WEIGHTS: "admin" });
  adminMode = client(rootApp(strict.api.maxBodyBytes, () => [], apiRoutes(strict, dbs, new IdGenerator(8))));
});

afterAll(async () => {
  await dbs?.close();
  await drop?.();
});

const soon = (ms = 60_000) => new Date(Date.now() + ms).toISOString();

describe("users", () => {
  test("create returns the user without the password; weight defaults to 1", async () => {
    const r = await call("POST", "/api/v1/users", { body: { username: "alice_u", password: "p4ssword!" } });
    expect(r.status).toBe(201);
    // The signing secret of the user's HTTP target calls is shown here, once.
    expect(r.json).toEqual({ data: { id: expect.any(Number), username: "alice_u", job_weight: 1, disabled: false, max_running: null, paused: false, signing_secret: expect.stringMatching(/^whsec_[0-9a-f]{64}$/) }, success: true });
    expect(r.text).not.toContain("p4ssword");
    const [row] = await dbs.users`SELECT password_hash FROM users WHERE username = 'alice_u'`;
    expect(row!.password_hash).toStartWith("$argon2id$");
  });

  test("a taken username is 409", async () => {
    await call("POST", "/api/v1/users", { body: { username: "dup_user", password: "p4ssword!" } });
    expectError(await call("POST", "/api/v1/users", { body: { username: "dup_user", password: "other-pass" } }), 409, "username_taken");
  });

  test.each([
    [{ username: "ok_name", password: "p4ssword!", job_weight: 0 }],
    [{ username: "ok_name", password: "p4ssword!", job_weight: -2 }],
    [{ username: "ok_name", password: "p4ssword!", job_weight: "heavy" }],
    [{ username: "ok_name", password: "p4ssword!", job_weight: 5e-324 }],
    [{ username: "ok_name", password: "p4ssword!", job_weight: 1_000_000 }],
    [{ username: "x", password: "p4ssword!" }],
    [{ username: "ok_name", password: "short" }],
    [{ username: "bad name!", password: "p4ssword!" }],
    [{ password: "p4ssword!" }],
  ])("invalid user %j is 400", async (body) => {
    const r = await call("POST", "/api/v1/users", { body });
    expectError(r, 400, "invalid_request");
    expect(Array.isArray(r.json.error.details)).toBe(true);
  });
});

describe("weights: who may choose them, and the admin API", () => {
  const admin = { authorization: `Bearer ${ADMIN_TOKEN}` };

  test("open sign-up (the local default) takes any weight in range", async () => {
    const r = await call("POST", "/api/v1/users", { body: { username: "open_w", password: "p4ssword!", job_weight: 1000 } });
    expect(r.status).toBe(201);
    expect(r.json.data.job_weight).toBe(1000);
  });

  test("in admin mode a weight other than the default needs the admin token", async () => {
    expectError(await adminMode("POST", "/api/v1/users", { body: { username: "greedy", password: "p4ssword!", job_weight: 1000 } }), 403, "weight_requires_admin");
    expectError(await adminMode("POST", "/api/v1/users", { body: { username: "greedy", password: "p4ssword!", job_weight: 4 }, headers: { authorization: "Bearer not-the-admin-token" } }), 403, "weight_requires_admin");
    // Nothing was created by the refused requests: the name is still free.
    const plain = await adminMode("POST", "/api/v1/users", { body: { username: "greedy", password: "p4ssword!" } });
    expect(plain.status).toBe(201);
    expect(plain.json.data.job_weight).toBe(1);
    const same = await adminMode("POST", "/api/v1/users", { body: { username: "modest", password: "p4ssword!", job_weight: 1 } });
    expect(same.status).toBe(201);
    const granted = await adminMode("POST", "/api/v1/users", { body: { username: "granted", password: "p4ssword!", job_weight: 4 }, headers: admin });
    expect(granted.status).toBe(201);
    expect(granted.json.data.job_weight).toBe(4);
  });

  test("a disabled user's tokens stop within a second and the user cannot log in; enabled again, they work", async () => {
    const { id, token } = await signup("to_disable");
    expect((await call("GET", "/api/v1/me/jobs", { token })).status).toBe(200); // cached as active now
    const off = await call("PATCH", `/api/v1/admin/users/${id}`, { body: { disabled: true }, headers: admin });
    expect(off.json.data.disabled).toBe(true);
    // The API re-reads whether a user is active at most ACTIVE_TTL_MS after the last read.
    await Bun.sleep(ACTIVE_TTL_MS + 50);
    expectError(await call("GET", "/api/v1/me/jobs", { token }), 401, "unauthorized");
    expectError(await call("POST", "/api/v1/me/jobs", { token, body: { message: "x", execute_at: soon() } }), 401, "unauthorized");
    expectError(await call("POST", "/api/v1/auth/refresh", { token }), 401, "unauthorized");
    expectError(await call("POST", "/api/v1/auth/login", { body: { username: "to_disable", password: "correct horse battery" } }), 403, "user_disabled");
    // A wrong password is still just wrong: being disabled is not revealed to a guesser.
    expectError(await call("POST", "/api/v1/auth/login", { body: { username: "to_disable", password: "wrong password" } }), 401, "invalid_credentials");
    await call("PATCH", `/api/v1/admin/users/${id}`, { body: { disabled: false }, headers: admin });
    await Bun.sleep(ACTIVE_TTL_MS + 50);
    expect((await call("GET", "/api/v1/me/jobs", { token })).status).toBe(200);
    expectError(await call("PATCH", `/api/v1/admin/users/${id}`, { body: {}, headers: admin }), 400, "invalid_request");
    expectError(await call("PATCH", `/api/v1/admin/users/${id}`, { body: { disabled: "yes" }, headers: admin }), 400, "invalid_request");
  });

  test("a deleted user's tokens stop within a second; their jobs not yet started are cancelled", async () => {
    const { id, token } = await signup("to_delete");
    const job = await call("POST", "/api/v1/me/jobs", { token, body: { message: "later", execute_at: soon() } });
    expect(job.status).toBe(201);
    const del = await call("DELETE", `/api/v1/admin/users/${id}`, { headers: admin });
    expect(del.json.data).toEqual({ id, deleted: true, jobs_cancelled: 1 });
    await Bun.sleep(ACTIVE_TTL_MS + 50);
    expectError(await call("GET", `/api/v1/me/jobs/${job.json.data.id}`, { token }), 401, "unauthorized");
    expectError(await call("POST", "/api/v1/auth/login", { body: { username: "to_delete", password: "correct horse battery" } }), 401, "invalid_credentials");
    const rows = await Promise.all(dbs.all.map((sql) => sql`SELECT status::text FROM all_jobs WHERE id = ${job.json.data.id}`));
    expect(rows.flat().map((r) => r.status)).toEqual(["cancelled"]);
    expectError(await call("DELETE", `/api/v1/admin/users/${id}`, { headers: admin }), 404, "not_found");
  });

  test("admin endpoints: 401 without or with a wrong token; get and change a weight; 400 for bad weights; 404 for no user", async () => {
    const { id } = await signup("weighed");
    expectError(await call("GET", `/api/v1/admin/users/${id}`), 401, "unauthorized");
    expectError(await call("GET", `/api/v1/admin/users/${id}`, { headers: { authorization: "Bearer nope" } }), 401, "unauthorized");
    expectError(await call("GET", `/api/v1/admin/users/${id}`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}x` } }), 401, "unauthorized");
    // A user's own token is not an admin token.
    const { token } = await signup("not_admin");
    expectError(await call("PATCH", `/api/v1/admin/users/${id}`, { body: { job_weight: 5 }, token }), 401, "unauthorized");

    const got = await call("GET", `/api/v1/admin/users/${id}`, { headers: admin });
    expect(got.json).toEqual({ data: { id, username: "weighed", job_weight: 1, disabled: false, max_running: null, paused: false }, success: true });
    expect(got.text).not.toContain("whsec_");
    const changed = await call("PATCH", `/api/v1/admin/users/${id}`, { body: { job_weight: 7.5 }, headers: admin });
    expect(changed.json.data.job_weight).toBe(7.5);
    expect((await call("GET", `/api/v1/admin/users/${id}`, { headers: admin })).json.data.job_weight).toBe(7.5);
    for (const job_weight of [0, -1, 5e-324, 1001, "4", null]) {
      expectError(await call("PATCH", `/api/v1/admin/users/${id}`, { body: { job_weight }, headers: admin }), 400, "invalid_request");
    }
    expectError(await call("PATCH", `/api/v1/admin/users/999999999`, { body: { job_weight: 2 }, headers: admin }), 404, "not_found");
    expectError(await call("GET", `/api/v1/admin/users/abc`, { headers: admin }), 400, "invalid_request");
    expect((await call("GET", `/api/v1/admin/users/${id}`, { headers: admin })).json.data.job_weight).toBe(7.5);
  });

  test("without ADMIN_TOKEN configured the admin API refuses everyone", async () => {
    const none = testConfig({ DATABASE_URLS: urls.join(","), SHARD_COUNT: String(SHARDS) });
    const app = client(rootApp(none.api.maxBodyBytes, () => [], apiRoutes(none, dbs, new IdGenerator(9))));
    const r = await app("GET", "/api/v1/admin/users/1", { headers: { authorization: "Bearer " } });
    expectError(r, 401, "unauthorized");
    expect(r.json.error.message).toContain("ADMIN_TOKEN");
  });
});

describe("operator views (admin API)", () => {
  const admin = { authorization: `Bearer ${ADMIN_TOKEN}` };

  test("users: every user in id order, 50 or `limit` a page, with a cursor", async () => {
    for (const n of ["pager_a", "pager_b", "pager_c"]) await signup(n);
    const seen: any[] = [];
    let cursor: string | null = null;
    do {
      const page: any = await call("GET", `/api/v1/admin/users?limit=2${cursor ? `&cursor=${cursor}` : ""}`, { headers: admin });
      expect(page.status).toBe(200);
      expect(page.json.data.length).toBeLessThanOrEqual(2);
      seen.push(...page.json.data);
      cursor = page.json.next_cursor;
    } while (cursor);
    const n = (await dbs.users`SELECT count(*)::int AS n FROM users`)[0]!.n;
    expect(seen.length).toBe(n);
    expect(seen.map((u) => u.id)).toEqual([...seen.map((u) => u.id)].sort((a, b) => a - b));
    expect(seen.filter((u) => u.username.startsWith("pager_")).map((u) => u.username)).toEqual(["pager_a", "pager_b", "pager_c"]);
    expectError(await call("GET", "/api/v1/admin/users?cursor=abc", { headers: admin }), 400, "invalid_request");
    expectError(await call("GET", "/api/v1/admin/users"), 401, "unauthorized");
  });

  test("activity: starts per user and interval against weights, lateness percentiles, who waits now", async () => {
    const light = await signup("act_light", 1);
    const heavy = await signup("act_heavy", 3);
    // Attempts as the executor records them, all started in one interval 20 s before the current one.
    const at = Math.floor(Date.now() / 10_000) * 10_000 - 20_000;
    const rows = [
      ...Array.from({ length: 10 }, (_, i) => ({ user: light.id, started: at + i, late: 0 })),
      ...Array.from({ length: 29 }, (_, i) => ({ user: heavy.id, started: at + 100 + i, late: 100 })),
      { user: heavy.id, started: at + 500, late: 5_000 },
    ];
    await dbs.all[1]!`INSERT INTO job_attempts (job_id, attempt, user_id, due_at, started_at, finished_at, outcome)
      SELECT 9000000000 + i, 1, u, to_timestamp((s - l) / 1000.0), to_timestamp(s / 1000.0), to_timestamp(s / 1000.0), 'succeeded'
      FROM unnest(${rows.map((_, i) => i)}::int[], ${rows.map((r) => r.user)}::bigint[], ${rows.map((r) => r.started)}::float8[], ${rows.map((r) => r.late)}::float8[]) AS t(i, u, s, l)`;
    // Three of the light user's jobs due and waiting (nothing runs them in this file).
    const due = await call("POST", "/api/v1/me/jobs/batch", { token: light.token, body: { jobs: [1, 2, 3].map((i) => ({ message: `w${i}`, execute_at: new Date(Date.now() - 1_000).toISOString() })) } });
    expect(due.status).toBe(201);

    const r = await call("GET", "/api/v1/admin/activity?window_seconds=60&interval_seconds=10", { headers: admin });
    expect(r.status).toBe(200);
    const a = r.json.data;
    expect(a.intervals.length).toBe(6);
    expect(a.interval_ms).toBe(10_000);
    const slot = a.intervals.find((i: any) => i.at === new Date(at).toISOString());
    expect(slot.starts).toBe(40);
    expect(slot.share).toEqual({ [light.id]: 0.25, [heavy.id]: 0.75 });
    expect(slot.weight_share).toEqual({ [light.id]: 0.25, [heavy.id]: 0.75 });
    // Read from a histogram: the upper bound of the bucket holding the percentile, within 9 %.
    expect(slot.lateness_p50_ms).toBeGreaterThanOrEqual(100);
    expect(slot.lateness_p50_ms).toBeLessThanOrEqual(109);
    expect(slot.lateness_p99_ms).toBeGreaterThanOrEqual(5_000);
    expect(slot.lateness_p99_ms).toBeLessThanOrEqual(5_450);
    expect(a.intervals.filter((i: any) => i !== slot).every((i: any) => i.starts === 0 || !(String(light.id) in i.share))).toBe(true);
    const byId = new Map(a.users.map((u: any) => [Number(u.id), u]));
    expect(byId.get(light.id)).toMatchObject({ username: "act_light", job_weight: 1, starts: 10, waiting: 3 });
    expect(byId.get(heavy.id)).toMatchObject({ username: "act_heavy", job_weight: 3, starts: 30, waiting: 0, owed_share: null });
    expect((byId.get(light.id) as any).owed_share).toBeGreaterThan(0);
    expect(a.backlog.waiting).toBeGreaterThanOrEqual(3);

    expectError(await call("GET", "/api/v1/admin/activity?window_seconds=3600&interval_seconds=1", { headers: admin }), 400, "invalid_request");
    expectError(await call("GET", "/api/v1/admin/activity?window_seconds=5", { headers: admin }), 400, "invalid_request");
  });

  test("activity: occupancy shares (executor time) beside start shares: 1000 ms runs against 10 ms runs", async () => {
    const slow = await signup("occ_slow", 1);
    const fast = await signup("occ_fast", 1);
    // Equal starts, one interval 20 s before the current one; one attempt without a duration
    // (counts 0), and the attempts spread over both databases (summed).
    const at = Math.floor(Date.now() / 10_000) * 10_000 - 20_000;
    const rows = [
      ...Array.from({ length: 10 }, (_, i) => ({ user: slow.id, started: at + 1_000 + i, ms: 1_000 as number | null })),
      ...Array.from({ length: 9 }, (_, i) => ({ user: fast.id, started: at + 1_100 + i, ms: 10 as number | null })),
      { user: fast.id, started: at + 1_200, ms: null },
    ];
    for (const [db, part] of [[0, rows.slice(0, 5)], [1, rows.slice(5)]] as const) {
      await dbs.all[db]!`INSERT INTO job_attempts (job_id, attempt, user_id, due_at, started_at, finished_at, outcome, duration_ms)
        SELECT 9100000000 + ${db * 1000} + i, 1, u, to_timestamp(s / 1000.0), to_timestamp(s / 1000.0), to_timestamp(s / 1000.0), 'succeeded', d
        FROM unnest(${part.map((_, i) => i)}::int[], ${part.map((r) => r.user)}::bigint[], ${part.map((r) => r.started)}::float8[], ${part.map((r) => r.ms)}::int[]) AS t(i, u, s, d)`;
    }
    // A window of its own: the answer for the window above may still be shared (for a second).
    const r = await call("GET", "/api/v1/admin/activity?window_seconds=120&interval_seconds=10", { headers: admin });
    expect(r.status).toBe(200);
    const slot = r.json.data.intervals.find((i: any) => i.at === new Date(at).toISOString());
    expect(slot.share[slow.id]).toBe(slot.share[fast.id]);
    const total = 10 * 1_000 + 9 * 10;
    // Other tests' users may have started in this interval too: read these two against each other.
    expect(slot.run_ms).toBeGreaterThanOrEqual(total);
    const pair = slot.occupancy[slow.id] + slot.occupancy[fast.id];
    expect(slot.occupancy[slow.id] / pair).toBeCloseTo(10_000 / total, 6); // ~0.99
    expect(slot.occupancy[fast.id] / pair).toBeCloseTo(90 / total, 6); // ~0.01
    const starts = slot.share[slow.id] + slot.share[fast.id];
    expect(slot.share[slow.id] / starts).toBe(0.5);
  });

  test("activity reader: settled intervals are read once and kept; newer ones are read again on every refresh", async () => {
    const reader = new ActivityReader(dbs, { defaultWeight: 1, maxUsers: 20, settleMs: 60_000, keepMs: 3_600_000 });
    const { id } = await signup("act_settled");
    const now = Math.floor(Date.now() / 10_000) * 10_000 + 5_000;
    const oldT = now - 5_000 - 120_000; // an interval that ended two minutes ago
    const newT = now - 5_000 - 10_000; // the one before the current
    const add = (jobId: number, at: number) =>
      dbs.all[0]!`INSERT INTO job_attempts (job_id, attempt, user_id, due_at, started_at, finished_at, outcome)
        VALUES (${jobId}, 1, ${id}, ${new Date(at)}, ${new Date(at)}, ${new Date(at)}, 'succeeded')`;
    await add(8000000001, oldT + 1);
    await add(8000000002, newT + 1);
    // This user's starts in the interval at t.
    const startsOf = (v: Awaited<ReturnType<ActivityReader["read"]>>, t: number) => {
      const slot = v.intervals.find((i) => i.at === new Date(t).toISOString())!;
      return Math.round((slot.share[String(id)] ?? 0) * slot.starts);
    };
    const first = await reader.read(300_000, 10_000, now);
    expect([startsOf(first, oldT), startsOf(first, newT)]).toEqual([1, 1]);
    // Late rows: the settled interval keeps what it read; the newer one shows them.
    await add(8000000003, oldT + 2);
    await add(8000000004, newT + 2);
    const second = await reader.read(300_000, 10_000, now + 1_000);
    expect([startsOf(second, oldT), startsOf(second, newT)]).toEqual([1, 2]);
    // A new reader reads everything once.
    expect(startsOf(await new ActivityReader(dbs, { defaultWeight: 1, maxUsers: 20, settleMs: 60_000, keepMs: 3_600_000 }).read(300_000, 10_000, now + 1_000), oldT)).toBe(2);
  });

  test("/docs/json: no integer parameter or field claims a default (Elysia's string branch of t.Integer says 0)", async () => {
    const text = (await call("GET", "/docs/json")).text;
    const doc = JSON.parse(text);
    const activity = doc.paths["/api/v1/admin/activity"].get.parameters;
    expect(activity.map((p: any) => p.name).sort()).toEqual(["interval_seconds", "window_seconds"]);
    for (const p of activity) expect(JSON.stringify(p.schema)).not.toContain('"default"');
    expect(JSON.stringify(doc.paths["/api/v1/me/jobs"].get.parameters.find((p: any) => p.name === "limit").schema)).not.toContain('"default"');
    expect(text).not.toMatch(/"format":"integer","default":0/);
    expect(text).not.toMatch(/"default":0,"type":"string"/);
  });

  test("shards: the owner from etcd, the epoch from the fence; 503 without etcd", async () => {
    expectError(await call("GET", "/api/v1/admin/shards", { headers: admin }), 503, "unavailable");
    const prefix = `/test/api-shards-${process.pid}-${Date.now()}`;
    const cfg = config({ ETCD_PREFIX: prefix });
    const etcd = etcdClient(cfg.etcd);
    try {
      const withEtcd = client(rootApp(cfg.api.maxBodyBytes, () => [], apiRoutes(cfg, dbs, new IdGenerator(12), etcd)));
      await etcd.put(`${prefix}/members/m-1`).value("");
      await etcd.put(`${prefix}/shards/3`).value("m-1");
      await dbs.forShard(3)`INSERT INTO shard_fences (shard_id, epoch, owner) VALUES (3, 7, 'm-1') ON CONFLICT (shard_id) DO UPDATE SET epoch = 7, owner = 'm-1', released_epoch = NULL`;
      await dbs.forShard(5)`INSERT INTO shard_fences (shard_id, epoch, owner, released_epoch) VALUES (5, 2, 'm-0', 2) ON CONFLICT (shard_id) DO UPDATE SET epoch = 2, owner = 'm-0', released_epoch = 2`;
      const r = await withEtcd("GET", "/api/v1/admin/shards", { headers: admin });
      expect(r.status).toBe(200);
      expect(r.json.data.members).toEqual(["m-1"]);
      expect(r.json.data.shards.length).toBe(SHARDS);
      expect(r.json.data.shards[3]).toMatchObject({ shard: 3, database: databaseOf(3, SHARDS, 2), owner: "m-1", epoch: "7", fenced_by: "m-1", released: false });
      expect(r.json.data.shards[5]).toMatchObject({ owner: null, epoch: "2", fenced_by: "m-0", released: true });
      expect(r.json.data.shards[0]).toMatchObject({ owner: null, epoch: null, released: false });
    } finally {
      await etcd.delete().prefix(prefix).catch(() => {});
      etcd.close();
    }
  });

  test("retry any user's dead-lettered job; 409 for a job that is not failed; 404 for none", async () => {
    const { token } = await signup("dead_lettered");
    const made = await call("POST", "/api/v1/me/jobs", { token, body: { message: "doomed", execute_at: soon() } });
    const id = made.json.data.id;
    expectError(await call("POST", `/api/v1/admin/jobs/${id}/retry`, { headers: admin }), 409, "job_not_retryable");
    // Failed as the executor fails it (a finished job moves to job_history).
    await dbs.forShard(made.json.data.shard_id)`UPDATE jobs SET status = 'failed', attempt = 1, started_at = now(), finished_at = now(), last_error = 'boom' WHERE id = ${id}`;
    const dead = await call("GET", "/api/v1/admin/jobs?status=failed", { headers: admin });
    expect(dead.json.data.map((j: any) => j.id)).toContain(id);
    const retried = await call("POST", `/api/v1/admin/jobs/${id}/retry`, { headers: admin });
    expect(retried.status).toBe(200);
    expect(retried.json.data).toMatchObject({ id, status: "retrying", attempt: 1 });
    expect((await call("GET", `/api/v1/me/jobs/${id}`, { token })).json.data.status).toBe("retrying");
    expectError(await call("POST", "/api/v1/admin/jobs/999999999999/retry", { headers: admin }), 404, "not_found");
    expectError(await call("POST", "/api/v1/admin/jobs/abc/retry", { headers: admin }), 400, "invalid_job_id");
  });
});

describe("auth", () => {
  test("login returns token, expire and user; refresh returns a new token", async () => {
    await call("POST", "/api/v1/users", { body: { username: "bob_auth", password: "p4ssword!", job_weight: 2.5 } });
    const r = await call("POST", "/api/v1/auth/login", { body: { username: "bob_auth", password: "p4ssword!" } });
    expect(r.status).toBe(200);
    expect(r.json.data.user).toEqual({ id: expect.any(Number), username: "bob_auth", job_weight: 2.5, disabled: false, max_running: null, paused: false });
    expect(Date.parse(r.json.data.expire)).toBeGreaterThan(Date.now());
    const refreshed = await call("POST", "/api/v1/auth/refresh", { token: r.json.data.token });
    expect(refreshed.status).toBe(200);
    expect(refreshed.json.data.token).toMatch(/^[\w-]+\.[\w-]+\.[\w-]+$/);
    const jobs = await call("GET", "/api/v1/me/jobs", { token: refreshed.json.data.token });
    expect(jobs.status).toBe(200);
  });

  test("wrong password and unknown user are the same 401", async () => {
    await call("POST", "/api/v1/users", { body: { username: "carol_auth", password: "p4ssword!" } });
    expectError(await call("POST", "/api/v1/auth/login", { body: { username: "carol_auth", password: "nope-nope" } }), 401, "invalid_credentials");
    expectError(await call("POST", "/api/v1/auth/login", { body: { username: "nobody_here", password: "nope-nope" } }), 401, "invalid_credentials");
  });

  test("missing, malformed, wrongly signed and expired tokens are 401", async () => {
    const { id } = await signup("dave_auth");
    const secret = new TextEncoder().encode(config().jwt.secret);
    const expired = await new SignJWT({ sub: String(id) }).setProtectedHeader({ alg: "HS256" }).setExpirationTime(Math.floor(Date.now() / 1000) - 10).sign(secret);
    const forged = await new SignJWT({ sub: String(id) }).setProtectedHeader({ alg: "HS256" }).setExpirationTime("1h").sign(new TextEncoder().encode("another-secret-another-secret-another"));
    for (const path of ["/api/v1/me/jobs", "/api/v1/auth/refresh"]) {
      const method = path.endsWith("refresh") ? "POST" : "GET";
      expectError(await call(method, path), 401, "unauthorized");
      expectError(await call(method, path, { headers: { authorization: "Basic abc" } }), 401, "unauthorized");
      expectError(await call(method, path, { token: "not.a.jwt" }), 401, "unauthorized");
      expectError(await call(method, path, { token: expired }), 401, "unauthorized");
      expectError(await call(method, path, { token: forged }), 401, "unauthorized");
    }
  });

  test("correctly signed tokens without exp, without iat, or living longer than JWT_TTL are 401", async () => {
    const { id, token } = await signup("ivy_auth");
    const secret = new TextEncoder().encode(config().jwt.secret);
    const now = Math.floor(Date.now() / 1000);
    const ttl = config().jwt.ttlSeconds;
    const sign = (claims: Record<string, unknown>) => new SignJWT({ sub: String(id), ...claims }).setProtectedHeader({ alg: "HS256" }).sign(secret);
    const forever = await sign({ iat: now }); // no exp
    const undated = await sign({ exp: now + 60 }); // no iat
    const longLived = await sign({ iat: now, exp: now + ttl + 3_600 });
    const fromTheFuture = await sign({ iat: now + 3_600, exp: now + 3_600 + ttl });
    for (const t of [forever, undated, longLived, fromTheFuture]) expectError(await call("GET", "/api/v1/me/jobs", { token: t }), 401, "unauthorized");
    // The tokens login issues pass.
    expect((await call("GET", "/api/v1/me/jobs", { token })).status).toBe(200);
    expect((await call("GET", "/api/v1/me/jobs", { token: await sign({ iat: now, exp: now + 60 }) })).status).toBe(200);
  });

  test("a bad token is 401 even with a bad body", async () => {
    expectError(await call("POST", "/api/v1/me/jobs", { raw: "{not json", token: "a.b.c" }), 401, "unauthorized");
  });
});

describe("jobs", () => {
  test("create answers the seed's fields plus lifecycle fields; the id is a string and fixes the shard", async () => {
    const { token, id: userId } = await signup("erin_jobs");
    const at = soon();
    const r = await call("POST", "/api/v1/me/jobs", { token, body: { message: "Hello world", execute_at: at } });
    expect(r.status).toBe(201);
    const job = r.json.data;
    expect(job).toMatchObject({ user_id: userId, message: "Hello world", status: "created", execute_at: at, attempt: 0, max_attempts: 3, last_error: null, started_at: null, finished_at: null, target: null });
    expect(typeof job.id).toBe("string");
    expect(BigInt(job.id)).toBeGreaterThan(2n ** 53n);
    expect(job.shard_id).toBe(shardOf(BigInt(job.id), SHARDS));
    // The request's trace context is stored with the job (as an object) for the scheduler to carry on.
    const [row] = await dbs.forShard(job.shard_id)`SELECT jsonb_typeof(trace_context) AS kind, trace_context->>'traceparent' AS tp FROM all_jobs WHERE id = ${job.id}`;
    expect(row!.kind).toBe("object");
    expect(row!.tp).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$/);
  });

  test("a user's jobs land on shards in both databases; list, get and cancel work across them", async () => {
    const { token } = await signup("frank_jobs");
    const ids: string[] = [];
    for (let i = 0; i < 40; i++) {
      const r = await call("POST", "/api/v1/me/jobs", { token, body: { message: `job ${i}`, execute_at: soon() } });
      expect(r.status).toBe(201);
      ids.push(r.json.data.id);
    }
    const shards = new Set(ids.map((id) => shardOf(BigInt(id), SHARDS)));
    const databases = new Set([...shards].map((s) => databaseOf(s, SHARDS, 2)));
    expect(shards.size).toBeGreaterThan(3);
    expect(databases).toEqual(new Set([0, 1]));
    // Rows really live in the database their shard maps to.
    for (const [i, sql] of dbs.all.entries()) {
      const rows = await sql`SELECT id, shard_id FROM all_jobs WHERE id IN ${sql(ids)}`;
      for (const row of rows) expect(databaseOf(row.shard_id, SHARDS, 2)).toBe(i);
    }

    // Cursor pagination: every job exactly once, newest first.
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const page: any = await call("GET", `/api/v1/me/jobs?limit=7${cursor ? `&cursor=${cursor}` : ""}`, { token });
      expect(page.status).toBe(200);
      expect(page.json.data.length).toBeLessThanOrEqual(7);
      seen.push(...page.json.data.map((j: any) => j.id));
      cursor = page.json.next_cursor;
    } while (cursor);
    expect(seen).toEqual([...ids].reverse());

    for (const id of ids.slice(0, 10)) {
      const got = await call("GET", `/api/v1/me/jobs/${id}`, { token });
      expect(got.status).toBe(200);
      expect(got.json.data.id).toBe(id);
      const cancelled = await call("POST", `/api/v1/me/jobs/${id}/cancel`, { token });
      expect(cancelled.status).toBe(200);
      expect(cancelled.json.data.status).toBe("cancelled");
      expect(cancelled.json.data.finished_at).not.toBeNull();
    }
    const onlyCancelled = await call("GET", "/api/v1/me/jobs?status=cancelled&limit=100", { token });
    expect(onlyCancelled.json.data.map((j: any) => j.id).sort()).toEqual(ids.slice(0, 10).sort());
  });

  test("the list shows jobs in every status without a filter, each status with one, across both databases, on every page", async () => {
    const { token } = await signup("lena_list");
    const made = await call("POST", "/api/v1/me/jobs/batch", { token, body: { jobs: Array.from({ length: 28 }, (_, i) => ({ message: `l${i}`, execute_at: soon() })) } });
    const ids: string[] = made.json.data.map((j: any) => j.id);
    expect(new Set(made.json.data.map((j: any) => databaseOf(j.shard_id, SHARDS, 2)))).toEqual(new Set([0, 1]));
    // Move the jobs through every status, as the scheduler and executor would (finished ones
    // move to job_history on the way).
    const statusOf = (i: number) => JOB_STATUSES[i % JOB_STATUSES.length]!;
    for (const sql of dbs.all) {
      for (const [i, id] of ids.entries()) {
        const st = statusOf(i);
        await sql`UPDATE jobs SET status = ${st}::job_status,
          attempt = CASE WHEN ${st} IN ('running', 'retrying', 'succeeded', 'failed') THEN 1 ELSE 0 END,
          started_at = CASE WHEN ${st} IN ('running', 'succeeded', 'failed') THEN now() END,
          deadline_at = CASE WHEN ${st} IN ('scheduled', 'running') THEN now() + interval '1 minute' END,
          finished_at = CASE WHEN ${st} IN ('succeeded', 'failed', 'cancelled') THEN now() END
          WHERE id = ${id}`;
      }
    }
    const pages = async (query: string) => {
      const seen: { id: string; status: string }[] = [];
      let cursor: string | null = null;
      do {
        const page: any = await call("GET", `/api/v1/me/jobs?limit=3${query}${cursor ? `&cursor=${cursor}` : ""}`, { token });
        expect(page.status).toBe(200);
        seen.push(...page.json.data.map((j: any) => ({ id: j.id, status: j.status })));
        cursor = page.json.next_cursor;
      } while (cursor);
      return seen;
    };
    const all = await pages("");
    expect(all.map((j) => j.id)).toEqual([...ids].reverse());
    expect(all.map((j) => j.status)).toEqual([...ids].map((_, i) => statusOf(i)).reverse());
    for (const status of JOB_STATUSES) {
      const only = await pages(`&status=${status}`);
      expect(only.map((j) => j.id)).toEqual(ids.filter((_, i) => statusOf(i) === status).reverse());
    }
    expectError(await call("GET", "/api/v1/me/jobs?status=done", { token }), 400, "invalid_request");
    // Several statuses at once, and counts per status.
    const two = await pages("&status=failed,retrying");
    expect(two.map((j) => j.id)).toEqual(ids.filter((_, i) => ["failed", "retrying"].includes(statusOf(i))).reverse());
    expectError(await call("GET", "/api/v1/me/jobs?status=failed,nope", { token }), 400, "invalid_request");
    const stats = await call("GET", "/api/v1/me/jobs/stats", { token });
    expect(stats.json.data).toEqual(Object.fromEntries(JOB_STATUSES.map((st) => [st, 4])));
  });

  test("kind: defaults from the target; must agree with it; unknown kinds are 400", async () => {
    const { token } = await signup("kim_kind");
    const log = await call("POST", "/api/v1/me/jobs", { token, body: { message: "m", execute_at: soon() } });
    expect(log.json.data.kind).toBe("log");
    const http = await call("POST", "/api/v1/me/jobs", { token, body: { message: "m", execute_at: soon(), target: { url: "http://example.com/" } } });
    expect(http.json.data.kind).toBe("http");
    expect((await call("GET", `/api/v1/me/jobs/${http.json.data.id}`, { token })).json.data.kind).toBe("http");
    expectError(await call("POST", "/api/v1/me/jobs", { token, body: { kind: "http", message: "m", execute_at: soon() } }), 400, "invalid_request");
    expectError(await call("POST", "/api/v1/me/jobs", { token, body: { kind: "log", message: "m", execute_at: soon(), target: { url: "http://example.com/" } } }), 400, "invalid_request");
    expectError(await call("POST", "/api/v1/me/jobs", { token, body: { kind: "shell", message: "m", execute_at: soon() } }), 400, "invalid_request");
  });

  test("the list filters by execute_at bounds", async () => {
    const { token } = await signup("mona_bounds");
    const base = Date.now() + 3_600_000;
    const at = (i: number) => new Date(base + i * 60_000).toISOString();
    const made = await call("POST", "/api/v1/me/jobs/batch", { token, body: { jobs: Array.from({ length: 10 }, (_, i) => ({ message: `b${i}`, execute_at: at(i) })) } });
    const ids: string[] = made.json.data.map((j: any) => j.id);
    const got = await call("GET", `/api/v1/me/jobs?execute_after=${encodeURIComponent(at(3))}&execute_before=${encodeURIComponent(at(7))}`, { token });
    expect(got.json.data.map((j: any) => j.id)).toEqual(ids.slice(3, 7).reverse());
    expectError(await call("GET", "/api/v1/me/jobs?execute_after=yesterday", { token }), 400, "invalid_request");
  });

  test("reschedule: a waiting job's execute_at moves; bad times are 400; another user's job is 404", async () => {
    const { token } = await signup("nina_move");
    const made = await call("POST", "/api/v1/me/jobs", { token, body: { message: "m", execute_at: soon() } });
    const to = soon(120_000);
    const moved = await call("PATCH", `/api/v1/me/jobs/${made.json.data.id}`, { token, body: { execute_at: to } });
    expect(moved.status).toBe(200);
    expect(moved.json.data.execute_at).toBe(to);
    expectError(await call("PATCH", `/api/v1/me/jobs/${made.json.data.id}`, { token, body: { execute_at: "soon" } }), 400, "invalid_request");
    expectError(await call("PATCH", `/api/v1/me/jobs/${made.json.data.id}`, { token, body: { execute_at: to, message: "x" } }), 400, "invalid_request");
    const stranger = await signup("olga_move");
    expectError(await call("PATCH", `/api/v1/me/jobs/${made.json.data.id}`, { token: stranger.token, body: { execute_at: to } }), 404, "not_found");
    expectError(await call("POST", `/api/v1/me/jobs/${made.json.data.id}/retry`, { token: stranger.token }), 404, "not_found");
    await call("POST", `/api/v1/me/jobs/${made.json.data.id}/cancel`, { token });
    expectError(await call("PATCH", `/api/v1/me/jobs/${made.json.data.id}`, { token, body: { execute_at: to } }), 409, "job_not_reschedulable");
  });

  test("the README's API table lists exactly the endpoints /docs/json describes", async () => {
    const doc = (await call("GET", "/docs/json")).json;
    const documented = Object.entries(doc.paths as Record<string, Record<string, unknown>>)
      .flatMap(([path, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${path.replace(/:(\w+)/g, "{$1}").replace("{job_id}", "{id}").replace("{user_id}", "{id}")}`))
      .sort();
    const readme = await Bun.file(new URL("../README.md", import.meta.url)).text();
    const listed = [...readme.matchAll(/^\| `(GET|POST|PATCH|PUT|DELETE) (\/api\/v1\/[^`]*)` \|/gm)].map((m) => `${m[1]} ${m[2]}`).sort();
    expect(listed.length).toBeGreaterThan(15);
    expect(listed).toEqual(documented);
  });

  test("/docs/json: every operation lists its error codes with an example envelope; the README names every code", async () => {
    const doc = (await call("GET", "/docs/json")).json;
    const seen = new Set<string>();
    for (const [path, ops] of Object.entries(doc.paths as Record<string, Record<string, any>>)) {
      if (!path.startsWith("/api/v1")) continue;
      for (const [method, op] of Object.entries(ops)) {
        const errors = Object.entries(op.responses ?? {}).filter(([status]) => Number(status) >= 400);
        expect(errors.length, `${method} ${path}`).toBeGreaterThan(0);
        for (const [status, r] of errors as [string, any][]) {
          for (const [code, ex] of Object.entries(r.content["application/json"].examples) as [string, any][]) {
            expect(Number(ERROR_CODES[code as keyof typeof ERROR_CODES][0])).toBe(Number(status));
            expect(ex.value).toMatchObject({ success: false, error: { code } });
            seen.add(code);
          }
        }
      }
    }
    expect(seen.has("quota_exceeded") && seen.has("job_not_retryable") && seen.has("unavailable")).toBe(true);
    const readme = await Bun.file(new URL("../README.md", import.meta.url)).text();
    const codes = readme.slice(readme.indexOf("Error codes:"), readme.indexOf("HTTP targets receive"));
    expect(Object.keys(ERROR_CODES).filter((c) => !codes.includes(`\`${c}\``))).toEqual([]);
  });

  test("/docs/json: the list's status filter has no default", async () => {
    const doc = (await call("GET", "/docs/json")).json;
    const param = doc.paths["/api/v1/me/jobs"].get.parameters.find((p: any) => p.name === "status");
    expect(param.required).toBe(false);
    expect(param.schema.default).toBeUndefined();
    expect(JSON.stringify(param.schema)).not.toContain('"default"');
  });

  test("cancel is refused with 409 and the status for running and finished jobs", async () => {
    const { token } = await signup("gina_jobs");
    const mk = async () => (await call("POST", "/api/v1/me/jobs", { token, body: { message: "m", execute_at: soon() } })).json.data;
    const a = await mk();
    await call("POST", `/api/v1/me/jobs/${a.id}/cancel`, { token });
    const again = await call("POST", `/api/v1/me/jobs/${a.id}/cancel`, { token });
    expectError(again, 409, "job_not_cancellable");
    expect(again.json.error.details).toEqual({ status: "cancelled" });

    const b = await mk();
    const sql = dbs.forShard(b.shard_id);
    await sql`UPDATE jobs SET status = 'running', started_at = now(), attempt = 1, deadline_at = now() + interval '1 minute' WHERE id = ${b.id}`;
    const running = await call("POST", `/api/v1/me/jobs/${b.id}/cancel`, { token });
    expectError(running, 409, "job_not_cancellable");
    expect(running.json.error.details).toEqual({ status: "running" });

    const c = await mk();
    await dbs.forShard(c.shard_id)`UPDATE jobs SET status = 'scheduled', deadline_at = now() + interval '1 minute' WHERE id = ${c.id}`;
    expect((await call("POST", `/api/v1/me/jobs/${c.id}/cancel`, { token })).json.data.status).toBe("cancelled");
  });

  test("another user's job is 404 for get and cancel, and absent from their list", async () => {
    const a = await signup("hank_owner");
    const b = await signup("ivan_other");
    const job = (await call("POST", "/api/v1/me/jobs", { token: a.token, body: { message: "mine", execute_at: soon() } })).json.data;
    expectError(await call("GET", `/api/v1/me/jobs/${job.id}`, { token: b.token }), 404, "not_found");
    expectError(await call("POST", `/api/v1/me/jobs/${job.id}/cancel`, { token: b.token }), 404, "not_found");
    expect((await call("GET", "/api/v1/me/jobs", { token: b.token })).json.data).toEqual([]);
    expect((await call("GET", `/api/v1/me/jobs/${job.id}`, { token: a.token })).json.data.status).toBe("created");
  });

  test("execute_at: past means now, beyond the horizon and malformed dates are 400", async () => {
    const { token } = await signup("jane_dates");
    const before = Date.now();
    const past = await call("POST", "/api/v1/me/jobs", { token, body: { message: "m", execute_at: "2020-01-01T00:00:00+07:00" } });
    expect(past.status).toBe(201);
    expect(Date.parse(past.json.data.execute_at)).toBeGreaterThanOrEqual(before);
    for (const bad of ["2030-01-01T00:00:00", "2030-02-30T00:00:00Z", "tomorrow", "2030-01-01", "", "2030-01-01T25:00:00Z", new Date(Date.now() + 40 * 86_400_000).toISOString()]) {
      const r = await call("POST", "/api/v1/me/jobs", { token, body: { message: "m", execute_at: bad } });
      expectError(r, 400, "invalid_request");
    }
  });

  test("an offset is honoured: +07:00 is seven hours before Z", async () => {
    const { token } = await signup("kate_offset");
    const local = new Date(Date.now() + 3_600_000);
    const iso = local.toISOString().replace(/\.\d+Z$/, "");
    const plus7 = new Date(local.getTime() + 7 * 3_600_000).toISOString().replace(/\.\d+Z$/, "+07:00");
    const r = await call("POST", "/api/v1/me/jobs", { token, body: { message: "m", execute_at: plus7 } });
    expect(r.json.data.execute_at).toBe(`${iso}.000Z`);
  });

  test("Idempotency-Key: a repeat returns the original job, a different body is 422, keys are per user", async () => {
    const a = await signup("leo_idem");
    const b = await signup("mia_idem");
    const body = { message: "pay invoice 42", execute_at: soon() };
    const first = await call("POST", "/api/v1/me/jobs", { token: a.token, body, headers: { "idempotency-key": "invoice-42" } });
    expect(first.status).toBe(201);
    const repeats = await Promise.all(
      Array.from({ length: 8 }, () => call("POST", "/api/v1/me/jobs", { token: a.token, body, headers: { "idempotency-key": "invoice-42" } })),
    );
    for (const r of repeats) {
      expect(r.status).toBe(200);
      expect(r.headers.get("idempotent-replayed")).toBe("true");
      expect(r.json.data.id).toBe(first.json.data.id);
    }
    let count = 0;
    for (const sql of dbs.all) count += Number((await sql`SELECT count(*) FROM all_jobs WHERE message = 'pay invoice 42'`)[0]!.count);
    expect(count).toBe(1);
    expectError(await call("POST", "/api/v1/me/jobs", { token: a.token, body: { ...body, message: "other" }, headers: { "idempotency-key": "invoice-42" } }), 422, "idempotency_key_reused");
    const other = await call("POST", "/api/v1/me/jobs", { token: b.token, body, headers: { "idempotency-key": "invoice-42" } });
    expect(other.status).toBe(201);
    expect(other.json.data.id).not.toBe(first.json.data.id);
    expectError(await call("POST", "/api/v1/me/jobs", { token: a.token, body, headers: { "idempotency-key": "has space" } }), 400, "invalid_idempotency_key");
  });

  test("a repeat after the job finished returns the finished job and does not create it again", async () => {
    const a = await signup("ola_idem");
    const body = { message: "once only", execute_at: soon() };
    const first = await call("POST", "/api/v1/me/jobs", { token: a.token, body, headers: { "idempotency-key": "once-1" } });
    expect(first.status).toBe(201);
    for (const s of dbs.all) await s`UPDATE jobs SET status = 'succeeded', finished_at = now() WHERE id = ${first.json.data.id}`;
    const again = await call("POST", "/api/v1/me/jobs", { token: a.token, body, headers: { "idempotency-key": "once-1" } });
    expect(again.status).toBe(200);
    expect(again.json.data.id).toBe(first.json.data.id);
    expect(again.json.data.status).toBe("succeeded");
    let waiting = 0;
    for (const s of dbs.all) waiting += Number((await s`SELECT count(*) FROM jobs WHERE id = ${first.json.data.id}`)[0]!.count);
    expect(waiting).toBe(0);
  });

  test("concurrent first requests with one key create one job", async () => {
    const a = await signup("ned_idem");
    const body = { message: "race", execute_at: soon() };
    const rs = await Promise.all(Array.from({ length: 10 }, () => call("POST", "/api/v1/me/jobs", { token: a.token, body, headers: { "idempotency-key": "race-1" } })));
    expect(new Set(rs.map((r) => r.json.data.id)).size).toBe(1);
    expect(rs.filter((r) => r.status === 201).length).toBe(1);
  });

  test("optional target and max_attempts are stored and returned", async () => {
    const { token } = await signup("olga_target");
    const target = { url: "https://example.test/hook", method: "PUT", headers: { "x-tenant": "7" }, timeout_ms: 2500 };
    const r = await call("POST", "/api/v1/me/jobs", { token, body: { message: "m", execute_at: soon(), max_attempts: 5, target } });
    expect(r.status).toBe(201);
    expect(r.json.data.max_attempts).toBe(5);
    expect(r.json.data.target).toEqual(target);
    for (const bad of [{ url: "ftp://x/y" }, { url: "not a url" }, { url: "https://u:p@x.test/" }, { url: "https://x.test", headers: { host: "evil" } }, { url: "https://x.test", timeout_ms: 5 }, { url: "https://x.test", method: "TRACE" }]) {
      expectError(await call("POST", "/api/v1/me/jobs", { token, body: { message: "m", execute_at: soon(), target: bad } }), 400, "invalid_request");
    }
  });

  test("batch: creates all jobs across shards, or none when one item is invalid", async () => {
    const { token } = await signup("paul_batch");
    const jobs = Array.from({ length: 250 }, (_, i) => ({ message: `b${i}`, execute_at: soon() }));
    const r = await call("POST", "/api/v1/me/jobs/batch", { token, body: { jobs } });
    expect(r.status).toBe(201);
    expect(r.json.data.map((j: any) => j.message)).toEqual(jobs.map((j) => j.message));
    expect(new Set(r.json.data.map((j: any) => j.shard_id)).size).toBe(SHARDS);
    const bad = [...jobs.slice(0, 5)];
    bad[3] = { message: "b3", execute_at: "yesterday" };
    const refused = await call("POST", "/api/v1/me/jobs/batch", { token, body: { jobs: bad } });
    expectError(refused, 400, "invalid_request");
    expect(refused.json.error.details).toEqual([{ path: "/jobs/3/execute_at", message: expect.any(String) }]);
    const all = await call("GET", "/api/v1/me/jobs?limit=1000", { token });
    expect(all.json.data.length).toBe(250);
    expectError(await call("POST", "/api/v1/me/jobs/batch", { token, body: { jobs: [] } }), 400, "invalid_request");
    const tooMany = Array.from({ length: 1001 }, () => ({ message: "x", execute_at: soon() }));
    expectError(await call("POST", "/api/v1/me/jobs/batch", { token, body: { jobs: tooMany } }), 400, "invalid_request");
  });
});

describe("quotas and abuse limits", () => {
  const app = (env: Record<string, string>) => {
    const cfg = config(env);
    return client(rootApp(cfg.api.maxBodyBytes, () => [], apiRoutes(cfg, dbs, new IdGenerator(10))));
  };

  test("pending jobs per user: the one past the quota is 429 'quota_exceeded' with Retry-After; a finished job frees its slot", async () => {
    const limited = app({ QUOTA_PENDING_JOBS: "5" });
    const { token } = await signup("pat_quota");
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await limited("POST", "/api/v1/me/jobs", { token, body: { message: `q${i}`, execute_at: soon() } })).json.data.id);
    const over = await limited("POST", "/api/v1/me/jobs", { token, body: { message: "q5", execute_at: soon() } });
    expectError(over, 429, "quota_exceeded");
    expect(Number(over.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
    expectError(await limited("POST", "/api/v1/me/jobs/batch", { token, body: { jobs: [{ message: "b", execute_at: soon() }] } }), 429, "quota_exceeded");
    await limited("POST", `/api/v1/me/jobs/${ids[0]}/cancel`, { token }); // finished: no longer pending
    await Bun.sleep(1_100); // the count is at most about a second old
    expect((await limited("POST", "/api/v1/me/jobs", { token, body: { message: "q6", execute_at: soon() } })).status).toBe(201);
    // Another user is not affected.
    const other = await signup("pia_quota");
    expect((await limited("POST", "/api/v1/me/jobs", { token: other.token, body: { message: "x", execute_at: soon() } })).status).toBe(201);
  });

  test("creations per user per second: past the rate, 429 'rate_limited'", async () => {
    const limited = app({ QUOTA_CREATES_PER_SECOND: "3" });
    const { token } = await signup("rae_rate");
    const codes: number[] = [];
    for (let i = 0; i < 5; i++) codes.push((await limited("POST", "/api/v1/me/jobs", { token, body: { message: `r${i}`, execute_at: soon() } })).status);
    expect(codes.filter((c) => c === 201).length).toBeLessThanOrEqual(3 * 2); // at most two one-second windows
    const again = await limited("POST", "/api/v1/me/jobs/batch", { token, body: { jobs: Array.from({ length: 4 }, () => ({ message: "b", execute_at: soon() })) } });
    expectError(again, 429, "rate_limited"); // 4 at once never fit in 3 per second
  });

  test("failed logins: the 11th attempt within a minute is 429 'too_many_attempts', even with the right password", async () => {
    const limited = app({ LOGIN_ATTEMPTS_PER_MINUTE: "10" });
    await signup("sam_login");
    for (let i = 0; i < 10; i++) expectError(await limited("POST", "/api/v1/auth/login", { body: { username: "sam_login", password: `wrong ${i}` } }), 401, "invalid_credentials");
    const blocked = await limited("POST", "/api/v1/auth/login", { body: { username: "sam_login", password: "correct horse battery" } });
    expectError(blocked, 429, "too_many_attempts");
    expect(Number(blocked.headers.get("retry-after"))).toBeGreaterThan(0);
  });

  // In-process requests have no peer: they all come from one address ("unknown"), as from one NAT.
  test("failed logins from one address: 200 wrong passwords for one user never lock the other users behind it out", async () => {
    const limited = app({ LOGIN_ATTEMPTS_PER_MINUTE: "10", LOGIN_ATTEMPTS_PER_ADDRESS_PER_MINUTE: "50" });
    await signup("nat_victim");
    const others = Array.from({ length: 20 }, (_, i) => `nat_user_${i}`);
    for (const name of others) expect((await call("POST", "/api/v1/users", { body: { username: name, password: "correct horse battery" } })).status).toBe(201);
    const codes: number[] = [];
    for (let i = 0; i < 200; i++) codes.push((await limited("POST", "/api/v1/auth/login", { body: { username: "nat_victim", password: `wrong ${i}` } })).status);
    expect(codes.slice(0, 10)).toEqual(Array(10).fill(401));
    expect(codes.slice(10)).toEqual(Array(190).fill(429)); // the account's own limit
    for (const name of others) expect((await limited("POST", "/api/v1/auth/login", { body: { username: name, password: "correct horse battery" } })).status).toBe(200);
  });

  test("failed logins from one address: a password sprayer is refused after LOGIN_ATTEMPTS_PER_ADDRESS_PER_MINUTE different usernames; a user known at that address still logs in", async () => {
    const limited = app({ LOGIN_ATTEMPTS_PER_MINUTE: "10", LOGIN_ATTEMPTS_PER_ADDRESS_PER_MINUTE: "50" });
    await signup("spray_regular");
    await signup("spray_newcomer");
    expect((await limited("POST", "/api/v1/auth/login", { body: { username: "spray_regular", password: "correct horse battery" } })).status).toBe(200);
    const replies = [];
    for (let i = 0; i < 60; i++) replies.push(await limited("POST", "/api/v1/auth/login", { body: { username: `sprayed_${i}`, password: "Summer2024!" } }));
    expect(replies.slice(0, 50).map((r) => r.status)).toEqual(Array(50).fill(401));
    for (const r of replies.slice(50)) expectError(r, 429, "too_many_attempts");
    expect(Number(replies[59]!.headers.get("retry-after"))).toBeGreaterThan(0);
    // A user who logged in from this address before is held by its own limit only...
    expect((await limited("POST", "/api/v1/auth/login", { body: { username: "spray_regular", password: "correct horse battery" } })).status).toBe(200);
    // ...one new to it waits out the minute, like the sprayer (its password is not checked).
    expectError(await limited("POST", "/api/v1/auth/login", { body: { username: "spray_newcomer", password: "correct horse battery" } }), 429, "too_many_attempts");
  });

  test("X-Forwarded-For: ignored from an untrusted peer (the peer is throttled), honoured from a TRUSTED_PROXIES peer (each forwarded address on its own)", async () => {
    const over = (env: Record<string, string>) => {
      const cfg = config({ LOGIN_ATTEMPTS_PER_MINUTE: "10", LOGIN_ATTEMPTS_PER_ADDRESS_PER_MINUTE: "5", ...env });
      const served = listen(rootApp(cfg.api.maxBodyBytes, () => [], apiRoutes(cfg, dbs, new IdGenerator(11))), { port: 0, hostname: "127.0.0.1", reusePort: false, timeoutMs: 10_000 });
      const fetchOver = client({ handle: (req) => fetch(req) }, `http://127.0.0.1:${served.server.port}`);
      const login = async (username: string, forwardedFor: string) =>
        (await fetchOver("POST", "/api/v1/auth/login", { body: { username, password: "wrong password" }, headers: { "x-forwarded-for": forwardedFor } })).status;
      return { login, stop: () => served.stop(true) };
    };
    const untrusted = over({});
    try {
      const codes: number[] = [];
      for (let i = 0; i < 8; i++) codes.push(await untrusted.login(`xff_u_${i}`, `203.0.113.${i + 1}`)); // a new "address" each time
      expect(codes).toEqual([401, 401, 401, 401, 401, 429, 429, 429]);
    } finally {
      await untrusted.stop();
    }
    const trusted = over({ TRUSTED_PROXIES: "127.0.0.1" });
    try {
      const a: number[] = [];
      for (let i = 0; i < 7; i++) a.push(await trusted.login(`xff_t_a${i}`, `6.6.6.6, 203.0.113.10`));
      expect(a).toEqual([401, 401, 401, 401, 401, 429, 429]);
      const b: number[] = [];
      for (let i = 0; i < 5; i++) b.push(await trusted.login(`xff_t_b${i}`, `203.0.113.10, 203.0.113.20`)); // the right-most counts
      expect(b).toEqual([401, 401, 401, 401, 401]);
      expect(await trusted.login("xff_t_b5", "203.0.113.20")).toBe(429);
    } finally {
      await trusted.stop();
    }
  });
});

describe("request time bound", () => {
  test("a request still unanswered after API_REQUEST_TIMEOUT gets 503 'unavailable' with Retry-After, on static and parameterised paths", async () => {
    const slow = new Elysia({ name: "slow" })
      .get("/api/v1/slow", async () => (await Bun.sleep(5_000), "late"))
      .get("/api/v1/slow/:id", async () => (await Bun.sleep(5_000), "late"));
    const app = listen(rootApp(65_536, () => [], slow), { port: 0, hostname: "127.0.0.1", reusePort: false, timeoutMs: 500 });
    try {
      for (const path of ["/api/v1/slow", "/api/v1/slow/7"]) {
        const t0 = performance.now();
        const r = await fetch(`http://127.0.0.1:${app.server!.port}${path}`);
        expect(r.status).toBe(503);
        expect(r.headers.get("retry-after")).toBe("1");
        expect(((await r.json()) as any).error.code).toBe("unavailable");
        expect(performance.now() - t0).toBeLessThan(4_000);
      }
      expect((await fetch(`http://127.0.0.1:${app.server!.port}/healthz`)).status).toBe(200);
    } finally {
      await app.stop(true);
    }
  });
});

describe("database unavailable", () => {
  test("every job endpoint answers 503 'unavailable' with Retry-After within API_REQUEST_TIMEOUT, and works again once it is back", async () => {
    // Over a real socket: the request bound lives in the server (src/http/server.ts listen).
    const cfg = config();
    const app = listen(rootApp(cfg.api.maxBodyBytes, () => [], apiRoutes(cfg, dbs, new IdGenerator(11))), { port: 0, hostname: "127.0.0.1", reusePort: false, timeoutMs: 3_000 });
    const call = client({ handle: (req) => fetch(req) }, `http://127.0.0.1:${app.server!.port}`);
    afterAll(() => app.stop(true));
    const { token } = await signup("pia_down");
    const made = await call("POST", "/api/v1/me/jobs", { token, body: { message: "before", execute_at: soon() } });
    expect(made.status).toBe(201);
    const admin = connect(`${PG_BASE}/postgres`, 1);
    const names = urls.map((u) => new URL(u).pathname.slice(1));
    try {
      for (const db of names) {
        await admin.unsafe(`ALTER DATABASE "${db}" ALLOW_CONNECTIONS false`);
        await admin`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = ${db} AND pid <> pg_backend_pid()`;
      }
      // Each answer within the server's bound (3 s here), never a hang: the client keeps a query
      // waiting while it retries connecting. The race lets `finally` reopen the database anyway.
      const within = <T,>(what: string, p: Promise<T>) =>
        Promise.race([p, Bun.sleep(6_000).then(() => Promise.reject(new Error(`${what}: no answer within 6 s`)))]);
      const replies = [
        await within("get", call("GET", `/api/v1/me/jobs/${made.json.data.id}`, { token })),
        await within("list", call("GET", "/api/v1/me/jobs", { token })),
        await within("create", call("POST", "/api/v1/me/jobs", { token, body: { message: "during", execute_at: soon() } })),
        await within("batch", call("POST", "/api/v1/me/jobs/batch", { token, body: { jobs: [{ message: "during", execute_at: soon() }] } })),
        await within("cancel", call("POST", `/api/v1/me/jobs/${made.json.data.id}/cancel`, { token })),
        await within("login", call("POST", "/api/v1/auth/login", { body: { username: "pia_down", password: "p4ssword!" } })),
      ];
      for (const r of replies) {
        expectError(r, 503, "unavailable");
        expect(r.headers.get("retry-after")).toBe("1");
      }
    } finally {
      for (const db of names) await admin.unsafe(`ALTER DATABASE "${db}" ALLOW_CONNECTIONS true`);
      await admin.end();
    }
    // Back: pooled connections that were cut answer 503 once each, then the pool reconnects. A
    // client follows Retry-After; a handful of tries is plenty.
    let status = 0;
    for (let i = 0; i < 20 && status !== 200; i++) {
      status = (await call("GET", `/api/v1/me/jobs/${made.json.data.id}`, { token })).status;
      if (status !== 200) expect(status).toBe(503);
    }
    expect(status).toBe(200);
    // Creates too (a new user's: nothing counted before), once the API's probe sees the
    // databases answer (every second: src/db/gate.ts).
    const fresh = (await signup("pia_after")).token;
    let created = 0;
    for (let i = 0; i < 40 && created !== 201; i++) {
      created = (await call("POST", "/api/v1/me/jobs", { token: fresh, body: { message: "after", execute_at: soon() } })).status;
      if (created !== 201) {
        expect(created).toBe(503);
        await Bun.sleep(100);
      }
    }
    expect(created).toBe(201);
  });
});

describe("bad input", () => {
  let token = "";
  beforeAll(async () => {
    token = (await signup("quinn_bad")).token;
  });

  test("malformed JSON, unknown routes, oversized bodies, bad ids and queries", async () => {
    expectError(await call("POST", "/api/v1/me/jobs", { token, raw: '{"message": "x", ' }), 400, "malformed_body");
    expectError(await call("POST", "/api/v1/users", { raw: "{{" }), 400, "malformed_body");
    expectError(await call("GET", "/api/v1/nope"), 404, "route_not_found");
    expectError(await call("DELETE", "/api/v1/me/jobs"), 404, "route_not_found");
    const big = "x".repeat(70_000);
    expectError(await call("POST", "/api/v1/me/jobs", { token, raw: JSON.stringify({ message: big, execute_at: soon() }), headers: { "content-length": String(big.length + 50) } }), 413, "payload_too_large");
    for (const id of ["abc", "0", "-5", "99999999999999999999", "1.5", "12345678901234567890123"]) {
      expectError(await call("GET", `/api/v1/me/jobs/${id}`, { token }), 400, "invalid_job_id");
      expectError(await call("POST", `/api/v1/me/jobs/${id}/cancel`, { token }), 400, "invalid_job_id");
    }
    expectError(await call("GET", "/api/v1/me/jobs/123456789", { token }), 404, "not_found");
    expectError(await call("GET", "/api/v1/me/jobs?limit=0", { token }), 400, "invalid_request");
    expectError(await call("GET", "/api/v1/me/jobs?limit=abc", { token }), 400, "invalid_request");
    expectError(await call("GET", "/api/v1/me/jobs?status=lost", { token }), 400, "invalid_request");
    expectError(await call("GET", "/api/v1/me/jobs?cursor=zzz", { token }), 400, "invalid_cursor");
    expectError(await call("POST", "/api/v1/me/jobs", { token, raw: "message=hi", headers: { "content-type": "text/plain" } }), 400, "malformed_body");
  });

  test("unknown fields are refused with 400 'invalid_request' naming each one, at any depth", async () => {
    const typo = await call("POST", "/api/v1/users", { body: { username: "typo_user", password: "p4ssword!", job_eight: 5 } });
    expectError(typo, 400, "invalid_request");
    expect(typo.json.error.details.map((d: any) => d.path)).toContain("/job_eight");
    // The refused request created nothing: the name is still free.
    expect((await call("POST", "/api/v1/users", { body: { username: "typo_user", password: "p4ssword!" } })).status).toBe(201);
    const job = await call("POST", "/api/v1/me/jobs", { token, body: { message: "x", execute_at: soon(), max_attempt: 2 } });
    expectError(job, 400, "invalid_request");
    expect(job.json.error.details.map((d: any) => d.path)).toContain("/max_attempt");
    const deep = await call("POST", "/api/v1/me/jobs/batch", { token, body: { jobs: [{ message: "x", execute_at: soon(), target: { url: "http://example.com/", timeout: 5 } }] } });
    expectError(deep, 400, "invalid_request");
    expect(deep.json.error.details.map((d: any) => d.path)).toContain("/jobs/0/target/timeout");
    expectError(await call("POST", "/api/v1/auth/login", { body: { username: "quinn_bad", password: "x", remember: true } }), 400, "invalid_request");
  });

  test("deep nesting is refused before parsing and validation: 400 'malformed_body', in linear time, never a 500", async () => {
    const nested = (n: number) => "[".repeat(n) + "]".repeat(n);
    const started = performance.now();
    for (const body of [`{"username": ${nested(20_000)}, "password": "p4ssword!"}`, `{"message": ${nested(33)}, "execute_at": "${soon()}"}`, "[".repeat(60_000)]) {
      expectError(await call("POST", "/api/v1/users", { raw: body }), 400, "malformed_body");
      expectError(await call("POST", "/api/v1/me/jobs", { token, raw: body }), 400, "malformed_body");
    }
    // Brackets inside strings are text, not nesting.
    const inString = await call("POST", "/api/v1/me/jobs", { token, body: { message: "[".repeat(5_000), execute_at: soon() } });
    expect([inString.status, inString.json]).toEqual([201, expect.anything()]);
    // Twelve refusals of bodies up to 60 KB (validating one 20,000-deep array used to take ~13 s).
    const tookMs = performance.now() - started;
    console.log(`deep bodies refused in ${tookMs.toFixed(1)} ms (12 requests)`);
    expect(tookMs).toBeLessThan(5_000);
    // A bad token is still a 401 first, whatever the body.
    expectError(await call("POST", "/api/v1/me/jobs", { token: "a.b.c", raw: nested(20_000) }), 401, "unauthorized");
  });

  test("over a real socket: 413 with the envelope whatever the size, declared or chunked; a 1 MB body of brackets is refused at once", async () => {
    const cfg = config({ API_MAX_BODY_BYTES: String(1_048_576) });
    const server = listen(rootApp(cfg.api.maxBodyBytes, () => [], apiRoutes(cfg, dbs, new IdGenerator(9))), { port: 0, hostname: "127.0.0.1", reusePort: false, timeoutMs: 10_000 });
    const url = `http://127.0.0.1:${server.server!.port}`;
    try {
      const post = (path: string, body: string | ReadableStream, headers: Record<string, string> = {}) =>
        fetch(url + path, { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${token}`, ...headers }, body });
      for (const size of [1_048_577, 10 * 1_048_576, 64 * 1_048_576]) {
        const r = await post("/api/v1/me/jobs", "x".repeat(size));
        expect(r.status).toBe(413);
        expect(((await r.json()) as any).error.code).toBe("payload_too_large");
      }
      // Chunked (no Content-Length): refused once the limit is passed, with the envelope.
      const chunks = new ReadableStream({
        start(c) {
          for (let i = 0; i < 40; i++) c.enqueue(new TextEncoder().encode("y".repeat(65_536)));
          c.close();
        },
      });
      const chunked = await post("/api/v1/users", chunks);
      expect(chunked.status).toBe(413);
      expect(((await chunked.json()) as any).error.code).toBe("payload_too_large");
      // 1 MB of brackets, while another client is served.
      const t0 = performance.now();
      const [deep, health] = await Promise.all([post("/api/v1/users", "[".repeat(1_000_000)), fetch(`${url}/healthz`)]);
      const tookMs = performance.now() - t0;
      console.log(`1 MB of brackets answered in ${tookMs.toFixed(1)} ms`);
      expect(deep.status).toBe(400);
      expect(((await deep.json()) as any).error.code).toBe("malformed_body");
      expect(health.status).toBe(200);
      expect(tookMs).toBeLessThan(2_000);
    } finally {
      await server.stop(true);
    }
  });

  test("fuzz: hundreds of generated bad bodies never produce a 5xx or leak internals", async () => {
    let seed = 12345;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
    const pick = <T,>(xs: T[]): T => xs[Math.floor(rnd() * xs.length)]!;
    const values: unknown[] = [null, true, 0, -1, 1e308, -1e-308, NaN, "", "x".repeat(300), "2030-01-01T00:00:00Z", "\u0000", "😀", [], [1, 2], {}, { a: 1 }, "' OR 1=1 --", "${7*7}", 2 ** 63, "9223372036854775808"];
    const fields = ["message", "execute_at", "max_attempts", "target", "username", "password", "job_weight", "jobs", "__proto__", "constructor"];
    const routes: [string, string][] = [
      ["POST", "/api/v1/users"], ["POST", "/api/v1/auth/login"], ["POST", "/api/v1/me/jobs"], ["POST", "/api/v1/me/jobs/batch"],
      ["POST", "/api/v1/auth/refresh"], ["GET", "/api/v1/me/jobs"], ["POST", "/api/v1/me/jobs/1/cancel"],
    ];
    const statuses = new Map<number, number>();
    for (let i = 0; i < 400; i++) {
      const [method, path] = pick(routes);
      let raw: string | Uint8Array;
      const shape = rnd();
      const depth = Math.floor(rnd() * 50_000);
      if (shape < 0.2) raw = pick(['{"', "[", "null", "1", '"str"', "{}", '{"jobs": {}}', "\u0000\u0001", "{'a': 1}"]);
      else if (shape < 0.25) raw = `{"${pick(fields)}": ${"[".repeat(depth)}${"]".repeat(depth)}}`; // deep nesting
      else if (shape < 0.3) raw = `{"${pick(fields)}": ${pick(["1e999999", "-1e999999", "123456789012345678901234567890", "0.1e-99999", "18446744073709551616"])}}`; // huge numbers
      else if (shape < 0.35) raw = JSON.stringify({ [pick(fields)]: "y".repeat(Math.floor(rnd() * 100_000)) }); // long strings (some past the body limit)
      else if (shape < 0.4) raw = new Uint8Array([0x7b, 0x22, 0x6d, 0x22, 0x3a, 0x22, 0xff, 0xfe, 0xc3, 0x28, 0x22, 0x7d]); // invalid UTF-8
      else {
        const body: Record<string, unknown> = {};
        const n = Math.floor(rnd() * 5);
        for (let k = 0; k < n; k++) body[pick(fields)] = shape < 0.6 ? pick(values) : { url: pick(values), headers: pick(values), timeout_ms: pick(values) };
        if (rnd() < 0.3) body.jobs = [{ ...body }, pick(values)];
        raw = JSON.stringify(body);
      }
      const r = await call(method, path, { raw, token: rnd() < 0.7 ? token : undefined, headers: rnd() < 0.1 ? { "content-type": pick(["text/plain", "application/x-www-form-urlencoded", "application/json; charset=utf-8"]) } : {} });
      statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
      expect(r.status).toBeLessThan(500);
      if (r.status >= 400) {
        expect(r.json?.success).toBe(false);
        expect(typeof r.json?.error?.code).toBe("string");
      }
      expect(r.text).not.toMatch(/at .*\.ts:\d+|SELECT |INSERT |postgres|TypeError|stack/i);
    }
    expect([...statuses.keys()].every((s) => s < 500)).toBe(true);
  });
});
