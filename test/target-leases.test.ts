/**
 * The target limits' database side (src/executor/target-leases.ts) on a real PostgreSQL:
 * executors renewing their leases at once never hold more than the limit together, and the
 * cluster's calendar hands out places one step apart, from whichever executor asks.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { connect, type Sql } from "../src/db/databases.ts";
import { renewLeases, reserveCalendar } from "../src/executor/target-leases.ts";
import { freshDatabases } from "./support/env.ts";

let db: Awaited<ReturnType<typeof freshDatabases>>;
let sql: Sql;

beforeAll(async () => {
  db = await freshDatabases(1);
  sql = connect(db.urls[0]!, 8);
});
afterAll(async () => {
  await sql.end();
  await db.drop();
});

test("five executors renewing concurrently, wanting all of a limit of 7: the live leases never hold more than 7, and settle on 2, 2, 1, 1, 1", async () => {
  const members = ["e1", "e2", "e3", "e4", "e5"];
  const held = new Map(members.map((m) => [m, 0]));
  for (let round = 0; round < 30; round++) {
    // Each uses what it holds, then renews: all at once.
    const leases = await Promise.all(members.map((m) => renewLeases(sql, m, [{ key: "9/h", bound: "c", limit: 7, inUse: round < 20 ? held.get(m)! : 0, want: 7 }], 2_000, 500)));
    leases.forEach((l, i) => held.set(members[i]!, l[0]!.permits));
    const live = await sql<{ sum: number }[]>`SELECT coalesce(sum(permits), 0)::int AS sum FROM target_leases WHERE key = '9/h' AND expires_at > now()`;
    expect(live[0]!.sum).toBeLessThanOrEqual(7);
  }
  expect(members.map((m) => held.get(m))).toEqual([2, 2, 1, 1, 1]);
});

test("a lease not renewed lapses: the others take its permits", async () => {
  await renewLeases(sql, "gone", [{ key: "9/x", bound: "r", limit: 4, inUse: 0, want: 4 }], 300, 100);
  expect((await renewLeases(sql, "live", [{ key: "9/x", bound: "r", limit: 4, inUse: 0, want: 4 }], 2_000, 500))[0]!.permits).toBe(0);
  await Bun.sleep(400);
  expect((await renewLeases(sql, "live", [{ key: "9/x", bound: "r", limit: 4, inUse: 0, want: 4 }], 2_000, 500))[0]!.permits).toBe(4);
});

test("the calendar: places one step apart across callers, from waitMs on, a job of two keys at the later of its places", async () => {
  const a = await reserveCalendar(sql, [[{ key: "cal/a", stepMs: 100 }], [{ key: "cal/a", stepMs: 100 }], [{ key: "cal/a", stepMs: 100 }]], 500);
  expect(a[0]!).toBeGreaterThan(480);
  expect(a[0]!).toBeLessThanOrEqual(500);
  expect([a[1]! - a[0]!, a[2]! - a[1]!]).toEqual([100, 100]);
  // Another executor's deferral comes after them.
  const [b] = await reserveCalendar(sql, [[{ key: "cal/a", stepMs: 100 }]], 500);
  expect(b! - a[2]!).toBeGreaterThanOrEqual(90);
  expect(b! - a[2]!).toBeLessThanOrEqual(110);
  // Two keys: the later of its places on each.
  const [c] = await reserveCalendar(sql, [[{ key: "cal/fresh", stepMs: 100 }, { key: "cal/a", stepMs: 100 }]], 500);
  expect(c! - b!).toBeGreaterThanOrEqual(90);
});
