/**
 * Id node numbers leased in the users database (src/db/node-id.ts), on a real PostgreSQL:
 * thousands of process starts never put one number in two live processes' hands; a process
 * whose lease ran out (paused) mints nothing, and takes a new number at its next renewal.
 */
import { afterAll, beforeAll, expect, setDefaultTimeout, test } from "bun:test";
import { connect, type Sql } from "../src/db/databases.ts";
import { NodeLease, NoFreeNodeError } from "../src/db/node-id.ts";
import { IdGenerator, IdsUnavailableError } from "../src/ids.ts";
import { freshDatabases } from "./support/env.ts";

setDefaultTimeout(120_000);

let db: Awaited<ReturnType<typeof freshDatabases>>;
let sql: Sql;
const LONG = { ttlMs: 600_000, renewMs: 600_000, marginMs: 1_000 };

beforeAll(async () => {
  db = await freshDatabases(1);
  sql = connect(db.urls[0]!, 16);
});
afterAll(async () => {
  await sql.end();
  await db.drop();
});

test("5,000 starts, 16 at a time, each process living for a while then crashing (its lease left to expire) or stopping: no two live leases share a node number", async () => {
  const live = new Map<string, NodeLease>();
  let crashed = 0;
  for (let started = 0; started < 5_000; started += 16) {
    const batch = await Promise.all(Array.from({ length: 16 }, (_, i) => NodeLease.take(sql, `p${started + i}`, LONG).then((l) => [`p${started + i}`, l] as const)));
    for (const [name, l] of batch) live.set(name, l);
    const numbers = [...live.values()].map((l) => l.current());
    expect(numbers.every((n) => n !== null)).toBe(true);
    expect(new Set(numbers).size).toBe(numbers.length);
    // Half of those alive stop (their number given back), some crash: their row expires now.
    for (const [name, l] of [...live].slice(0, 12)) {
      live.delete(name);
      if (started % 3 === 0) {
        crashed++;
        await sql`UPDATE id_nodes SET expires_at = now() - interval '1 millisecond' WHERE node = ${l.current()}`;
        (l as unknown as { release(): Promise<void> }).release = async () => {};
      } else {
        await l.release();
        await sql`UPDATE id_nodes SET expires_at = now() - interval '1 millisecond' WHERE holder = ${name}`; // past the release hold, for the test's pace
      }
    }
  }
  expect(crashed).toBeGreaterThan(1_000);
  for (const l of live.values()) await l.release();
});

test("with every number held by a live process, a new one is refused a number instead of sharing one", async () => {
  await sql`DELETE FROM id_nodes`;
  await sql`INSERT INTO id_nodes (node, holder, expires_at) SELECT n, 'h' || n, now() + interval '1 minute' FROM generate_series(0, 4094) n`;
  const last = await NodeLease.take(sql, "last", LONG);
  expect(last.current()).toBe(4095);
  expect(NodeLease.take(sql, "one-too-many", LONG)).rejects.toBeInstanceOf(NoFreeNodeError);
  await last.release();
  await sql`DELETE FROM id_nodes`;
});

test("a process whose lease ran out (paused past it) mints nothing; when it finds its number taken by another, it takes a new one", async () => {
  // No renewal during the test: the process is "paused" (its timer cannot fire).
  const paused = await NodeLease.take(sql, "paused", { ttlMs: 1_500, renewMs: 600_000, marginMs: 500 });
  const ids = new IdGenerator(paused);
  const node = paused.current()!;
  const before = ids.next();
  await Bun.sleep(1_050); // past ttl - margin by its own clock: before the database lets anyone take it
  expect(paused.current()).toBeNull();
  expect(() => ids.next()).toThrow(IdsUnavailableError);
  // Another process takes its number once the database says it expired.
  await Bun.sleep(500);
  await sql`UPDATE id_nodes SET holder = 'other', expires_at = now() + interval '1 minute' WHERE node = ${node} AND expires_at <= now()`;
  expect((await sql`SELECT holder FROM id_nodes WHERE node = ${node}`)[0]!.holder).toBe("other");
  // The paused process resumes and renews: the number is not its own any more: a new one.
  await (paused as unknown as { renew(): Promise<void> }).renew();
  const again = paused.current();
  expect(again).not.toBeNull();
  expect(again).not.toBe(node);
  const after = ids.next();
  expect(after > before).toBe(true);
  expect(Number((after >> 10n) & 4095n)).toBe(again!);
  await paused.release();
});
