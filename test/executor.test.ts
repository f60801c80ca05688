/**
 * The executor end to end: jobs go in through the API and come out through real Kafka into
 * HTTP targets served by this test, with real PostgreSQL and etcd in between.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { DUE_CHANNEL, duePayload } from "../src/db/due-notify.ts";
import { verifySignature } from "../src/executor/signing.ts";
import { connect, type Sql } from "../src/db/databases.ts";
import { collect, slice, waitFor, type RoleProc, type Slice } from "./support/procs.ts";
import { QUICK_RETRY_ENV, withoutDatabase } from "./support/env.ts";

// Real services: allow for broker rebalances and lease expiry on a loaded 2-core machine.
setDefaultTimeout(60_000);

let s: Slice;
let api: RoleProc;
let executor: RoleProc;
let sql: Sql;
let token = "";
const calls = new Map<string, { at: number; headers: Headers; body: string }[]>();
let target: ReturnType<typeof Bun.serve>;
let secret = ""; // exec_user's signing secret, shown once at sign-up
const ADMIN_TOKEN = "executor-test-admin-token-0123456789ab";

beforeAll(async () => {
  target = Bun.serve({
    port: 0,
    hostname: "127.0.0.1",
    async fetch(req) {
      const url = new URL(req.url);
      const key = url.pathname;
      const list = calls.get(key) ?? [];
      list.push({ at: Date.now(), headers: req.headers, body: await req.text() });
      calls.set(key, list);
      if (key.startsWith("/flaky")) return new Response("", { status: list.length <= 2 ? 503 : 200 });
      if (key.startsWith("/always500")) return new Response("", { status: 500 });
      if (key.startsWith("/fail3")) return new Response("", { status: list.length <= 3 ? 500 : 200 });
      if (key.startsWith("/bad400")) return new Response("", { status: 400 });
      if (key.startsWith("/slow")) {
        await Bun.sleep(Number(url.searchParams.get("ms") ?? 3_000));
        return new Response("ok");
      }
      return new Response("ok");
    },
  });
  s = await slice({
    env: {
      ...QUICK_RETRY_ENV,
      JOB_RUN_GRACE: "2s",
      RESCUE_INTERVAL: "1s",
      SCHEDULED_DEADLINE: "20s",
      ETCD_LEASE_TTL_SECONDS: "3",
      ADMIN_TOKEN,
      LOG_LEVEL: "warn",
    },
  });
  api = await s.start("api");
  await s.start("scheduler");
  executor = await s.start("executor");
  sql = connect(s.env.DATABASE_URLS!, 2);
  secret = (await post("/api/v1/users", { username: "exec_user", password: "password123" })).data.signing_secret;
  token = (await post("/api/v1/auth/login", { username: "exec_user", password: "password123" })).data.token;
}, 120_000);

afterAll(async () => {
  await sql?.end();
  await s?.close();
  target?.stop(true);
});

function post(path: string, body?: unknown): Promise<any> {
  return fetch(api.url + path, {
    method: "POST",
    headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  }).then((r) => r.json());
}
const get = (id: string) => fetch(`${api.url}/api/v1/me/jobs/${id}`, { headers: { authorization: `Bearer ${token}` } }).then((r) => r.json() as Promise<any>).then((r) => r.data);
let other = "";
/** A second user's token (made once). */
async function otherToken(): Promise<string> {
  if (other) return other;
  const body = (b: unknown) => ({ method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(b) });
  await fetch(`${api.url}/api/v1/users`, body({ username: "exec_other", password: "password123" }));
  other = ((await fetch(`${api.url}/api/v1/auth/login`, body({ username: "exec_other", password: "password123" })).then((r) => r.json())) as any).data.token;
  return other;
}
/** Runs `during` while the executor's database connections are cut and no new one is let in. */
const cutExecutor = (during: () => Promise<unknown>) => withoutDatabase(s.env.DATABASE_URLS!, during, "fairshare-executor");
const inSeconds = (sec: number) => new Date(Date.now() + sec * 1000).toISOString();
const targetUrl = (path: string) => `http://127.0.0.1:${target.port}${path}`;
const terminal = (id: string, timeoutMs = 30_000) =>
  waitFor(`job ${id} to finish`, async () => {
    const j = await get(id);
    return ["succeeded", "failed", "cancelled"].includes(j.status) ? j : null;
  }, timeoutMs, 200);

describe("executor", () => {
  test("log jobs succeed at their time", async () => {
    const jobs = await Promise.all(Array.from({ length: 20 }, (_, i) => post("/api/v1/me/jobs", { message: `hello ${i}`, execute_at: inSeconds(2) })));
    for (const { data } of jobs) {
      const done = await terminal(data.id);
      expect(done.status).toBe("succeeded");
      expect(done.attempt).toBe(1);
      expect(Date.parse(done.started_at)).toBeGreaterThanOrEqual(Date.parse(data.execute_at));
    }
  });

  test("calls are signed with the owner's own secret; after a rotation with the new and, during the grace period, the old", async () => {
    const other = await fetch(`${api.url}/api/v1/users`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ username: "signer_b", password: "password123" }) }).then((r) => r.json() as Promise<any>);
    const first = other.data.signing_secret as string;
    expect(first).toMatch(/^whsec_[0-9a-f]{64}$/);
    expect(first).not.toBe(secret);
    const login = await fetch(`${api.url}/api/v1/auth/login`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ username: "signer_b", password: "password123" }) }).then((r) => r.json() as Promise<any>);
    const auth = { "content-type": "application/json", authorization: `Bearer ${login.data.token}` };
    const rotated = await fetch(`${api.url}/api/v1/me/signing-secret`, { method: "POST", headers: auth }).then((r) => r.json() as Promise<any>);
    const second = rotated.data.signing_secret as string;
    expect(second).not.toBe(first);
    expect(Date.parse(rotated.data.previous_valid_until)).toBeGreaterThan(Date.now() + 23 * 3_600_000);
    const made = await fetch(`${api.url}/api/v1/me/jobs`, { method: "POST", headers: auth, body: JSON.stringify({ message: "for b", execute_at: inSeconds(1), target: { url: targetUrl("/signed-b") } }) }).then((r) => r.json() as Promise<any>);
    expect((await waitFor("b's job", async () => calls.get("/signed-b")?.[0], 30_000, 100)).body).toBe("for b");
    const c = calls.get("/signed-b")![0]!;
    const header = c.headers.get("x-signature")!;
    expect(header.split(",").length).toBe(2); // new, then old
    const signed = { timestamp: c.headers.get("x-signature-timestamp")!, jobId: made.data.id, method: "POST", url: targetUrl("/signed-b"), body: c.body };
    expect(verifySignature(header, second, signed)).toBe(true);
    expect(verifySignature(header, first, signed)).toBe(true);
    // Another user's secret verifies nothing of b's, and a stale timestamp is refused.
    expect(verifySignature(header, secret, signed)).toBe(false);
    expect(verifySignature(header, second, signed, 300, Number(signed.timestamp) + 301)).toBe(false);
  });

  test("an HTTP target gets the message, signed; a target failing twice then succeeding ends succeeded at attempt 3", async () => {
    const { data } = await post("/api/v1/me/jobs", { message: "flaky body", execute_at: inSeconds(1), max_attempts: 5, target: { url: targetUrl("/flaky-1"), headers: { "x-tenant": "t1" } } });
    const done = await terminal(data.id);
    expect(done.status).toBe("succeeded");
    expect(done.attempt).toBe(3);
    expect(done.last_error).toBe("HTTP 503");
    const seen = calls.get("/flaky-1")!;
    expect(seen.length).toBe(3);
    for (const c of seen) {
      expect(c.body).toBe("flaky body");
      expect(c.headers.get("x-tenant")).toBe("t1");
      const signed = { timestamp: c.headers.get("x-signature-timestamp")!, jobId: data.id, method: "POST", url: targetUrl("/flaky-1"), body: c.body };
      expect(c.headers.get("x-job-id")).toBe(data.id);
      expect(verifySignature(c.headers.get("x-signature")!, secret, signed)).toBe(true);
      // Bound to this job and URL: the same body for another job or URL does not verify.
      expect(verifySignature(c.headers.get("x-signature")!, secret, { ...signed, jobId: "1" })).toBe(false);
      expect(verifySignature(c.headers.get("x-signature")!, secret, { ...signed, url: targetUrl("/other") })).toBe(false);
    }
    expect(seen.map((c) => c.headers.get("x-job-attempt"))).toEqual(["1", "2", "3"]);
    // Attempts are history: execute_at is as the user set it, and each try has its record.
    expect(done.execute_at).toBe(data.execute_at);
    expect(done.next_attempt_at).toBeNull();
    const history = await fetch(`${api.url}/api/v1/me/jobs/${data.id}/attempts`, { headers: { authorization: `Bearer ${token}` } }).then((r) => r.json() as Promise<any>);
    expect(history.data.map((a: any) => [a.attempt, a.outcome, a.error_class, a.http_status, a.error])).toEqual([
      [1, "failed", "http_status", 503, "HTTP 503"],
      [2, "failed", "http_status", 503, "HTTP 503"],
      [3, "succeeded", null, 200, null],
    ]);
    for (const a of history.data) {
      expect(Date.parse(a.finished_at)).toBeGreaterThanOrEqual(Date.parse(a.started_at));
      expect(a.duration_ms).toBeGreaterThanOrEqual(0);
    }
    // Another user sees no history of this job.
    const stranger = await fetch(`${api.url}/api/v1/me/jobs/${data.id}/attempts`, { headers: { authorization: `Bearer ${await otherToken()}` } });
    expect(stranger.status).toBe(404);
    // Retries back off: the gaps are at least half the nominal delay (200 ms, 400 ms).
    expect(seen[1]!.at - seen[0]!.at).toBeGreaterThanOrEqual(100);
    expect(seen[2]!.at - seen[1]!.at).toBeGreaterThanOrEqual(200);
  });

  test("a target that always fails ends failed after max_attempts with a dead-letter record", async () => {
    const { data } = await post("/api/v1/me/jobs", { message: "doomed", execute_at: inSeconds(1), max_attempts: 3, target: { url: targetUrl("/always500-a") } });
    const done = await terminal(data.id);
    expect(done.status).toBe("failed");
    expect(done.attempt).toBe(3);
    expect(done.last_error).toContain("attempts exhausted");
    expect(calls.get("/always500-a")!.length).toBe(3);
    const dlq = await collect<any>(s, s.topicDlq, (all) => all.some((r) => r.id === data.id), 20_000);
    const rec = dlq.find((r) => r.value.id === data.id)!.value;
    expect(rec).toMatchObject({ id: data.id, attempts: 3, max_attempts: 3, message: "doomed" });
    expect(rec.errors.at(-1)).toContain("HTTP 500");
  });

  test("a failed job retried from the dead-letter state runs again with a fresh budget; its history keeps every attempt", async () => {
    const { data } = await post("/api/v1/me/jobs", { message: "retry me", execute_at: inSeconds(1), max_attempts: 3, target: { url: targetUrl("/fail3") } });
    const failed = await terminal(data.id);
    expect([failed.status, failed.attempt]).toEqual(["failed", 3]);
    // Only a failed job can be retried.
    const other = await post("/api/v1/me/jobs", { message: "not failed", execute_at: inSeconds(600) });
    const refused = await fetch(`${api.url}/api/v1/me/jobs/${other.data.id}/retry`, { method: "POST", headers: { authorization: `Bearer ${token}` } });
    expect(refused.status).toBe(409);
    expect(((await refused.json()) as any).error).toMatchObject({ code: "job_not_retryable", details: { status: "created" } });
    // The operator sees it among the dead letters.
    const dlq = await fetch(`${api.url}/api/v1/admin/jobs?status=failed&limit=1000`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } }).then((r) => r.json() as Promise<any>);
    expect(dlq.data.some((j: any) => j.id === data.id)).toBe(true);
    const retried = await post(`/api/v1/me/jobs/${data.id}/retry`);
    expect(retried.data).toMatchObject({ status: "retrying", attempt: 3, max_attempts: 6, execute_at: data.execute_at });
    const done = await terminal(data.id);
    expect([done.status, done.attempt]).toEqual(["succeeded", 4]);
    const history = await fetch(`${api.url}/api/v1/me/jobs/${data.id}/attempts`, { headers: { authorization: `Bearer ${token}` } }).then((r) => r.json() as Promise<any>);
    expect(history.data.map((a: any) => [a.attempt, a.outcome, a.http_status])).toEqual([[1, "failed", 500], [2, "failed", 500], [3, "failed", 500], [4, "succeeded", 200]]);
  });

  test("a rescheduled job runs at its new time, not the old one", async () => {
    const { data } = await post("/api/v1/me/jobs", { message: "move me", execute_at: inSeconds(60), target: { url: targetUrl("/moved") } });
    const newAt = inSeconds(2);
    const moved = await fetch(`${api.url}/api/v1/me/jobs/${data.id}`, { method: "PATCH", headers: { "content-type": "application/json", authorization: `Bearer ${token}` }, body: JSON.stringify({ execute_at: newAt }) }).then((r) => r.json() as Promise<any>);
    expect(moved.data).toMatchObject({ execute_at: newAt, next_attempt_at: newAt, status: "created" });
    const done = await terminal(data.id);
    expect(done.status).toBe("succeeded");
    expect(Date.parse(done.started_at)).toBeGreaterThanOrEqual(Date.parse(newAt));
    expect(Date.parse(done.started_at)).toBeLessThan(Date.parse(data.execute_at));
    // Started or finished: 409 with the status.
    const late = await fetch(`${api.url}/api/v1/me/jobs/${data.id}`, { method: "PATCH", headers: { "content-type": "application/json", authorization: `Bearer ${token}` }, body: JSON.stringify({ execute_at: inSeconds(5) }) });
    expect(late.status).toBe(409);
    expect(((await late.json()) as any).error.code).toBe("job_not_reschedulable");
  });

  test("a job whose kind has no handler fails at once, saying so", async () => {
    const { data } = await post("/api/v1/me/jobs", { message: "who runs me", execute_at: inSeconds(600) });
    await sql`UPDATE jobs SET kind = 'nope', execute_at = now(), due_at = now() WHERE id = ${data.id}`;
    await sql`SELECT pg_notify(${DUE_CHANNEL}, ${duePayload([{ shard: data.shard_id, dueAt: Date.now() }])})`;
    const done = await terminal(data.id);
    expect([done.status, done.attempt, done.last_error]).toEqual(["failed", 1, 'no handler for kind "nope"']);
  });

  test("a 4xx target fails at once, without retries", async () => {
    const { data } = await post("/api/v1/me/jobs", { message: "bad", execute_at: inSeconds(1), max_attempts: 5, target: { url: targetUrl("/bad400-a") } });
    const done = await terminal(data.id);
    expect(done.status).toBe("failed");
    expect(done.attempt).toBe(1);
    expect(calls.get("/bad400-a")!.length).toBe(1);
    const dlq = await collect<any>(s, s.topicDlq, (all) => all.some((r) => r.id === data.id), 20_000);
    expect(dlq.some((r) => r.value.id === data.id && r.value.errors.includes("HTTP 400"))).toBe(true);
  });

  test("a cancelled job never calls its target, even when its message is already in Kafka", async () => {
    const { data: a } = await post("/api/v1/me/jobs", { message: "never", execute_at: inSeconds(3), target: { url: targetUrl("/cancel-a") } });
    expect((await post(`/api/v1/me/jobs/${a.id}/cancel`)).data.status).toBe("cancelled");
    // b: dispatched (scheduled, message published) and then cancelled before the executor claims it.
    const { data: b } = await post("/api/v1/me/jobs", { message: "never", execute_at: inSeconds(600), target: { url: targetUrl("/cancel-b") } });
    await sql`UPDATE jobs SET status = 'scheduled', due_at = now(), deadline_at = now() + interval '1 minute' WHERE id = ${b.id}`;
    expect((await post(`/api/v1/me/jobs/${b.id}/cancel`)).data.status).toBe("cancelled");
    // c: a live job whose message follows b's on the same partition. Messages of a partition are
    // taken in order, so once c has run, b's message was consumed and its claim refused.
    const { data: c } = await post("/api/v1/me/jobs", { message: "after b", execute_at: inSeconds(600), target: { url: targetUrl("/cancel-c") } });
    await sql`UPDATE jobs SET status = 'scheduled', due_at = now(), deadline_at = now() + interval '1 minute' WHERE id = ${c.id}`;
    const due = (j: { id: string; shard_id: number }) => ({ key: j.id, partition: 0, value: JSON.stringify({ id: j.id, shard: j.shard_id, attempt: 1, user_id: "1", execute_at: new Date().toISOString(), epoch: "1" }) });
    const pub = await s.bus.publisher();
    await pub.publish(s.topicDue, [due(b), due(c)]);
    await pub.close();
    expect((await terminal(c.id)).status).toBe("succeeded");
    // a was due 3 s after it was made: wait until it would have run.
    await Bun.sleep(Math.max(0, Date.parse(a.execute_at) + 2_000 - Date.now()));
    expect(calls.get("/cancel-c")!.length).toBe(1);
    expect(calls.get("/cancel-a")).toBeUndefined();
    expect(calls.get("/cancel-b")).toBeUndefined();
    expect((await get(a.id)).status).toBe("cancelled");
    expect((await get(b.id)).status).toBe("cancelled");
  });

  test("duplicate Kafka messages do not run a job twice", async () => {
    const { data } = await post("/api/v1/me/jobs", { message: "once", execute_at: inSeconds(600), target: { url: targetUrl("/dup-a") } });
    await sql`UPDATE jobs SET status = 'scheduled', due_at = now(), deadline_at = now() + interval '1 minute' WHERE id = ${data.id}`;
    const msg = { key: data.id, value: JSON.stringify({ id: data.id, shard: data.shard_id, attempt: 1, user_id: "1", execute_at: new Date().toISOString(), epoch: "1" }) };
    const pub = await s.bus.publisher();
    await pub.publish(s.topicDue, [msg, msg, msg]);
    await pub.publish(s.topicDue, [msg, msg]);
    await pub.close();
    const done = await terminal(data.id);
    await Bun.sleep(2_000);
    expect(done.status).toBe("succeeded");
    expect(done.attempt).toBe(1);
    expect(calls.get("/dup-a")!.length).toBe(1);
  });

  test("a target slower than the consumer's session timeout costs other jobs nothing and keeps the member", async () => {
    // 15 s against a 10 s Kafka session: handlers run beside the fetch loop, which keeps
    // heartbeating and fetching.
    const { data: slow } = await post("/api/v1/me/jobs", { message: "slow", execute_at: inSeconds(1), target: { url: targetUrl("/slow-session?ms=15000"), timeout_ms: 20_000 } });
    await waitFor("the slow job to start", async () => (await get(slow.id)).status === "running", 20_000, 100);
    const others = await Promise.all(Array.from({ length: 20 }, (_, i) => post("/api/v1/me/jobs", { message: `beside ${i}`, execute_at: inSeconds(1) })));
    const done = await Promise.all(others.map(({ data }) => terminal(data.id, 10_000)));
    expect(done.every((j) => j.status === "succeeded" && j.attempt === 1)).toBe(true);
    const finished = await terminal(slow.id, 40_000);
    // Ordering, not timing: every other job finished while the slow one was still running.
    for (const j of done) expect(Date.parse(j.finished_at)).toBeLessThan(Date.parse(finished.finished_at));
    expect(finished.status).toBe("succeeded");
    expect(finished.attempt).toBe(1);
    expect(calls.get("/slow-session")!.length).toBe(1);
    // Still a member: a job due now runs.
    const { data: after } = await post("/api/v1/me/jobs", { message: "after", execute_at: inSeconds(1) });
    expect((await terminal(after.id, 10_000)).status).toBe("succeeded");
  });

  test("a job whose claim failed (database unreachable) is set aside and runs once the database answers, once", async () => {
    const { data } = await post("/api/v1/me/jobs", { message: "claim later", execute_at: inSeconds(600), target: { url: targetUrl("/claim-later") } });
    await sql`UPDATE jobs SET status = 'scheduled', due_at = now(), deadline_at = now() + interval '5 minutes' WHERE id = ${data.id}`;
    await cutExecutor(async () => {
      const msg = { key: data.id, value: JSON.stringify({ id: data.id, shard: data.shard_id, attempt: 1, user_id: "1", execute_at: new Date().toISOString(), epoch: "1" }) };
      const pub = await s.bus.publisher();
      await pub.publish(s.topicDue, [msg]);
      await pub.close();
      await Bun.sleep(4_000); // claims fail meanwhile
      expect(calls.get("/claim-later")).toBeUndefined();
    });
    // Its message is committed (the partition moves on); had the job not been set aside in the
    // executor, nothing would run it before the rescuer (5 minutes) and execute_at (10 minutes).
    const done = await terminal(data.id, 45_000);
    expect(done.status).toBe("succeeded");
    expect(done.attempt).toBe(1);
    expect(calls.get("/claim-later")!.length).toBe(1);
  });

  test("an outcome that cannot be recorded while the database is unreachable is recorded once it is back: the job runs once", async () => {
    const { data } = await post("/api/v1/me/jobs", { message: "record later", execute_at: inSeconds(1), target: { url: targetUrl("/slow-record?ms=2000") } });
    await waitFor("the target to be called", async () => calls.get("/slow-record")?.length, 20_000, 50);
    // While the target is still answering, the database goes away for 4 s: the outcome's
    // record fails, and is retried.
    await cutExecutor(() => Bun.sleep(4_000));
    // Without the retry the outcome would be lost and the rescuer would run the job again at
    // attempt 2 once its deadline (10 s timeout + 2 s grace here) passed.
    const done = await terminal(data.id, 30_000);
    expect([done.status, done.attempt]).toEqual(["succeeded", 1]);
    await Bun.sleep(3_000);
    expect(calls.get("/slow-record")!.length).toBe(1);
  });

  test("kill -9 an executor holding running jobs: every job still finishes, re-runs show in the attempt counter", async () => {
    const ids: string[] = [];
    for (let i = 0; i < 12; i++) {
      const { data } = await post("/api/v1/me/jobs", { message: `slow ${i}`, execute_at: inSeconds(1), max_attempts: 3, target: { url: targetUrl(`/slow-${i}?ms=2500`), timeout_ms: 5_000 } });
      ids.push(data.id);
    }
    await waitFor("jobs to be running", async () => (await sql`SELECT count(*)::int AS n FROM jobs WHERE status = 'running' AND id IN ${sql(ids)}`)[0]!.n >= 3, 20_000, 50);
    const running = (await sql`SELECT id FROM jobs WHERE status = 'running' AND id IN ${sql(ids)}`).map((r) => r.id as string);
    executor.kill(9);
    await executor.exited;
    executor = await s.start("executor");
    const finished = await Promise.all(ids.map((id) => terminal(id, 90_000)));
    expect(finished.every((j) => j.status === "succeeded")).toBe(true);
    for (const j of finished) if (running.includes(j.id)) expect(j.attempt).toBeGreaterThanOrEqual(2);
    // No attempt ran twice: a target hears at most once per attempt.
    ids.forEach((id, i) => expect(calls.get(`/slow-${i}`)?.length ?? 0).toBeLessThanOrEqual(finished.find((j) => j.id === id)!.attempt));
    // Every attempt is in the job's history exactly once; the runs that died are "lost".
    const lost: string[] = [];
    for (const j of finished) {
      const h = (await fetch(`${api.url}/api/v1/me/jobs/${j.id}/attempts`, { headers: { authorization: `Bearer ${token}` } }).then((r) => r.json())) as any;
      expect(h.data.map((a: any) => a.attempt)).toEqual(Array.from({ length: j.attempt }, (_, k) => k + 1));
      expect(h.data.at(-1).outcome).toBe("succeeded");
      if (h.data.some((a: any) => a.outcome === "lost" && ["run_lost", "executor_lost"].includes(a.error_class))) lost.push(j.id);
    }
    // Every run that was going when the executor died is in its job's history as lost (others
    // may be too: claimed between the snapshot and the kill).
    expect(running.filter((id) => !lost.includes(id))).toEqual([]);
    expect(finished.filter((j) => running.includes(j.id)).length).toBe(running.length);
  }, 150_000);
});
