/**
 * The shard load's rotation, against real PostgreSQL: a load capped by maxRows serves the users
 * after `startAfterUser` first and wraps around, so consecutive loads that pass on the previous
 * load's last user serve different users and, over enough loads, every user; and the cap stops
 * the per-user reads (an index skip-scan), it does not read every waiting row.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import postgres from "postgres";
import type { LoadInput } from "../actors/shard.machine.ts";
import { connect, type Sql } from "../src/db/databases.ts";
import { loadDue } from "../src/scheduler/load-due.ts";
import { freshDatabases } from "./support/env.ts";

// Not contiguous and of different lengths: an order by text instead of by number shows.
const USERS = ["3", "9", "10", "42", "100", "777", "1000", "5000", "12345", "99999"];
const PER_USER = 5;
const SHARD = 0;

let db: Awaited<ReturnType<typeof freshDatabases>>;
let sql: Sql;

beforeAll(async () => {
  db = await freshDatabases(1);
  sql = connect(db.urls[0]!, 2);
  // Shard 0: every user has PER_USER jobs, all overdue. Shard 1: 200 users x 50 jobs.
  await sql`INSERT INTO jobs (id, shard_id, user_id, message, execute_at, due_at, max_attempts)
    SELECT u::bigint * 100 + n, ${SHARD}, u::bigint, 'm', now() - interval '5 s', now() - interval '5 s' + n * interval '1 ms', 3
    FROM unnest(${USERS}::bigint[]) u, generate_series(1, ${PER_USER}) n`;
  await sql`INSERT INTO jobs (id, shard_id, user_id, message, execute_at, due_at, max_attempts)
    SELECT 100000000 + u * 1000 + n, 1, u, 'm', now() - interval '5 s', now() - interval '5 s' + n * interval '1 ms', 3
    FROM generate_series(1, 200) u, generate_series(1, 50) n`;
  await sql`VACUUM ANALYZE jobs`;
});
afterAll(async () => {
  await sql.end();
  await db.drop();
});

const input = (over: Partial<LoadInput> = {}): LoadInput => ({
  shard: SHARD, epoch: "1", horizon: Date.now() + 1_000, rescue: false, rescueSince: null, users: [], newUserLimit: 2, maxRows: 5, startAfterUser: null, ...over,
});
const usersOf = (jobs: { userId: string }[]) => [...new Set(jobs.map((j) => j.userId))];

describe("loadDue rotation", () => {
  test("users after startAfterUser come first, ascending, then it wraps to the lowest; maxRows caps in that order", async () => {
    // 2 rows per user, 5 rows: two users whole and the first row of a third.
    const first = await loadDue(sql, input({ startAfterUser: null }));
    expect(first.jobs.map((j) => j.userId)).toEqual(["3", "3", "9", "9", "10"]);
    expect(first.jobs.map((j) => j.id)).toEqual([301n, 302n, 901n, 902n, 1001n]);
    expect(usersOf((await loadDue(sql, input({ startAfterUser: "42" }))).jobs)).toEqual(["100", "777", "1000"]);
    // After the highest user: from the lowest. Near the end: the last ones, then the lowest.
    expect(usersOf((await loadDue(sql, input({ startAfterUser: "99999" }))).jobs)).toEqual(["3", "9", "10"]);
    expect(usersOf((await loadDue(sql, input({ startAfterUser: "5000" }))).jobs)).toEqual(["12345", "99999", "3"]);
    // An id between users: the next one above it.
    expect(usersOf((await loadDue(sql, input({ startAfterUser: "50" }))).jobs)).toEqual(["100", "777", "1000"]);
    // Uncapped: every user, still in the rotated order, each user's rows in (due_at, id) order.
    const all = await loadDue(sql, input({ maxRows: 1_000, startAfterUser: "1000" }));
    expect(usersOf(all.jobs)).toEqual(["5000", "12345", "99999", "3", "9", "10", "42", "100", "777", "1000"]);
    expect(all.jobs.length).toBe(USERS.length * 2);
    for (const u of USERS) expect(all.jobs.filter((j) => j.userId === u).map((j) => j.id)).toEqual([BigInt(u) * 100n + 1n, BigInt(u) * 100n + 2n]);
  });

  test("consecutive loads passing on the last user serve different users, and every user within a turn", async () => {
    let after: string | null = null;
    const served: string[][] = [];
    for (let i = 0; i < 5; i++) {
      const out = await loadDue(sql, input({ maxRows: 4, startAfterUser: after })); // two users per load
      served.push(usersOf(out.jobs));
      after = out.jobs.at(-1)?.userId ?? after; // what the shard actor passes on
    }
    for (let i = 1; i < served.length; i++) expect(served[i]).not.toEqual(served[i - 1]);
    expect(new Set(served.flat())).toEqual(new Set(USERS));
    expect(served[0]).toEqual(["3", "9"]);
    expect(served[4]).toEqual(["12345", "99999"]);
    // The next turn starts over at the lowest.
    expect(usersOf((await loadDue(sql, input({ maxRows: 4, startAfterUser: after }))).jobs)).toEqual(["3", "9"]);
    // With a partly served last user (odd cap), that user's remaining rows wait for the next turn
    // while every user still gets served.
    const seen = new Set<string>();
    after = null;
    for (let i = 0; i < 10 && seen.size < USERS.length; i++) {
      const out = await loadDue(sql, input({ maxRows: 3, startAfterUser: after }));
      for (const u of usersOf(out.jobs)) seen.add(u);
      after = out.jobs.at(-1)?.userId ?? after; // what the shard actor passes on
    }
    expect(seen).toEqual(new Set(USERS));
    // A load that returns nothing keeps the start.
  });

  test("the cap stops the per-user reads: a capped load reads about maxRows rows, not every waiting row", async () => {
    // postgres.js reports each statement it sends; EXPLAIN ANALYZE runs that exact statement.
    let statement: { q: string; p: unknown[] } | null = null;
    const traced = postgres(db.urls[0]!, {
      max: 1,
      onnotice: () => {},
      connection: { plan_cache_mode: "force_custom_plan" },
      debug: (_c, q, p) => {
        if (q.includes("WITH RECURSIVE") && !q.startsWith("EXPLAIN")) statement = { q, p: p as unknown[] };
      },
    });
    try {
      const maxRows = 100, newUserLimit = 20;
      const out = await loadDue(traced, input({ shard: 1, maxRows, newUserLimit, startAfterUser: "150" }));
      expect(out.jobs.length).toBe(maxRows);
      expect(usersOf(out.jobs)).toEqual(["151", "152", "153", "154", "155"]);
      const [plan] = (await traced.unsafe(`EXPLAIN (ANALYZE, FORMAT JSON) ${statement!.q}`, statement!.p as never[])) as unknown as [{ "QUERY PLAN": [{ Plan: PlanNode }] }];
      const scans: PlanNode[] = [];
      const walk = (n: PlanNode) => {
        if (n["Index Name"] === "jobs_due_by_user_idx" && n["Index Cond"]?.includes("due_at <=")) scans.push(n);
        for (const c of n.Plans ?? []) walk(c);
      };
      walk(plan["QUERY PLAN"][0].Plan);
      expect(scans.length).toBe(1); // the per-user LATERAL's range read
      const read = scans[0]!["Actual Rows"] * scans[0]!["Actual Loops"];
      // 10,000 rows wait in the shard; the load reads what it returns plus at most one more user's limit.
      expect(read).toBeLessThanOrEqual(maxRows + newUserLimit);
    } finally {
      await traced.end();
    }
  });
});

describe("loadDue items", () => {
  test("each job's priority comes back in its FairItem (0 high, 1 normal, 2 low; a row written without one is normal)", async () => {
    const shard = 2;
    await sql`INSERT INTO jobs (id, shard_id, user_id, message, execute_at, due_at, max_attempts, priority)
      SELECT 200000000 + n, ${shard}, 7, 'm', now() - interval '5 s', now() - interval '5 s' + n * interval '1 ms', 3, p
      FROM unnest(ARRAY[1, 2, 3]::int[], ARRAY[2, 0, 1]::smallint[]) AS x(n, p)`;
    await sql`INSERT INTO jobs (id, shard_id, user_id, message, execute_at, due_at, max_attempts)
      VALUES (200000004, ${shard}, 7, 'm', now() - interval '5 s', now() - interval '5 s' + interval '4 ms', 3)`;
    const out = await loadDue(sql, input({ shard, maxRows: 10, newUserLimit: 10 }));
    // Still in (due_at, id) order: priority orders the queue, not the load.
    expect(out.jobs.map((j) => [j.id, j.priority])).toEqual([[200000001n, 2], [200000002n, 0], [200000003n, 1], [200000004n, 1]]);
  });
});

interface PlanNode {
  "Index Name"?: string;
  "Index Cond"?: string;
  "Actual Rows": number;
  "Actual Loops": number;
  Plans?: PlanNode[];
}
