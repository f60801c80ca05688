/**
 * Batches are all or none across databases, and an Idempotency-Key makes a repeat safe (issue
 * 30; src/jobs/batches.ts), with a real API process over two shard databases:
 * - the second database goes out while the batch is written: 503, and none of its jobs exists;
 * - a request answered by the time bound while a database holds its rows back leaves nothing
 *   once the rows could be written;
 * - with a key: a repeat after a failure creates the batch once; a repeat after success returns
 *   the same jobs (replayed); a different body under the key is 422;
 * - the keeper finishes what a request left: a committed batch's staged rows move into jobs, an
 *   undecided one's are deleted and the batch aborted.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { connect, openDatabases, type Databases, type Sql } from "../src/db/databases.ts";
import { sweepStaged } from "../src/jobs/batches.ts";
import { apiUser, slice, waitFor, type RoleProc, type Slice } from "./support/procs.ts";
import { withoutDatabase } from "./support/env.ts";

setDefaultTimeout(60_000);

let s: Slice;
let api: RoleProc;
let dbs: Sql[];

beforeAll(async () => {
  s = await slice({ databases: 2, env: { API_REQUEST_TIMEOUT: "2s", LOG_LEVEL: "warn" } });
  api = await s.start("api");
  dbs = s.env.DATABASE_URLS!.split(",").map((u) => connect(u, 3));
});

afterAll(async () => {
  for (const sql of dbs ?? []) await sql.end();
  await s?.close();
});

const jobsBody = (n: number, tag: string) => ({ jobs: Array.from({ length: n }, (_, i) => ({ message: `${tag}${i}`, execute_at: new Date(Date.now() + 3_600_000).toISOString() })) });

async function post(path: string, body: unknown, token: string, key?: string): Promise<{ status: number; json: any; replayed: string | null }> {
  const res = await fetch(api.url + path, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${token}`, ...(key ? { "idempotency-key": key } : {}) },
    body: JSON.stringify(body),
  });
  return { status: res.status, json: await res.json(), replayed: res.headers.get("idempotent-replayed") };
}

const dbUrl = (i: number) => s.env.DATABASE_URLS!.split(",")[i]!;

/** The user's jobs and staged rows in each database. */
async function rowsOf(userId: string): Promise<{ jobs: number[]; staged: number[] }> {
  const jobs = await Promise.all(dbs.map(async (sql) => (await sql`SELECT count(*)::int AS n FROM all_jobs WHERE user_id = ${userId}`)[0]!.n as number));
  const staged = await Promise.all(dbs.map(async (sql) => (await sql`SELECT count(*)::int AS n FROM staged_jobs WHERE user_id = ${userId}`)[0]!.n as number));
  return { jobs, staged };
}


describe("batches across databases", () => {
  test("the second database goes out mid-batch: 503, and none of the batch's jobs exists in either database", async () => {
    const u = await apiUser(api, "batch_out");
    // Database 1 holds the batch's rows back (the lock) while database 0 takes its own; then
    // database 1 goes out, its statement with it.
    const locker = connect(s.env.DATABASE_URLS!.split(",")[1]!, 1);
    const release = Promise.withResolvers<void>();
    const held = locker.begin(async (tx) => {
      await tx`LOCK TABLE jobs, staged_jobs IN SHARE MODE`;
      await release.promise;
    }).catch(() => {});
    await Bun.sleep(100);
    const answer = post("/api/v1/me/jobs/batch", jobsBody(40, "o"), u.token);
    await Bun.sleep(500);
    await withoutDatabase(dbUrl(1), async () => {
      const r = await answer;
      expect(r.status).toBe(503);
      expect(r.json.error.code).toBe("unavailable");
    });
    release.resolve();
    await held;
    await locker.end().catch(() => {});
    expect(await rowsOf(u.id)).toEqual({ jobs: [0, 0], staged: [0, 0] });
    // With both databases up again (once the API's probe sees it) batches are created whole, on both.
    let made = 0;
    for (let i = 0; i < 50; i++) {
      const ok = await post("/api/v1/me/jobs/batch", jobsBody(40, "o"), u.token);
      expect(ok.status).toBe(201);
      made += 40;
      if ((await rowsOf(u.id)).jobs[1]! > 0) break;
      await Bun.sleep(100);
    }
    const after = await rowsOf(u.id);
    expect(after.jobs[0]! + after.jobs[1]!).toBe(made);
    expect(after.jobs.every((n) => n > 0)).toBe(true);
    expect(after.staged).toEqual([0, 0]);
  });

  test("a request answered by the time bound while a database holds its rows back leaves nothing behind", async () => {
    const u = await apiUser(api, "batch_slow");
    // Database 1 takes no staged rows until the lock is released, past the 2 s bound.
    const locker = connect(s.env.DATABASE_URLS!.split(",")[1]!, 1);
    const release = Promise.withResolvers<void>();
    const held = locker.begin(async (tx) => {
      await tx`LOCK TABLE jobs, staged_jobs IN SHARE MODE`;
      await release.promise;
    });
    try {
      await Bun.sleep(100);
      const r = await post("/api/v1/me/jobs/batch", jobsBody(40, "t"), u.token);
      expect(r.status).toBe(503);
    } finally {
      release.resolve();
      await held;
      await locker.end();
    }
    // The staging statement completes now; the request is past its commit point's time, so
    // the batch is aborted and its rows deleted.
    await waitFor("the cut-off request's staged rows to go", async () => (await rowsOf(u.id)).staged.every((n) => n === 0), 10_000, 50);
    await Bun.sleep(200); // a wrongly committed batch would have moved its rows by now
    expect(await rowsOf(u.id)).toEqual({ jobs: [0, 0], staged: [0, 0] });
  });

  test("an Idempotency-Key: a repeat after a failure creates the batch once; after success it returns the same jobs; another body is 422", async () => {
    const u = await apiUser(api, "batch_key");
    const body = jobsBody(30, "k");
    // The first request cannot reach its commit point in time: database 1 holds its rows back.
    const locker = connect(s.env.DATABASE_URLS!.split(",")[1]!, 1);
    const release = Promise.withResolvers<void>();
    const held = locker.begin(async (tx) => {
      await tx`LOCK TABLE staged_jobs IN SHARE MODE`;
      await release.promise;
    });
    try {
      await Bun.sleep(100);
      expect((await post("/api/v1/me/jobs/batch", body, u.token, "key-1")).status).toBe(503);
    } finally {
      release.resolve();
      await held;
      await locker.end();
    }
    await waitFor("the cut-off request's staged rows to go", async () => (await rowsOf(u.id)).staged.every((n) => n === 0), 10_000, 50);
    expect(await rowsOf(u.id)).toEqual({ jobs: [0, 0], staged: [0, 0] });
    // Repeated as a client would until the database is back (each a new try under the key).
    let first = await post("/api/v1/me/jobs/batch", body, u.token, "key-1");
    for (let i = 0; i < 40 && first.status === 503; i++) {
      await Bun.sleep(250);
      first = await post("/api/v1/me/jobs/batch", body, u.token, "key-1");
    }
    expect(first.status).toBe(201);
    expect(first.replayed).toBeNull();
    const again = await post("/api/v1/me/jobs/batch", body, u.token, "key-1");
    expect(again.status).toBe(200);
    expect(again.replayed).toBe("true");
    expect(again.json.data.map((j: { id: string }) => j.id)).toEqual(first.json.data.map((j: { id: string }) => j.id));
    const rows = await rowsOf(u.id);
    expect(rows.jobs[0]! + rows.jobs[1]!).toBe(30);
    const other = await post("/api/v1/me/jobs/batch", jobsBody(30, "other"), u.token, "key-1");
    expect(other.status).toBe(422);
    expect(other.json.error.code).toBe("idempotency_key_reused");
    expect((await post("/api/v1/me/jobs/batch", body, u.token, "bad key")).status).toBe(400);
  });

  test("while a database is out, new jobs land on the others: creates go on, whole", async () => {
    const u = await apiUser(api, "batch_reroute");
    let created: string[] = [];
    await withoutDatabase(dbUrl(1), async () => {
      // The first request may meet the outage (503, nothing left); then the API knows.
      for (let i = 0; i < 20 && created.length === 0; i++) {
        const r = await post("/api/v1/me/jobs/batch", jobsBody(40, "r"), u.token);
        if (r.status === 201) created = r.json.data.map((j: { id: string }) => j.id);
        else expect(r.status).toBe(503);
      }
      expect(created.length).toBe(40);
      const single = await post("/api/v1/me/jobs", { message: "s", execute_at: new Date(Date.now() + 3_600_000).toISOString() }, u.token);
      expect(single.status).toBe(201);
    });
    const rows = await rowsOf(u.id);
    expect(rows).toEqual({ jobs: [41, 0], staged: [0, 0] });
  });

  test("the keeper moves a committed batch's staged rows into jobs, and removes an undecided one's", async () => {
    const u = await apiUser(api, "batch_keeper");
    const all: Databases = openDatabases(s.env.DATABASE_URLS!.split(","), Number(s.env.SHARD_COUNT), 2);
    try {
      const stage = async (batch: string, id: string, state: string) => {
        await dbs[0]!`INSERT INTO job_batches (id, user_id, job_ids, state, created_at) VALUES (${batch}, ${u.id}, ${[id]}::bigint[], ${state}, now() - interval '1 hour')`;
        await dbs[1]!`
          INSERT INTO staged_jobs (batch_id, id, shard_id, user_id, kind, priority, message, execute_at, max_attempts, trace_context, staged_at)
          VALUES (${batch}, ${id}, 0, ${u.id}, 'log', 1, 'kept', now() + interval '1 hour', 3, '{}', now() - interval '1 hour')`;
      };
      await stage("9000000000000000001", "9100000000000000001", "committed");
      await stage("9000000000000000002", "9100000000000000002", "pending");
      const shardOn1 = [...Array(Number(s.env.SHARD_COUNT)).keys()].find((sh) => all.indexOf(sh) === 1)!;
      await dbs[1]!`UPDATE staged_jobs SET shard_id = ${shardOn1} WHERE user_id = ${u.id}`;
      const done = await sweepStaged(all, all.all[1]!, 60_000);
      expect(done).toEqual({ moved: 1, aborted: 1 });
      expect((await dbs[1]!`SELECT id::text FROM jobs WHERE user_id = ${u.id}`).map((r) => r.id)).toEqual(["9100000000000000001"]);
      expect(await rowsOf(u.id)).toEqual({ jobs: [0, 1], staged: [0, 0] });
      const states = await dbs[0]!`SELECT id::text, state FROM job_batches WHERE user_id = ${u.id} ORDER BY id`;
      expect(states.map((r) => r.state)).toEqual(["committed", "aborted"]);
      // Fresh staged rows (a request under way) are left alone.
      await dbs[1]!`
        INSERT INTO staged_jobs (batch_id, id, shard_id, user_id, kind, priority, message, execute_at, max_attempts, trace_context)
        VALUES (9000000000000000003, 9100000000000000003, ${shardOn1}, ${u.id}, 'log', 1, 'fresh', now(), 3, '{}')`;
      expect(await sweepStaged(all, all.all[1]!, 60_000)).toEqual({ moved: 0, aborted: 0 });
    } finally {
      await all.close();
    }
  });
});
