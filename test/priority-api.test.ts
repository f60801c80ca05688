/**
 * Job priority through the API, against real PostgreSQL (the app in-process, as test/api.test.ts
 * drives it): `priority` is high, normal or low on create and batch create, stored as
 * jobs.priority 0/1/2, shown in the job's view wherever the job is (waiting, finished in
 * job_history, retried back); absent means normal; an unknown value is 400 naming the field and
 * creates nothing (a batch with one is refused whole); the OpenAPI document gives it no default.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { IdGenerator } from "../src/ids.ts";
import { openDatabases, type Databases } from "../src/db/databases.ts";
import { apiRoutes } from "../src/http/api.ts";
import { JobBody } from "../src/http/jobs.routes.ts";
import { rootApp } from "../src/http/server.ts";
import { PRIORITIES } from "../src/jobs/job-input.ts";
import { initTelemetry } from "../src/telemetry.ts";
import { client, signup as signupWith } from "./support/http.ts";
import { freshDatabases, testConfig } from "./support/env.ts";

setDefaultTimeout(60_000);

const SHARDS = 4;
let dbs: Databases;
let drop: () => Promise<void>;
let call: ReturnType<typeof client>;
const signup = (username: string, job_weight?: number) => signupWith(call, username, job_weight);
const ADMIN_TOKEN = "test-admin-token-0123456789abcdefghijkl";

beforeAll(async () => {
  initTelemetry({ exporter: "none", otlpEndpoint: "", zipkinEndpoint: "", serviceName: "fairshare-test", sampler: "parentbased_always_on", samplerRatio: 1 }, "api");
  const fresh = await freshDatabases(2);
  drop = fresh.drop;
  dbs = openDatabases(fresh.urls, SHARDS, 5);
  const config = testConfig({ DATABASE_URLS: fresh.urls.join(","), SHARD_COUNT: String(SHARDS), JOB_HORIZON: "30d", ADMIN_TOKEN, LOGIN_ATTEMPTS_PER_MINUTE: "1000" });
  call = client(rootApp(config.api.maxBodyBytes, () => [], apiRoutes(config, dbs, new IdGenerator(21))));
});

afterAll(async () => {
  await dbs?.close();
  await drop?.();
});

const soon = (ms = 60_000) => new Date(Date.now() + ms).toISOString();

/** The stored jobs.priority of a job (0 high, 1 normal, 2 low), wherever the row is. */
async function stored(job: { id: string; shard_id: number }): Promise<number> {
  const [row] = await dbs.forShard(job.shard_id)`SELECT priority FROM all_jobs WHERE id = ${job.id}`;
  return row!.priority as number;
}

/** How many jobs the user has, counted in every database. */
async function countJobs(userId: number): Promise<number> {
  let n = 0;
  for (const sql of dbs.all) n += (await sql`SELECT count(*)::int AS n FROM all_jobs WHERE user_id = ${userId}`)[0]!.n as number;
  return n;
}

function expectInvalid(r: { status: number; json: any }, path: string) {
  expect(r.status).toBe(400);
  expect(r.json.success).toBe(false);
  expect(r.json.error.code).toBe("invalid_request");
  expect(r.json.error.details).toContainEqual({ path, message: "must be one of high, normal, low" });
}

describe("job priority", () => {
  test("each priority is stored as its number and shown by name in every view of the job", async () => {
    const { token } = await signup("prio_each");
    for (const [level, priority] of PRIORITIES.entries()) {
      const made = await call("POST", "/api/v1/me/jobs", { token, body: { message: `p ${priority}`, execute_at: soon(), priority } });
      expect(made.status).toBe(201);
      expect(made.json.data.priority).toBe(priority);
      expect(await stored(made.json.data)).toBe(level);
      expect((await call("GET", `/api/v1/me/jobs/${made.json.data.id}`, { token })).json.data.priority).toBe(priority);
    }
    const listed = (await call("GET", "/api/v1/me/jobs", { token })).json.data.map((j: any) => [j.message, j.priority]);
    expect(listed).toEqual([["p low", "low"], ["p normal", "normal"], ["p high", "high"]]);
  });

  test("no priority is normal: the answer has the same fields as before plus priority", async () => {
    const { token } = await signup("prio_none");
    const made = await call("POST", "/api/v1/me/jobs", { token, body: { message: "old client", execute_at: soon() } });
    expect(made.status).toBe(201);
    expect(made.json.data.priority).toBe("normal");
    expect(await stored(made.json.data)).toBe(1);
    expect(Object.keys(made.json.data).sort()).toEqual(
      ["attempt", "created_at", "execute_at", "finished_at", "id", "kind", "last_error", "max_attempts", "message", "next_attempt_at", "priority", "shard_id", "started_at", "status", "target", "trace_id", "updated_at", "user_id"],
    );
  });

  test.each([["urgent"], ["HIGH"], [""], [0], [null], [["high"]]])("priority %j is 400 naming /priority; nothing is created", async (priority) => {
    const { token, id } = await signup(`prio_bad_${typeof priority}_${String(priority).length}_${Math.random().toString(36).slice(2, 8)}`);
    const r = await call("POST", "/api/v1/me/jobs", { token, body: { message: "m", execute_at: soon(), priority } });
    expectInvalid(r, "/priority");
    expect(await countJobs(id)).toBe(0);
  });

  test("batch: each job its own priority; one unknown value refuses the whole batch, naming /jobs/i/priority", async () => {
    const { token, id } = await signup("prio_batch");
    const jobs = [{ priority: "low" }, {}, { priority: "high" }, { priority: "normal" }].map((p, i) => ({ message: `b${i}`, execute_at: soon(), ...p }));
    const made = await call("POST", "/api/v1/me/jobs/batch", { token, body: { jobs } });
    expect(made.status).toBe(201);
    expect(made.json.data.map((j: any) => j.priority)).toEqual(["low", "normal", "high", "normal"]);
    expect(await Promise.all(made.json.data.map(stored))).toEqual([2, 1, 0, 1]);
    expect(await countJobs(id)).toBe(4);

    const bad = [...jobs, { message: "b4", execute_at: soon(), priority: "urgent" }];
    bad[3] = { ...bad[3]!, priority: "lowest" };
    const refused = await call("POST", "/api/v1/me/jobs/batch", { token, body: { jobs: bad } });
    expectInvalid(refused, "/jobs/3/priority");
    expectInvalid(refused, "/jobs/4/priority");
    expect(refused.json.error.details.map((d: any) => d.path)).not.toContain("/jobs/0/priority");
    expect(await countJobs(id)).toBe(4);
  });

  test("Idempotency-Key: a repeat with the same priority replays; another priority is 422; a body without one is not rewritten", async () => {
    const { token } = await signup("prio_idem");
    const body = { message: "once", execute_at: soon(), priority: "high" };
    const first = await call("POST", "/api/v1/me/jobs", { token, body, headers: { "idempotency-key": "k-prio" } });
    expect(first.status).toBe(201);
    const again = await call("POST", "/api/v1/me/jobs", { token, body, headers: { "idempotency-key": "k-prio" } });
    expect(again.status).toBe(200);
    expect(again.headers.get("idempotent-replayed")).toBe("true");
    expect(again.json.data).toMatchObject({ id: first.json.data.id, priority: "high" });
    const other = await call("POST", "/api/v1/me/jobs", { token, body: { ...body, priority: "low" }, headers: { "idempotency-key": "k-prio" } });
    expect(other.status).toBe(422);
    expect(other.json.error.code).toBe("idempotency_key_reused");

    // An older client's request (no priority) hashes as it did before the field existed: the
    // schema adds no default to it. Its stored hash is the one of the body exactly as sent.
    const plain = { message: "plain", execute_at: soon() };
    const made = await call("POST", "/api/v1/me/jobs", { token, body: plain, headers: { "idempotency-key": "k-plain" } });
    expect(made.json.data.priority).toBe("normal");
    const [key] = await dbs.users`SELECT request_hash FROM idempotency_keys WHERE key = 'k-plain'`;
    const { requestHash } = await import("../src/jobs/job-store.ts");
    expect(key!.request_hash).toBe(requestHash(plain));
    const replay = await call("POST", "/api/v1/me/jobs", { token, body: plain, headers: { "idempotency-key": "k-plain" } });
    expect(replay.status).toBe(200);
    expect(replay.json.data.id).toBe(made.json.data.id);
  });

  test("a finished job keeps its priority (job_history), and a retry from failed brings it back", async () => {
    const { token } = await signup("prio_history");
    const cancelled = await call("POST", "/api/v1/me/jobs", { token, body: { message: "c", execute_at: soon(), priority: "low" } });
    const done = await call("POST", `/api/v1/me/jobs/${cancelled.json.data.id}/cancel`, { token });
    expect(done.json.data).toMatchObject({ status: "cancelled", priority: "low" });
    expect((await call("GET", `/api/v1/me/jobs/${cancelled.json.data.id}`, { token })).json.data.priority).toBe("low");

    const made = await call("POST", "/api/v1/me/jobs", { token, body: { message: "f", execute_at: soon(), priority: "high" } });
    const job = made.json.data;
    // Failed as the executor fails it (the row moves to job_history).
    await dbs.forShard(job.shard_id)`UPDATE jobs SET status = 'failed', attempt = 1, started_at = now(), finished_at = now(), last_error = 'boom' WHERE id = ${job.id}`;
    expect((await dbs.forShard(job.shard_id)`SELECT priority FROM job_history WHERE id = ${job.id}`)[0]!.priority).toBe(0);
    const retried = await call("POST", `/api/v1/me/jobs/${job.id}/retry`, { token });
    expect(retried.json.data).toMatchObject({ status: "retrying", priority: "high" });
    expect((await dbs.forShard(job.shard_id)`SELECT priority FROM jobs WHERE id = ${job.id}`)[0]!.priority).toBe(0);
  });

  test("reschedule takes no priority (400, nothing changed)", async () => {
    const { token } = await signup("prio_patch");
    const made = await call("POST", "/api/v1/me/jobs", { token, body: { message: "m", execute_at: soon(), priority: "low" } });
    const r = await call("PATCH", `/api/v1/me/jobs/${made.json.data.id}`, { token, body: { execute_at: soon(120_000), priority: "high" } });
    expect(r.status).toBe(400);
    expect(r.json.error.details).toContainEqual({ path: "/priority", message: "unknown property 'priority'" });
    expect((await call("GET", `/api/v1/me/jobs/${made.json.data.id}`, { token })).json.data).toMatchObject({ priority: "low", execute_at: made.json.data.execute_at });
  });

  test("the body schema: priority optional, one of high, normal, low, no default (in /docs/json neither)", async () => {
    // t.UnionEnum would give the field a default ("high"), written into every body without one.
    const field = JobBody.properties.priority as unknown as { anyOf: { const: string }[]; default?: unknown };
    expect(JobBody.required).not.toContain("priority");
    expect(field.anyOf.map((b) => b.const)).toEqual(["high", "normal", "low"]);
    expect("default" in field).toBe(false);
    // The published document (which, with the API's own body parser, carries no request body
    // schemas at the time of writing) must not claim a default priority either.
    const text = (await call("GET", "/docs/json")).text;
    expect(text).not.toMatch(/"default":\s*"(high|normal|low)"/);
  });
});
