/**
 * Tenant controls through the API, against a real PostgreSQL: an operator's per-user cap on
 * running jobs (PATCH /api/v1/admin/users/{id} max_running) and pause/resume, by an operator
 * (/api/v1/admin/users/{id}/pause|resume) or by the user for themselves (/api/v1/me/pause|resume).
 * The API stores and shows them; the schedulers enforce them (their own tests).
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { openDatabases, type Databases } from "../src/db/databases.ts";
import { apiRoutes } from "../src/http/api.ts";
import { rootApp } from "../src/http/server.ts";
import { IdGenerator } from "../src/ids.ts";
import { client, expectError, signup as signupWith } from "./support/http.ts";
import { freshDatabases, testConfig } from "./support/env.ts";

setDefaultTimeout(60_000);

const ADMIN_TOKEN = "tenant-controls-admin-token-0123456789abc";
const admin = { authorization: `Bearer ${ADMIN_TOKEN}` };
let dbs: Databases;
let drop: () => Promise<void>;
let call: ReturnType<typeof client>;
const signup = (username: string, job_weight?: number) => signupWith(call, username, job_weight);

beforeAll(async () => {
  const fresh = await freshDatabases(1);
  drop = fresh.drop;
  const config = testConfig({ DATABASE_URLS: fresh.urls.join(","), SHARD_COUNT: "4", ADMIN_TOKEN, LOGIN_ATTEMPTS_PER_MINUTE: "1000" });
  dbs = openDatabases(fresh.urls, 4, 5);
  call = client(rootApp(config.api.maxBodyBytes, () => [], apiRoutes(config, dbs, new IdGenerator(11))));
});

afterAll(async () => {
  await dbs?.close();
  await drop?.();
});

const adminView = async (id: number) => (await call("GET", `/api/v1/admin/users/${id}`, { headers: admin })).json.data;
const ownView = async (token: string) => (await call("GET", "/api/v1/me", { token })).json.data;
async function listed(id: number): Promise<any> {
  const page = await call("GET", "/api/v1/admin/users?limit=1000", { headers: admin });
  expect(page.status).toBe(200);
  return page.json.data.find((u: any) => u.id === id);
}

describe("max_running", () => {
  test("a new user has the default (null) and is not paused, in every user view", async () => {
    const created = await call("POST", "/api/v1/users", { body: { username: "fresh_tc", password: "correct horse battery" } });
    expect(created.json.data).toMatchObject({ max_running: null, paused: false });
    const login = await call("POST", "/api/v1/auth/login", { body: { username: "fresh_tc", password: "correct horse battery" } });
    expect(login.json.data.user).toEqual({ id: created.json.data.id, username: "fresh_tc", job_weight: 1, disabled: false, max_running: null, paused: false });
    const me = await call("GET", "/api/v1/me", { token: login.json.data.token });
    expect(me.status).toBe(200);
    expect(me.json).toEqual({ data: login.json.data.user, success: true });
    expect(await adminView(created.json.data.id)).toEqual(login.json.data.user);
    expect(await listed(created.json.data.id)).toEqual(login.json.data.user);
  });

  test("an operator sets it, the user and the operator see it, null puts the default back", async () => {
    const { id, token } = await signup("capped");
    const set = await call("PATCH", `/api/v1/admin/users/${id}`, { body: { max_running: 10 }, headers: admin });
    expect(set.status).toBe(200);
    expect(set.json).toEqual({ data: { id, username: "capped", job_weight: 1, disabled: false, max_running: 10, paused: false }, success: true });
    expect((await adminView(id)).max_running).toBe(10);
    expect((await listed(id)).max_running).toBe(10);
    expect((await ownView(token)).max_running).toBe(10);
    const [row] = await dbs.users`SELECT max_running FROM users WHERE id = ${id}`;
    expect(row!.max_running).toBe(10);

    // Other fields change without touching it; it changes without touching them.
    expect((await call("PATCH", `/api/v1/admin/users/${id}`, { body: { job_weight: 3 }, headers: admin })).json.data).toMatchObject({ job_weight: 3, max_running: 10 });
    expect((await call("PATCH", `/api/v1/admin/users/${id}`, { body: { max_running: 100_000 }, headers: admin })).json.data).toMatchObject({ job_weight: 3, max_running: 100_000 });
    expect((await call("PATCH", `/api/v1/admin/users/${id}`, { body: { max_running: 1, job_weight: 2 }, headers: admin })).json.data).toMatchObject({ job_weight: 2, max_running: 1 });

    const reset = await call("PATCH", `/api/v1/admin/users/${id}`, { body: { max_running: null }, headers: admin });
    expect(reset.status).toBe(200);
    expect(reset.json.data).toMatchObject({ job_weight: 2, max_running: null });
    expect((await adminView(id)).max_running).toBeNull();
    expect((await ownView(token)).max_running).toBeNull();
    const [after] = await dbs.users`SELECT max_running FROM users WHERE id = ${id}`;
    expect(after!.max_running).toBeNull();
  });

  test.each([[0], [-1], [100_001], [1.5], ["5"], ["ten"], [true], [{}], [[3]]])("max_running %j is 400 naming /max_running, and nothing changes", async (max_running) => {
    const { id } = await signup(`bad_cap_${Math.random().toString(36).slice(2, 8)}`);
    await call("PATCH", `/api/v1/admin/users/${id}`, { body: { max_running: 10 }, headers: admin });
    const before = await adminView(id);
    // With a valid field beside it: the request is refused whole.
    for (const body of [{ max_running }, { max_running, job_weight: 4 }]) {
      const r = await call("PATCH", `/api/v1/admin/users/${id}`, { body, headers: admin });
      expectError(r, 400, "invalid_request");
      expect(r.json.error.details.map((d: any) => d.path)).toEqual(["/max_running"]);
      expect(r.json.error.details[0].message).toBe("must be a whole number from 1 to 100000, or null for the default");
    }
    expect(await adminView(id)).toEqual(before);
    expect(before).toMatchObject({ max_running: 10, job_weight: 1 });
  });

  test("only the admin token sets it; an unknown user is 404", async () => {
    const { id, token } = await signup("cap_self");
    expectError(await call("PATCH", `/api/v1/admin/users/${id}`, { body: { max_running: 5 }, token }), 401, "unauthorized");
    expectError(await call("PATCH", `/api/v1/admin/users/${id}`, { body: { max_running: 5 } }), 401, "unauthorized");
    // The user's own view is read-only: no PATCH on it.
    expectError(await call("PATCH", "/api/v1/me", { body: { max_running: 5 }, token }), 404, "route_not_found");
    expect((await adminView(id)).max_running).toBeNull();
    expectError(await call("PATCH", "/api/v1/admin/users/999999999", { body: { max_running: 5 }, headers: admin }), 404, "not_found");
  });
});

describe("pause and resume", () => {
  test("an operator pauses and resumes a user, idempotently; the user, the user page and the list show it", async () => {
    const { id, token } = await signup("paused_by_op");
    const other = await signup("bystander_op");
    for (let i = 0; i < 2; i++) {
      const r = await call("POST", `/api/v1/admin/users/${id}/pause`, { headers: admin });
      expect(r.status).toBe(200);
      expect(r.json).toEqual({ data: { id, username: "paused_by_op", job_weight: 1, disabled: false, max_running: null, paused: true }, success: true });
    }
    expect((await adminView(id)).paused).toBe(true);
    expect((await listed(id)).paused).toBe(true);
    expect((await ownView(token)).paused).toBe(true);
    expect((await call("POST", "/api/v1/auth/login", { body: { username: "paused_by_op", password: "correct horse battery" } })).json.data.user.paused).toBe(true);
    const [row] = await dbs.users`SELECT paused FROM users WHERE id = ${id}`;
    expect(row!.paused).toBe(true);
    // Paused is not disabled: the user still signs in and creates jobs (they wait to be dispatched).
    const job = await call("POST", "/api/v1/me/jobs", { token, body: { message: "waits", execute_at: new Date().toISOString() } });
    expect(job.status).toBe(201);
    expect((await adminView(other.id)).paused).toBe(false);

    for (let i = 0; i < 2; i++) {
      const r = await call("POST", `/api/v1/admin/users/${id}/resume`, { headers: admin });
      expect(r.status).toBe(200);
      expect(r.json.data.paused).toBe(false);
    }
    expect((await adminView(id)).paused).toBe(false);
    expect((await listed(id)).paused).toBe(false);
    expect((await ownView(token)).paused).toBe(false);
    // Pause and max_running are independent.
    await call("PATCH", `/api/v1/admin/users/${id}`, { body: { max_running: 7 }, headers: admin });
    expect((await call("POST", `/api/v1/admin/users/${id}/pause`, { headers: admin })).json.data).toMatchObject({ paused: true, max_running: 7 });
    expect((await call("PATCH", `/api/v1/admin/users/${id}`, { body: { max_running: null }, headers: admin })).json.data).toMatchObject({ paused: true, max_running: null });
  });

  test("a user pauses and resumes themselves, idempotently, and only themselves", async () => {
    const me = await signup("self_pauser");
    const other = await signup("self_bystander");
    for (let i = 0; i < 2; i++) {
      const r = await call("POST", "/api/v1/me/pause", { token: me.token });
      expect(r.status).toBe(200);
      expect(r.json).toEqual({ data: { id: me.id, username: "self_pauser", job_weight: 1, disabled: false, max_running: null, paused: true }, success: true });
    }
    expect((await ownView(me.token)).paused).toBe(true);
    expect((await adminView(me.id)).paused).toBe(true);
    expect((await listed(me.id)).paused).toBe(true);
    expect((await ownView(other.token)).paused).toBe(false);
    expect((await adminView(other.id)).paused).toBe(false);

    // Naming another user in a body or query changes nothing for them: /me is the token's user.
    const sneaky = await call("POST", `/api/v1/me/pause?user_id=${other.id}`, { token: me.token, body: { user_id: other.id, id: other.id } });
    expect(sneaky.status).toBe(200);
    expect(sneaky.json.data.id).toBe(me.id);
    expect((await adminView(other.id)).paused).toBe(false);
    // There is no route for a user to pause someone else; the admin routes refuse a user's token.
    expectError(await call("POST", `/api/v1/admin/users/${other.id}/pause`, { token: me.token }), 401, "unauthorized");
    expectError(await call("POST", `/api/v1/me/users/${other.id}/pause`, { token: me.token }), 404, "route_not_found");
    expectError(await call("POST", `/api/v1/users/${other.id}/pause`, { token: me.token }), 404, "route_not_found");
    expect((await adminView(other.id)).paused).toBe(false);

    // The other user pausing themselves does not resume or touch the first.
    expect((await call("POST", "/api/v1/me/pause", { token: other.token })).json.data).toMatchObject({ id: other.id, paused: true });
    expect((await call("POST", "/api/v1/me/resume", { token: other.token })).json.data).toMatchObject({ id: other.id, paused: false });
    expect((await adminView(me.id)).paused).toBe(true);

    for (let i = 0; i < 2; i++) {
      const r = await call("POST", "/api/v1/me/resume", { token: me.token });
      expect(r.status).toBe(200);
      expect(r.json.data).toMatchObject({ id: me.id, paused: false });
    }
    expect((await ownView(me.token)).paused).toBe(false);
    expect((await adminView(me.id)).paused).toBe(false);

    // An operator's pause is lifted by the user's resume, and the other way round: one flag.
    await call("POST", `/api/v1/admin/users/${me.id}/pause`, { headers: admin });
    expect((await call("POST", "/api/v1/me/resume", { token: me.token })).json.data.paused).toBe(false);
    await call("POST", "/api/v1/me/pause", { token: me.token });
    expect((await call("POST", `/api/v1/admin/users/${me.id}/resume`, { headers: admin })).json.data.paused).toBe(false);
  });

  test("no token, a bad token or a bad id is refused; an unknown user is 404", async () => {
    for (const action of ["pause", "resume"]) {
      expectError(await call("POST", `/api/v1/me/${action}`), 401, "unauthorized");
      expectError(await call("POST", `/api/v1/me/${action}`, { token: "a.b.c" }), 401, "unauthorized");
      expectError(await call("POST", `/api/v1/admin/users/1/${action}`), 401, "unauthorized");
      expectError(await call("POST", `/api/v1/admin/users/1/${action}`, { headers: { authorization: "Bearer nope" } }), 401, "unauthorized");
      expectError(await call("POST", `/api/v1/admin/users/999999999/${action}`, { headers: admin }), 404, "not_found");
      expectError(await call("POST", `/api/v1/admin/users/abc/${action}`, { headers: admin }), 400, "invalid_request");
    }
    expectError(await call("GET", "/api/v1/me"), 401, "unauthorized");
  });

  test("/docs/json describes the new routes, and max_running in the PATCH summary", async () => {
    const doc = (await call("GET", "/docs/json")).json;
    for (const [path, method, tag, security] of [
      ["/api/v1/me", "get", "users", "bearer"],
      ["/api/v1/me/pause", "post", "users", "bearer"],
      ["/api/v1/me/resume", "post", "users", "bearer"],
      ["/api/v1/admin/users/{user_id}/pause", "post", "admin", "admin"],
      ["/api/v1/admin/users/{user_id}/resume", "post", "admin", "admin"],
    ] as const) {
      const op = doc.paths[path]?.[method];
      expect(op, `${method} ${path}`).toBeDefined();
      expect(op.summary.length).toBeGreaterThan(10);
      expect(op.tags).toEqual([tag]);
      expect(op.security).toEqual([{ [security]: [] }]);
      expect(op.responses["401"]).toBeDefined();
    }
    expect(doc.paths["/api/v1/admin/users/{user_id}/pause"].post.responses["404"]).toBeDefined();
    // (Request bodies' schemas are not in the document for any route yet; the summary says it.)
    expect(doc.paths["/api/v1/admin/users/{user_id}"].patch.summary).toContain("max_running");
  });
});
