import { describe, expect, test } from "bun:test";
import { createActor, fromPromise, SimulatedClock } from "xstate";
import { FencedOutError } from "../../actors/errors.ts";
import type { FairItem } from "../../actors/fair-queue.ts";
import { CURSOR_MARGIN_MS, RESCUE_AFTER_OUTAGE_MS, shardMachine, type LoadInput, type ShardSettings } from "../../actors/shard.machine.ts";

const settings: ShardSettings = { lookaheadMs: 2_000, pollIntervalMs: 500, rescueIntervalMs: 5_000, fullRescueMs: 60_000, retryDelayMs: 1_000, maxLoad: 1_000 };
/** What the dispatcher tells the shard actor about stocking (no cap reached). */
const stocking = { target: 10, lowWater: 5, room: 1_000_000, newUser: 10 };
const flush = () => new Promise((r) => setTimeout(r, 0));
async function advance(clock: SimulatedClock, ms: number, step = 10) {
  for (let t = 0; t < ms; t += step) {
    clock.increment(step);
    await flush();
    await flush();
  }
}

/**
 * A shard actor over an in-memory shard: `rows` are the waiting jobs (the test removes what the
 * "dispatcher" took); `stock` is what the dispatcher holds queued per user.
 */
function harness(opts: { rows: FairItem[]; settings?: Partial<ShardSettings>; loadError?: () => Error | null }) {
  const clock = new SimulatedClock();
  const rows = opts.rows;
  const stock = new Map<string, number>();
  const loads: (LoadInput & { at: number })[] = [];
  const offered: FairItem[] = [];
  const machine = shardMachine.provide({
    actors: {
      load: fromPromise(async ({ input }) => {
        loads.push({ ...input, at: clock.now() });
        const err = opts.loadError?.();
        if (err) throw err;
        // Like the SQL: per user, rows due by the horizon after the cursor, up to the limit.
        const known = new Map(input.users.map((u) => [u.userId, u]));
        const jobs: FairItem[] = [];
        for (const userId of [...new Set(rows.map((r) => r.userId))].sort()) {
          const k = known.get(userId);
          const mine = rows
            .filter((r) => r.userId === userId && r.dueAt <= input.horizon)
            .filter((r) => !k?.after || r.dueAt > k.after.dueAt || (r.dueAt === k.after.dueAt && r.id > k.after.id))
            .sort((a, b) => a.dueAt - b.dueAt || Number(a.id - b.id))
            .slice(0, k ? k.limit : input.newUserLimit);
          jobs.push(...mine);
        }
        const later = rows.filter((r) => r.dueAt > input.horizon).map((r) => r.dueAt);
        return { jobs, dbNow: clock.now(), nextDue: later.length ? Math.min(...later) : null, rescuedAt: input.rescue ? clock.now() : null };
      }),
    },
    actions: {
      offer: (_, p) => {
        // Like the dispatcher's queue: a job already queued is not queued twice.
        for (const j of p.jobs) {
          if (offered.some((o) => o.id === j.id)) continue;
          offered.push(j);
          stock.set(j.userId, (stock.get(j.userId) ?? 0) + 1);
        }
      },
    },
  });
  const actor = createActor(machine, {
    clock,
    input: { shard: 3, epoch: "42", settings: { ...settings, ...opts.settings }, now: () => clock.now(), stockOf: (u) => stock.get(u) ?? 0, stocking: () => stocking },
  });
  actor.start();
  /** The dispatcher takes n of a user's queued jobs (they leave the waiting rows too). */
  const take = (userId: string, n: number) => {
    const mine = offered.filter((j) => j.userId === userId && rows.includes(j)).slice(0, n);
    for (const j of mine) rows.splice(rows.indexOf(j), 1);
    stock.set(userId, (stock.get(userId) ?? 0) - mine.length);
    return mine;
  };
  return { clock, actor, loads, offered, stock, take };
}

const job = (id: number, userId: string, dueAt: number): FairItem => ({ id: BigInt(id), userId, shard: 3, dueAt });

describe("shard actor", () => {
  test("loads at once, then when the next waiting job comes within the look-ahead, not on a clock", async () => {
    const h = harness({ rows: [job(1, "a", 100), job(2, "b", 1_800), job(3, "a", 2_900)], settings: { pollIntervalMs: 60_000 } });
    await advance(h.clock, 1_100);
    // The first load (horizon 2,000) reports job 3 next, due at 2,900: loaded at 2,900 - 2,000.
    expect(h.loads.map((l) => l.at)).toEqual([0, 900]);
    expect(h.offered.map((j) => j.id)).toEqual([1n, 2n, 3n]);
    expect(h.loads[0]!.horizon).toBe(2_000);
    h.actor.stop();
  });

  test("WAKE loads at once for a job due within the look-ahead, and re-arms the timer for a later one", async () => {
    const rows: FairItem[] = [];
    const h = harness({ rows, settings: { pollIntervalMs: 60_000 } });
    await advance(h.clock, 100);
    expect(h.loads.length).toBe(1);
    rows.push(job(1, "a", 1_500)); // created after the first load, due within 2 s
    h.actor.send({ type: "WAKE", at: 1_500 });
    await advance(h.clock, 20);
    expect(h.loads.length).toBe(2);
    expect(h.offered.map((j) => j.id)).toEqual([1n]);
    rows.push(job(2, "a", 5_000));
    h.actor.send({ type: "WAKE", at: 5_000 });
    await advance(h.clock, 2_700); // now ~2,820: not yet within the look-ahead of 5,000
    expect(h.loads.length).toBe(2);
    await advance(h.clock, 300);
    expect(h.loads.length).toBe(3);
    expect(h.loads[2]!.at).toBeWithin(3_000, 3_011);
    expect(h.offered.map((j) => j.id)).toEqual([1n, 2n]);
    h.actor.stop();
  });

  test("without notifications or due jobs, a shard polls only every pollIntervalMs", async () => {
    const h = harness({ rows: [], settings: { pollIntervalMs: 5_000 } });
    await advance(h.clock, 12_000);
    expect(h.loads.map((l) => l.at)).toEqual([0, 5_000, 10_000]);
    h.actor.stop();
  });

  test("each load tops a user up to userTarget from its cursor, never re-reading what is queued", async () => {
    const rows = Array.from({ length: 50 }, (_, i) => job(i + 1, "a", 0));
    const h = harness({ rows });
    await advance(h.clock, CURSOR_MARGIN_MS + 20);
    expect(h.offered.length).toBe(10); // the target: while the stock is full, polls read nothing
    expect(h.loads.slice(1).every((l) => l.users[0]!.limit === 0)).toBe(true);
    h.take("a", 4);
    await advance(h.clock, 500);
    // No cursor yet (the rows were too young at the first load): read from the start, which
    // re-reads the 6 queued; the rows are old enough now, so the last one read is the cursor.
    expect(h.loads.at(-1)!.users).toEqual([{ userId: "a", limit: 10, after: null }]);
    expect(h.offered.length).toBe(14);
    h.take("a", 4);
    await advance(h.clock, 500);
    expect(h.loads.at(-1)!.users).toEqual([{ userId: "a", limit: 4, after: { dueAt: 0, id: 14n } }]);
    expect(h.offered.map((j) => j.id)).toEqual(Array.from({ length: 18 }, (_, i) => BigInt(i + 1)));
    h.actor.stop();
  });

  test("a row due less than CURSOR_MARGIN_MS before the database's clock does not become a cursor", async () => {
    const h = harness({ rows: [job(1, "a", 0), job(2, "a", 200)], });
    await advance(h.clock, 10);
    await advance(h.clock, 500);
    // At the second load (t=500) neither row was old enough at the first load (t=0).
    expect(h.loads[1]!.users[0]!.after).toBeNull();
    h.actor.stop();
  });

  test("REFILL loads at once when a user fell below the low-water mark, not when every such user is exhausted", async () => {
    const rows = Array.from({ length: 30 }, (_, i) => job(i + 1, "a", -CURSOR_MARGIN_MS));
    const h = harness({ rows });
    await advance(h.clock, 20);
    expect(h.loads.length).toBe(1);
    h.take("a", 7); // stock 3 < low water 5
    h.actor.send({ type: "REFILL" });
    await advance(h.clock, 20);
    expect(h.loads.length).toBe(2);
    expect(h.loads[1]!.users[0]!.limit).toBe(7);
    // Drain everything: the poll at t=500 asks for more and gets nothing, so a is exhausted.
    h.take("a", 100);
    rows.length = 0;
    await advance(h.clock, 500);
    expect(h.loads.length).toBe(3);
    h.actor.send({ type: "REFILL" });
    await advance(h.clock, 100);
    expect(h.loads.length).toBe(3);
    // New rows arrive: the next poll finds them, and the user is refillable again.
    rows.push(...Array.from({ length: 30 }, (_, i) => job(100 + i, "a", -CURSOR_MARGIN_MS + 1)));
    await advance(h.clock, 400);
    expect(h.loads.length).toBe(4);
    h.take("a", 8);
    h.actor.send({ type: "REFILL" });
    await advance(h.clock, 20);
    expect(h.loads.length).toBe(5);
    h.actor.stop();
  });

  test("a REFILL during a load loads again right after it", async () => {
    const rows = Array.from({ length: 30 }, (_, i) => job(i + 1, "a", 0));
    const h = harness({ rows });
    await advance(h.clock, 20);
    h.take("a", 8);
    h.actor.send({ type: "REFILL" });
    await flush();
    await advance(h.clock, 20);
    expect(h.loads.length).toBe(2);
    h.actor.stop();
  });

  test("DISPATCH_FAILED forgets every cursor and reloads after the retry delay", async () => {
    const rows = Array.from({ length: 30 }, (_, i) => job(i + 1, "a", -CURSOR_MARGIN_MS));
    const h = harness({ rows });
    await advance(h.clock, 20);
    h.take("a", 5);
    await advance(h.clock, 500);
    expect(h.loads.at(-1)!.users[0]!.after).not.toBeNull();
    const n = h.loads.length;
    h.actor.send({ type: "DISPATCH_FAILED", error: "db down" });
    expect(h.actor.getSnapshot().value).toBe("retrying");
    await advance(h.clock, 1_010);
    expect(h.loads.length).toBe(n + 1);
    expect(h.loads.at(-1)!.users).toEqual([]); // read from the start, as new users
    h.actor.stop();
  });

  test("a fenced-out load ends the actor in 'fenced' and stops all I/O", async () => {
    const h = harness({ rows: [job(1, "a", 0)], loadError: () => new FencedOutError(3, "42", "43") });
    await advance(h.clock, 100);
    expect(h.actor.getSnapshot().value).toBe("fenced");
    expect(h.actor.getSnapshot().status).toBe("done");
    const loads = h.loads.length;
    await advance(h.clock, 2_000);
    expect(h.loads.length).toBe(loads);
  });

  test("other errors retry after a delay; rescue runs at most every rescueInterval", async () => {
    const h = harness({ rows: [], loadError: () => new Error("db down") });
    await advance(h.clock, 2_500);
    expect(h.actor.getSnapshot().value).toBe("retrying");
    const at = h.loads.map((l) => l.at);
    expect(at.length).toBe(3);
    for (let i = 1; i < at.length; i++) expect(at[i]! - at[i - 1]!).toBeWithin(1000, 1011);
    const ok = harness({ rows: [] });
    await advance(ok.clock, 6_000);
    const rescues = ok.loads.filter((l) => l.rescue).map((l) => l.at);
    expect(ok.loads.length).toBeGreaterThan(10); // polls every 500 ms...
    expect(rescues.length).toBe(2); // ...but rescues only every 5 s
    expect(rescues[0]).toBe(0);
    expect(rescues[1]!).toBeWithin(5000, 5600);
  });

  test("after its database was out, no rescue for RESCUE_AFTER_OUTAGE_MS: the runs that could not record their outcomes record them first", async () => {
    let down = true;
    const h = harness({ rows: [], loadError: () => (down ? new Error("db down") : null) });
    await advance(h.clock, 3_500);
    down = false;
    const lastFailure = Math.max(...h.loads.map((l) => l.at));
    await advance(h.clock, 16_000);
    const rescues = h.loads.filter((l) => l.rescue).map((l) => l.at);
    expect(h.loads.filter((l) => l.at > lastFailure && !l.rescue).length).toBeGreaterThan(5); // it loads meanwhile
    expect(rescues[0]).toBe(0); // the very first load, before any failure
    expect(rescues[1]!).toBeGreaterThanOrEqual(lastFailure + RESCUE_AFTER_OUTAGE_MS);
    expect(rescues[1]!).toBeLessThan(lastFailure + RESCUE_AFTER_OUTAGE_MS + 600);
  });

  test("STOP ends the actor; nothing is loaded or offered afterwards", async () => {
    const h = harness({ rows: [job(1, "a", 3_000)] });
    await advance(h.clock, 100);
    h.actor.send({ type: "STOP" });
    await advance(h.clock, 2_000);
    expect(h.actor.getSnapshot().value).toBe("stopped");
    expect(h.loads.length).toBe(1);
    expect(h.offered).toEqual([]);
  });
});
