/**
 * A deterministic simulation of one scheduler process: the real SchedulerCore (dispatcher, fair
 * queue, start window, one shard actor per shard) on a simulated clock, against an in-memory
 * model of the database (waiting rows per shard, loads with cursors and per-user limits, guarded
 * marks), a topic with partitions, and an executor pool that starts a fixed number of jobs per
 * second in partition order and commits offsets. What it checks is what a user would measure:
 * shares of starts per 1-second window, against the weights.
 */
import { describe, expect, test } from "bun:test";
import { SimulatedClock } from "xstate";
import type { Marked, MarkOutcome, MarkRequest } from "../../actors/dispatcher.ts";
import type { FairItem } from "../../actors/fair-queue.ts";
import { SchedulerCore, type CoreSettings } from "../../actors/scheduler-core.ts";
import type { LoadInput, LoadOutput } from "../../actors/shard.machine.ts";
import type { Commit, Placement } from "../../actors/start-window.ts";

interface Row extends FairItem {
  status: "waiting" | "scheduled" | "started";
  startedAt?: number;
}

const settings: CoreSettings = {
  shard: { lookaheadMs: 2_000, pollIntervalMs: 500, rescueIntervalMs: 5_000, fullRescueMs: 300_000, retryDelayMs: 1_000, userTarget: 100, userLowWater: 50, maxLoad: 5_000 },
  dispatch: {
    batchMax: 500,
    batchMin: 100,
    batchesInFlight: 4,
    premarkMs: 250,
    premarkEveryMs: 50,
    publishSlotMs: 10,
    userLowWater: 50,
    defaultWeight: 1,
    window: { targetDelayMs: 150, minJobs: 100, maxJobs: 100_000, rateSpanMs: 100, rateMemoryMs: 1_000 },
  },
};

interface World {
  clock: SimulatedClock;
  rows: Map<bigint, Row>;
  core: SchedulerCore<Marked & { userId: string }>;
  add(userId: string, n: number, dueAt: number | ((i: number) => number)): void;
  run(untilMs: number): Promise<void>;
  maxOutstanding: number;
  /** Partitions' messages not yet fully started, in jobs (the queue outside the scheduler). */
  queued(): number;
}

/**
 * capacity: jobs the executors start per second. latency: ms for each I/O step.
 */
function world(opts: { shards: number; capacity: number; weights: Record<string, number>; partitions?: number; ioMs?: number; commitEveryMs?: number; pollIntervalMs?: number }): World {
  const clock = new SimulatedClock();
  const rows = new Map<bigint, Row>();
  const ioMs = opts.ioMs ?? 5;
  const after = <T>(ms: number, fn: () => T) => new Promise<T>((resolve) => clock.setTimeout(() => resolve(fn()), ms));
  const partitions: { jobs: bigint[] }[][] = Array.from({ length: opts.partitions ?? 12 }, () => []);
  const consumed = partitions.map(() => 0); // next offset to start, per partition
  let rr = 0;
  let nextId = 1n;

  const load = (input: LoadInput): Promise<LoadOutput> => {
    // Computed at the start (the statement's snapshot), answered after the I/O time.
    const cursors = new Map(input.users.map((u) => [u.userId, u]));
    const byUser = new Map<string, Row[]>();
    for (const r of rows.values()) {
      if (r.shard !== input.shard || r.status !== "waiting" || r.dueAt > input.horizon) continue;
      const list = byUser.get(r.userId);
      if (list) list.push(r);
      else byUser.set(r.userId, [r]);
    }
    const out: FairItem[] = [];
    for (const userId of [...byUser.keys()].sort()) {
      const c = cursors.get(userId);
      const limit = c ? c.limit : input.newUserLimit;
      const mine = byUser
        .get(userId)!
        .filter((r) => !c?.after || r.dueAt > c.after.dueAt || (r.dueAt === c.after.dueAt && r.id > c.after.id))
        .sort((a, b) => a.dueAt - b.dueAt || (a.id < b.id ? -1 : 1))
        .slice(0, limit);
      for (const r of mine) if (out.length < input.maxRows) out.push({ id: r.id, userId: r.userId, shard: r.shard, dueAt: r.dueAt });
    }
    const dbNow = clock.now();
    return after(ioMs, () => ({ jobs: out, dbNow, nextDue: null, rescuedAt: input.rescue ? dbNow : null }));
  };

  const mark = (reqs: MarkRequest[]) =>
    after(ioMs, () =>
      reqs.map((req): MarkOutcome<Marked & { userId: string }> => {
        const marked: (Marked & { userId: string })[] = [];
        for (const j of req.jobs) {
          const r = rows.get(j.id)!;
          if (r.status !== "waiting") continue;
          r.status = "scheduled";
          marked.push({ id: r.id, shard: r.shard, dueAt: r.dueAt, userId: r.userId });
        }
        return { kind: "marked", rows: marked };
      }),
    );

  const publish = (jobs: (Marked & { userId: string })[]) =>
    after(2, () => {
      const placements: Placement[] = [];
      for (let i = 0; i < jobs.length; i += 100) {
        const p = rr++ % partitions.length;
        const part = jobs.slice(i, i + 100);
        partitions[p]!.push({ jobs: part.map((j) => j.id) });
        published.push({ p, jobs: part.map((j) => j.id), at: clock.now() });
        placements.push({ partition: p, offset: partitions[p]!.length - 1, jobs: part.length });
      }
      return placements;
    });

  const shardSettings = { ...settings.shard, pollIntervalMs: opts.pollIntervalMs ?? settings.shard.pollIntervalMs };
  const core = new SchedulerCore({ load, mark, publish }, { ...settings, shard: shardSettings }, clock, { fenced: () => {} });
  for (const [u, w] of Object.entries(opts.weights)) core.dispatcher.setWeight(u, w);
  for (let s = 0; s < opts.shards; s++) core.addShard(s, "1");

  // The executors: start `capacity` jobs per second on average, taking whole messages (the
  // real executor claims a message's jobs in one statement) in the order they were published
  // (it consumes every partition at once); a message is committed once started, the executors
  // commit every commitEveryMs and the scheduler reads the commits every 25 ms.
  let credit = 0;
  const published: { p: number; jobs: bigint[]; at: number }[] = [];
  let next = 0;
  const committed = new Map<number, Commit>();
  const waits = new Map<number, { sum: number; n: number }>();
  const tick = () => {
    credit = Math.min(credit + opts.capacity / 1000, opts.capacity / 1000); // idle capacity does not accumulate
    while (credit > 0 && next < published.length) {
      const msg = published[next++]!;
      for (const id of msg.jobs) {
        const r = rows.get(id)!;
        r.status = "started";
        r.startedAt = clock.now();
      }
      consumed[msg.p]!++;
      credit -= msg.jobs.length;
      const w = waits.get(msg.p) ?? { sum: 0, n: 0 };
      w.sum += clock.now() - msg.at;
      w.n++;
      waits.set(msg.p, w);
    }
  };
  const commit = () =>
    partitions.forEach((_, p) => {
      if (committed.get(p)?.next === consumed[p]) return;
      const w = waits.get(p);
      committed.set(p, { next: consumed[p]!, waitMs: w ? w.sum / w.n : null });
      waits.delete(p);
    });

  const w: World = {
    clock,
    rows,
    core,
    maxOutstanding: 0,
    queued: () => partitions.reduce((n, part, p) => n + part.slice(consumed[p]!).reduce((m, msg) => m + msg.jobs.length, 0), 0),
    add(userId, n, dueAt) {
      for (let i = 0; i < n; i++) {
        const id = nextId++;
        rows.set(id, { id, userId, shard: Number(id % BigInt(opts.shards)), dueAt: typeof dueAt === "number" ? dueAt : dueAt(i), status: "waiting" });
      }
    },
    async run(untilMs) {
      while (clock.now() < untilMs) {
        clock.increment(1);
        tick();
        if (clock.now() % (opts.commitEveryMs ?? 25) === 0) commit();
        if (clock.now() % 50 === 0) core.dispatcher.observe(new Map(committed));
        w.maxOutstanding = Math.max(w.maxOutstanding, core.dispatcher.inFlight);
        for (let i = 0; i < 3; i++) await new Promise((r) => setImmediate(r));
      }
    },
  };
  return w;
}

/** Starts per user in each full 1-second window [from, until). */
function windows(rows: Iterable<Row>, users: string[], from: number, until: number): number[][] {
  const n = Math.floor((until - from) / 1000);
  const out = Array.from({ length: n }, () => users.map(() => 0));
  for (const r of rows) {
    if (r.startedAt === undefined) continue;
    const k = Math.floor((r.startedAt - from) / 1000);
    const u = users.indexOf(r.userId);
    if (k >= 0 && k < n && u >= 0) out[k]![u]!++;
  }
  return out;
}

function worstDeviation(counts: number[][], weights: number[]): number {
  const total = weights.reduce((a, b) => a + b, 0);
  let worst = 0;
  for (const c of counts) {
    const sum = c.reduce((a, b) => a + b, 0);
    c.forEach((x, i) => (worst = Math.max(worst, Math.abs((100 * x) / sum - (100 * weights[i]!) / total))));
  }
  return worst;
}

const lastStart = (w: World, user: string) => Math.max(...[...w.rows.values()].filter((r) => r.userId === user).map((r) => r.startedAt ?? Infinity));

describe("fair share, simulated (scheduler core on a simulated clock, 8 shards, fixed executor capacity)", () => {
  test("weights 1:2:4 under backlog: every full second within 2 points; the window stays near capacity x target delay", async () => {
    const w = world({ shards: 8, capacity: 5_000, weights: { a: 1, b: 2, c: 4 } });
    for (const u of ["a", "b", "c"]) w.add(u, 12_000, 1_000);
    await w.run(9_000);
    const until = Math.min(...["a", "b", "c"].map((u) => lastStart(w, u)));
    expect(until).toBeGreaterThan(5_000); // c finishes first, after > 4 s of shared backlog
    const counts = windows(w.rows.values(), ["a", "b", "c"], 1_000, until);
    expect(counts.length).toBeGreaterThanOrEqual(4);
    expect(worstDeviation(counts, [1, 2, 4])).toBeLessThanOrEqual(2);
    // Throughput is the executors' capacity: the window never starved them.
    for (const c of counts.slice(1)) expect(c.reduce((a, b) => a + b, 0)).toBeGreaterThanOrEqual(4_900);
    // Dispatched but unstarted work stayed bounded by the window (~ 5,000/s x 150 ms, plus a batch).
    expect(w.maxOutstanding).toBeLessThan(1_600);
  });

  test("weights 1:1:10, and a late user arriving with its own backlog gets its share at once", async () => {
    const w = world({ shards: 8, capacity: 4_000, weights: { a: 1, b: 1, c: 10, late: 1 } });
    for (const u of ["a", "b", "c"]) w.add(u, 20_000, 1_000);
    w.add("late", 5_000, 4_000);
    await w.run(8_000);
    const before = windows(w.rows.values(), ["a", "b", "c"], 1_000, 4_000);
    expect(worstDeviation(before, [1, 1, 10])).toBeLessThanOrEqual(2);
    const until = Math.min(...["a", "b", "c", "late"].map((u) => lastStart(w, u)));
    const afterLate = windows(w.rows.values(), ["a", "b", "c", "late"], 4_000, until);
    expect(afterLate.length).toBeGreaterThanOrEqual(2);
    expect(worstDeviation(afterLate, [1, 1, 10, 1])).toBeLessThanOrEqual(2);
    // The late user's first job starts within the window's delay, not behind a queue.
    const firstLate = Math.min(...[...w.rows.values()].filter((r) => r.userId === "late").map((r) => r.startedAt ?? Infinity));
    expect(firstLate - 4_000).toBeLessThan(300);
  });

  test("when the heaviest user runs out, the others keep the executors busy (refills do not wait for a poll)", async () => {
    // Polls far apart: only refills can keep the queues stocked. A refill declined for the
    // exhausted user must not stop its shard's other users from asking for theirs.
    const w = world({ shards: 8, capacity: 5_000, weights: { a: 1, b: 2, c: 4 }, pollIntervalMs: 60_000 });
    for (const u of ["a", "b"]) w.add(u, 20_000, 1_000);
    w.add("c", 12_000, 1_000);
    await w.run(14_000);
    const cDone = lastStart(w, "c");
    const until = Math.min(lastStart(w, "a"), lastStart(w, "b"));
    const after = windows(w.rows.values(), ["a", "b"], cDone + 100, until);
    expect(after.length).toBeGreaterThanOrEqual(2);
    for (const c of after) expect(c[0]! + c[1]!).toBeGreaterThanOrEqual(4_900);
  });

  test("a small user behind a flood starts each job within ~the target delay", async () => {
    const w = world({ shards: 8, capacity: 5_000, weights: {} });
    w.add("flood", 40_000, 1_000);
    w.add("small", 100, (i) => 1_000 + i * 50);
    await w.run(7_000);
    const late = [...w.rows.values()].filter((r) => r.userId === "small").map((r) => r.startedAt! - r.dueAt).sort((a, b) => a - b);
    expect(late.length).toBe(100);
    expect(late.every((l) => l >= 0)).toBe(true);
    expect(late[98]!).toBeLessThan(250);
  });

  test("with no executor starting anything, dispatch stops at the window's floor", async () => {
    const w = world({ shards: 4, capacity: 0, weights: {} });
    w.add("a", 10_000, 1_000);
    await w.run(4_000);
    const scheduled = [...w.rows.values()].filter((r) => r.status === "scheduled").length;
    expect(scheduled).toBe(settings.dispatch.window.minJobs);
    expect(w.queued()).toBe(settings.dispatch.window.minJobs);
  });
});
