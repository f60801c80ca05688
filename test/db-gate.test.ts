/**
 * The database gate (src/db/gate.ts) against a real PostgreSQL: a database that refuses
 * connections fails the next statements at once (postgres.js alone would keep them queued while
 * it reconnects, for as long as the outage lasts); a statement that does not answer in time is
 * failed, and its late result still reaches the caller; the database is back once a probe answers.
 */
import { afterAll, beforeAll, expect, setDefaultTimeout, test } from "bun:test";
import { connect, probeDatabase, type Sql } from "../src/db/databases.ts";
import { DatabaseGate, DatabaseOut } from "../src/db/gate.ts";
import { freshDatabases } from "./support/env.ts";

setDefaultTimeout(30_000);

let fresh: Awaited<ReturnType<typeof freshDatabases>>;
let sql: Sql;
let admin: Sql;
let name: string;

beforeAll(async () => {
  fresh = await freshDatabases(1, { migrate: false });
  sql = connect(fresh.urls[0]!, 2, "fairshare-gate-test");
  const url = new URL(fresh.urls[0]!);
  name = url.pathname.slice(1);
  url.pathname = "/postgres";
  admin = connect(url.toString(), 1);
});

afterAll(async () => {
  await admin?.unsafe(`ALTER DATABASE "${name}" ALLOW_CONNECTIONS true`);
  await sql?.end({ timeout: 1 });
  await admin?.end({ timeout: 1 });
  await fresh?.drop();
});

test("a database that refuses connections fails statements at once, and is back once a probe answers", async () => {
  const gate = new DatabaseGate(() => probeDatabase(fresh.urls[0]!), 100);
  try {
    expect([...(await gate.within(0, 2_000, () => sql`SELECT 1 AS x`))]).toEqual([{ x: 1 }]);
    await admin.unsafe(`ALTER DATABASE "${name}" ALLOW_CONNECTIONS false`);
    await admin`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = ${name}`;
    // The first statement meets the outage (an error, or no answer in time)...
    await expect(gate.within(0, 2_000, () => sql`SELECT 1`)).rejects.toBeDefined();
    expect(gate.isOut(0)).toBe(true);
    // ...and the next ones are failed at once, without waiting for the database.
    const t0 = performance.now();
    await expect(gate.within(0, 2_000, () => sql`SELECT 1`)).rejects.toBeInstanceOf(DatabaseOut);
    expect(performance.now() - t0).toBeLessThan(100);
    await admin.unsafe(`ALTER DATABASE "${name}" ALLOW_CONNECTIONS true`);
    const until = Date.now() + 25_000;
    while (gate.isOut(0) && Date.now() < until) await Bun.sleep(50);
    expect(gate.isOut(0)).toBe(false);
    expect([...(await gate.within(0, 2_000, () => sql`SELECT 2 AS x`))]).toEqual([{ x: 2 }]);
  } finally {
    gate.close();
  }
});

test("a statement that does not answer in time is failed; its result, when it comes, goes to `late`", async () => {
  const gate = new DatabaseGate(() => probeDatabase(fresh.urls[0]!), 100);
  try {
    const late = Promise.withResolvers<unknown>();
    const slow = gate.within(0, 200, () => sql`SELECT pg_sleep(0.6), 7 AS x`, (v) => late.resolve(v));
    await expect(slow).rejects.toBeInstanceOf(DatabaseOut);
    expect(gate.isOut(0)).toBe(true);
    expect(((await late.promise) as { x: number }[])[0]!.x).toBe(7);
  } finally {
    gate.close();
  }
});
