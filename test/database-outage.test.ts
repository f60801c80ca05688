/**
 * A database out costs what it must and no more (issue 30), with the real roles and services and
 * two shard databases:
 * - a due message with jobs on both databases while one is out: the jobs on the other run at
 *   once, each once; the rest run, once, when it is back (no claimed job is left unrun);
 * - the messages of jobs on a database that is out are committed all the same (the jobs wait in
 *   the executor), so the partition's offsets move on and the schedulers see the later
 *   messages' jobs start: a database out holds back only its own jobs;
 * - runs that end while their database is out, past their deadline, are recorded when it is
 *   back: no attempt is charged as lost.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { connect, type Sql } from "../src/db/databases.ts";
import { apiUser, callApi, slice, waitFor, type RoleProc, type Slice } from "./support/procs.ts";
import { QUICK_RETRY_ENV, withoutDatabase } from "./support/env.ts";

setDefaultTimeout(120_000);

let s: Slice;
let api: RoleProc;
let dbs: Sql[];
const calls = new Map<string, number>();
const target = Bun.serve({
  port: 0,
  hostname: "127.0.0.1",
  async fetch(req) {
    const url = new URL(req.url);
    calls.set(url.pathname, (calls.get(url.pathname) ?? 0) + 1);
    await Bun.sleep(Number(url.searchParams.get("ms") ?? 0));
    return new Response("ok");
  },
});
const targetUrl = (path: string) => `http://127.0.0.1:${target.port}${path}`;

beforeAll(async () => {
  s = await slice({ databases: 2, env: { ...QUICK_RETRY_ENV, JOB_RUN_GRACE: "1s", RESCUE_INTERVAL: "1s", LOG_LEVEL: "warn" } });
  api = await s.start("api");
  await s.start("scheduler");
  await s.start("executor");
  dbs = s.env.DATABASE_URLS!.split(",").map((u) => connect(u, 2));
});

afterAll(async () => {
  for (const sql of dbs ?? []) await sql.end();
  await s?.close();
  target.stop(true);
});


const dbUrl = (i: number) => s.env.DATABASE_URLS!.split(",")[i]!;

/** A job of the user's, by id, from whichever database holds it. */
async function row(id: string): Promise<{ status: string; attempt: number; shard_id: number } | undefined> {
  for (const sql of dbs) {
    const [r] = await sql<{ status: string; attempt: number; shard_id: number }[]>`SELECT status::text, attempt, shard_id FROM all_jobs WHERE id = ${id}`;
    if (r) return r;
  }
  return undefined;
}

/**
 * 40 jobs far in the future (the scheduler leaves them), on both databases, each calling
 * `${path}/${i}`, marked scheduled by hand (due now) for a test to send their due message.
 */
async function scheduledByHand(token: string, path: string): Promise<{ id: string; db: number; shard: number; i: number }[]> {
  const created = await callApi(api, "POST", "/api/v1/me/jobs/batch", {
    jobs: Array.from({ length: 40 }, (_, i) => ({ message: `m${i}`, execute_at: new Date(Date.now() + 600_000).toISOString(), target: { url: targetUrl(`${path}/${i}`) } })),
  }, token);
  const jobs: { id: string; db: number; shard: number; i: number }[] = [];
  for (const [i, j] of (created.data as { id: string }[]).entries()) {
    for (const [d, sql] of dbs.entries()) {
      const [r] = await sql<{ shard_id: number }[]>`UPDATE jobs SET status = 'scheduled', due_at = now(), deadline_at = now() + interval '5 minutes' WHERE id = ${j.id} RETURNING shard_id`;
      if (r) jobs.push({ id: j.id, db: d, shard: r.shard_id, i });
    }
  }
  return jobs;
}

describe("a database out", () => {
  test("a due message with jobs on both databases, one of them out: the other's jobs run at once; the rest run once it is back; each once", async () => {
    const u = await apiUser(api, "outage_claims");
    // Sent in one due message, as a dispatch of both databases' shards would.
    const jobs = await scheduledByHand(u.token, "/claims");
    expect(new Set(jobs.map((j) => j.db)).size).toBe(2);
    const entries = jobs.map((j) => ({ id: j.id, shard: j.shard, user_id: u.id, attempt: 1, due_at: new Date().toISOString(), epoch: "1" }));
    await withoutDatabase(dbUrl(1), async () => {
      const pub = await s.bus.publisher();
      await pub.publish(s.topicDue, [{ key: jobs[0]!.id, value: JSON.stringify({ jobs: entries }) }]);
      await pub.close();
      // The jobs on database 0 run while database 1 is out.
      await waitFor("database 0's jobs to succeed", async () => {
        for (const j of jobs.filter((j) => j.db === 0)) if ((await row(j.id))?.status !== "succeeded") return false;
        return true;
      }, 30_000, 200);
      for (const j of jobs.filter((j) => j.db === 1)) expect(calls.get(`/claims/${j.i}`)).toBeUndefined();
    });
    await waitFor("database 1's jobs to succeed", async () => {
      for (const j of jobs.filter((j) => j.db === 1)) if ((await row(j.id))?.status !== "succeeded") return false;
      return true;
    }, 60_000, 200);
    await Bun.sleep(2_000); // a second run would show by now
    for (const j of jobs) {
      expect(calls.get(`/claims/${j.i}`)).toBe(1);
      expect((await row(j.id))!.attempt).toBe(1);
    }
  });

  test("a database out does not hold back its partition: later messages are committed while its jobs wait, and they run once it is back", async () => {
    const u = await apiUser(api, "outage_offsets");
    const jobs = await scheduledByHand(u.token, "/offsets");
    const entry = (j: (typeof jobs)[number]) => ({ id: j.id, shard: j.shard, user_id: u.id, attempt: 1, due_at: new Date().toISOString(), epoch: "1" });
    const out = jobs.filter((j) => j.db === 1);
    const up = jobs.filter((j) => j.db === 0);
    expect(out.length).toBeGreaterThan(0);
    expect(up.length).toBeGreaterThan(0);
    const offsets = await s.bus.offsetReader(s.env.KAFKA_GROUP_ID!, s.topicDue);
    try {
      await withoutDatabase(dbUrl(1), async () => {
        // One key: one partition, the out database's message first, the other's behind it.
        const pub = await s.bus.publisher();
        await pub.publish(s.topicDue, [{ key: "outage", value: JSON.stringify({ jobs: out.map(entry) }) }]);
        await pub.publish(s.topicDue, [{ key: "outage", value: JSON.stringify({ jobs: up.map(entry) }) }]);
        await pub.close();
        const end = await s.bus.endOffsets(s.topicDue);
        await waitFor("database 0's jobs to succeed", async () => {
          for (const j of up) if ((await row(j.id))?.status !== "succeeded") return false;
          return true;
        }, 30_000, 200);
        // Every message is committed, the one whose jobs wait for database 1 too.
        await waitFor("the group's commits to reach the end of every partition", async () => {
          const committed = await offsets.read();
          return [...end].every(([p, high]) => high === 0 || committed.get(p)?.next === high);
        }, 10_000, 200);
        for (const j of out) expect(calls.get(`/offsets/${j.i}`)).toBeUndefined();
      });
    } finally {
      await offsets.close();
    }
    await waitFor("database 1's jobs to succeed", async () => {
      for (const j of out) if ((await row(j.id))?.status !== "succeeded") return false;
      return true;
    }, 30_000, 200);
    await Bun.sleep(2_000);
    for (const j of jobs) {
      expect(calls.get(`/offsets/${j.i}`)).toBe(1);
      expect((await row(j.id))!.attempt).toBe(1);
    }
  });

  test("runs that end while their database is out, past their deadline, are recorded when it is back: no attempt charged as lost", async () => {
    const u = await apiUser(api, "outage_records");
    // 1 s calls with a 1.5 s timeout: the deadline is 2.5 s after the claim (JOB_RUN_GRACE 1 s).
    const created = await callApi(api, "POST", "/api/v1/me/jobs/batch", {
      jobs: Array.from({ length: 20 }, (_, i) => ({ message: `r${i}`, execute_at: new Date(Date.now() + 1_000).toISOString(), target: { url: targetUrl(`/records/${i}?ms=1000`), timeout_ms: 1_500 }, max_attempts: 3 })),
    }, u.token);
    const ids = (created.data as { id: string }[]).map((j) => j.id);
    await waitFor("the calls to start", async () => [...calls.keys()].filter((k) => k.startsWith("/records/")).length >= 10, 20_000, 20);
    // Both databases out for 6 s: the outcomes cannot be recorded until well past the deadlines.
    await withoutDatabase(dbUrl(0), () => withoutDatabase(dbUrl(1), () => Bun.sleep(6_000)));
    await waitFor("every job to succeed", async () => {
      for (const id of ids) if ((await row(id))?.status !== "succeeded") return false;
      return true;
    }, 60_000, 250);
    const called = [...calls.entries()].filter(([k]) => k.startsWith("/records/"));
    const attempts = await Promise.all(ids.map(async (id) => (await row(id))!.attempt));
    expect(attempts.filter((a) => a !== 1)).toEqual([]);
    expect(called.every(([, n]) => n === 1)).toBe(true);
  });
});
