/**
 * WeightBook against real PostgreSQL: a load never waits on the users database for more than
 * SEEN_WAIT_MS and never fails because of it. Users it cannot read get the default weight at
 * once and their stored weight once the database answers again.
 */
import { afterAll, beforeAll, describe, expect, setSystemTime, test } from "bun:test";
import postgres from "postgres";
import { connect, type Sql } from "../src/db/databases.ts";
import { metrics } from "../src/metrics.ts";
import { FORGET_AFTER_MS, SEEN_WAIT_MS, WeightBook } from "../src/scheduler/weights.ts";
import { freshDatabases } from "./support/env.ts";
import { waitFor } from "./support/procs.ts";

const DEFAULT_WEIGHT = 1;
// Timers on a loaded 2-core machine (the whole suite running) run late by up to a few hundred
// milliseconds; what these tests tell apart is SEEN_WAIT_MS from a connect timeout of seconds.
const SLACK_MS = 500;

let db: Awaited<ReturnType<typeof freshDatabases>>;
let users: Sql;
/** A client to a port where nothing listens: every query fails to connect (ECONNREFUSED). */
let refused: Sql;
/** A TCP server that accepts connections and never answers: a hung users database. */
let blackHole: Bun.TCPSocketListener<undefined>;
let hung: Sql;
const books: WeightBook[] = [];

beforeAll(async () => {
  db = await freshDatabases(1);
  users = connect(db.urls[0]!, 2);
  refused = postgres("postgres://root@127.0.0.1:1/none", { max: 1, connect_timeout: 1, onnotice: () => {} });
  blackHole = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  hung = postgres(`postgres://root@127.0.0.1:${blackHole.port}/none`, { max: 1, connect_timeout: 5, onnotice: () => {} });
});
afterAll(async () => {
  for (const b of books) b.stop();
  await Promise.all([users.end(), refused.end({ timeout: 0 }), hung.end({ timeout: 0 })]);
  blackHole.stop(true);
  await db.drop();
});

async function addUser(name: string, weight: number): Promise<string> {
  const [row] = await users<{ id: string }[]>`INSERT INTO users (username, password_hash, job_weight) VALUES (${name}, 'x', ${weight}) RETURNING id::text`;
  return row!.id;
}

function book(client: Sql): { book: WeightBook } {
  const b = new WeightBook(client, DEFAULT_WEIGHT);
  books.push(b);
  return { book: b };
}

const staleGauge = async () => (await metrics.weightsStale.get()).values[0]?.value ?? 0;

/** `seen()` resolves, and how long it took. */
async function timedSeen(b: WeightBook, ids: string[]): Promise<number> {
  const t0 = performance.now();
  await b.seen(ids);
  return performance.now() - t0;
}

describe("WeightBook", () => {
  test("a users database that refuses connections: seen() resolves at once with the default weight", async () => {
    const { book: b } = book(refused);
    const staleBefore = await staleGauge();
    const took = await timedSeen(b, ["101", "102"]);
    expect(took).toBeLessThan(SEEN_WAIT_MS + SLACK_MS);
    expect([b.weightOf("101"), b.weightOf("102")]).toEqual([DEFAULT_WEIGHT, DEFAULT_WEIGHT]);
    expect(b.staleUsers().sort()).toEqual(["101", "102"]);
    expect((await staleGauge()) - staleBefore).toBe(2);
    // Seen again: known (stale), nothing waited for.
    expect(await timedSeen(b, ["101"])).toBeLessThan(SLACK_MS);
    expect(b.weightOf("101")).toBe(DEFAULT_WEIGHT);
    // A refresh that fails keeps them stale, and does not reject.
    await b.refresh();
    expect(b.staleUsers().length).toBe(2);
  });

  test("a users database that does not answer: seen() waits SEEN_WAIT_MS at most, then the default weight", async () => {
    const { book: b } = book(hung);
    const took = await timedSeen(b, ["201"]);
    expect(took).toBeGreaterThanOrEqual(SEEN_WAIT_MS - 5);
    expect(took).toBeLessThan(SEEN_WAIT_MS + SLACK_MS);
    expect(b.weightOf("201")).toBe(DEFAULT_WEIGHT);
    expect(b.staleUsers()).toEqual(["201"]);
    // A second load with the same user while the first read still hangs does not wait again.
    expect(await timedSeen(b, ["201"])).toBeLessThan(SLACK_MS);
  });

  test("a reachable users database: stored weights are known before seen() resolves", async () => {
    const heavy = await addUser("heavy_user", 4);
    const light = await addUser("light_user", 0.5);
    const { book: b } = book(users);
    const took = await timedSeen(b, [heavy, light, "987654"]);
    expect(took).toBeLessThan(SEEN_WAIT_MS + SLACK_MS);
    // A user that does not exist (any more) gets the default weight; none of them is stale.
    expect([b.weightOf(heavy), b.weightOf(light), b.weightOf("987654")]).toEqual([4, 0.5, DEFAULT_WEIGHT]);
    expect(b.staleUsers()).toEqual([]);
    // An operator's change reaches the book at the next refresh.
    await users`UPDATE users SET job_weight = 8 WHERE id = ${heavy}`;
    await b.refresh();
    expect(b.weightOf(heavy)).toBe(8);
  });

  test("a user first seen while the users database is unreachable gets its stored weight once it is back", async () => {
    const id = await addUser("outage_user", 5);
    // Queries go to the unreachable port while `down`, to the real users database after.
    let down = true;
    const switching = ((strings: TemplateStringsArray, ...args: unknown[]) => (down ? refused : users)(strings, ...(args as never[]))) as unknown as Sql;
    const { book: b } = book(switching);
    const staleBefore = await staleGauge();
    expect(await timedSeen(b, [id])).toBeLessThan(SEEN_WAIT_MS + SLACK_MS);
    expect(b.weightOf(id)).toBe(DEFAULT_WEIGHT);
    expect((await staleGauge()) - staleBefore).toBe(1);
    b.start(50);
    await Bun.sleep(200); // refreshes fail meanwhile: the default weight stays
    expect(b.weightOf(id)).toBe(DEFAULT_WEIGHT);
    down = false;
    await waitFor("the stored weight to be read", async () => b.staleUsers().length === 0, 5_000, 20);
    expect(b.weightOf(id)).toBe(5);
    expect((await staleGauge()) - staleBefore).toBe(0);
    b.stop();
  });

  test("users not seen for FORGET_AFTER_MS are dropped, stale ones too", async () => {
    const id = await addUser("idle_user", 3);
    const { book: b } = book(refused);
    const ok = book(users).book;
    await b.seen(["301"]);
    await ok.seen([id]);
    const staleBefore = await staleGauge();
    try {
      setSystemTime(new Date(Date.now() + FORGET_AFTER_MS + 1_000));
      await b.refresh();
      await ok.refresh();
    } finally {
      setSystemTime();
    }
    expect(b.staleUsers()).toEqual([]);
    expect((await staleGauge()) - staleBefore).toBe(-1);
    expect(ok.weightOf(id)).toBe(DEFAULT_WEIGHT); // forgotten: the book holds nothing for it
  });
});
