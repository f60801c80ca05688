/**
 * A deterministic simulation of one or several scheduler processes: the real SchedulerCore
 * (dispatcher, fair queue, start window, one shard actor per shard) of each, on a simulated clock
 * (the database's; each process's own clock may be skewed from it), against an in-memory model of
 * the database (waiting rows per shard, loads with cursors, per-user limits and rotation, guarded
 * marks), a topic with partitions, and an executor pool that starts a fixed number of jobs per
 * second from every partition at once and commits offsets. The processes exchange demand reports
 * as the real ones do. What it checks is what a user would measure: shares of starts per
 * 1-second window against the weights in every phase, and that nothing starts before it is due.
 */
import { describe, expect, test } from "bun:test";
import { SimulatedClock } from "xstate";
import type { Marked, MarkOutcome, MarkRequest } from "../../actors/dispatcher.ts";
import type { FairItem } from "../../actors/fair-queue.ts";
import { SchedulerCore, type CoreSettings } from "../../actors/scheduler-core.ts";
import type { LoadInput, LoadOutput } from "../../actors/shard.machine.ts";
import type { Commit, Placement } from "../../actors/start-window.ts";
import type { DemandReport } from "../../actors/cluster-share.ts";
import { FairSlots } from "../../actors/slots.ts";

interface Row extends FairItem {
  status: "waiting" | "scheduled" | "started";
  startedAt?: number;
}

const settings: CoreSettings = {
  shard: { lookaheadMs: 2_000, pollIntervalMs: 500, rescueIntervalMs: 5_000, fullRescueMs: 300_000, retryDelayMs: 1_000, maxLoad: 5_000 },
  dispatch: {
    batchMax: 500,
    batchMin: 100,
    batchesInFlight: 4,
    premarkMs: 250,
    premarkEveryMs: 50,
    publishSlotMs: 10,
    partitions: 12,
    userTarget: 100,
    maxQueued: 200_000,
    defaultWeight: 1,
    window: { targetDelayMs: 150, minJobs: 100, maxJobs: 100_000, rateSpanMs: 100, rateMemoryMs: 1_000 },
  },
};

interface World {
  clock: SimulatedClock;
  rows: Map<bigint, Row>;
  /** The scheduler processes (one unless `processes` says otherwise). */
  cores: SchedulerCore<Marked & { userId: string }>[];
  core: SchedulerCore<Marked & { userId: string }>;
  /** Adds n jobs of a user; `shardOf` picks each one's shard (default: the id's hash, like the real ids). */
  add(userId: string, n: number, dueAt: number | ((i: number) => number), shardOf?: (i: number) => number): void;
  run(untilMs: number): Promise<void>;
  maxOutstanding: number;
  /** The most jobs any process held queued at once. */
  maxQueued: number;
  /** Partitions' messages not yet fully started, in jobs (the queue outside the scheduler). */
  queued(): number;
  /** Jobs started before their due time by the database's (the simulation's) clock. */
  early(): Row[];
  /** Slots mode: per user, slot-milliseconds held in each second. */
  occupancy: Map<string, number[]>;
}

/** One scheduler process: its shards and how far its clock is ahead of the database's (ms). */
interface ProcessSpec {
  shards: number[];
  skewMs?: number;
}

/**
 * capacity: jobs the executors start per second. ioMs: each I/O step's time. processes: the
 * scheduler processes sharing the database, the topic and the executors (default: one owning
 * every shard); they exchange demand reports every `reportEveryMs` as the real ones do.
 */
function world(opts: {
  shards: number;
  capacity: number;
  weights: Record<string, number>;
  partitions?: number;
  ioMs?: number;
  commitEveryMs?: number;
  pollIntervalMs?: number;
  processes?: ProcessSpec[];
  reportEveryMs?: number;
  maxQueued?: number;
  /** false: the processes do not exchange demand (each orders alone, as before the exchange). */
  exchange?: boolean;
  /**
   * Executors with run slots shared by occupancy (actors/slots.ts) instead of a start rate: every
   * message is taken at once, each job starts when it gets a slot and holds it durationMs(user).
   */
  slots?: { capacity: number; reserve: number; durationMs: Record<string, number> };
}): World {
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
    // Users in serving order: after startAfterUser, then wrapping (as load-due.ts does).
    const sorted = [...byUser.keys()].sort();
    const from = input.startAfterUser;
    const order = from === null ? sorted : [...sorted.filter((u) => u > from), ...sorted.filter((u) => u <= from)];
    for (const userId of order) {
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

  const publish = (jobs: (Marked & { userId: string })[], _onTime: boolean, to: number[]) =>
    after(2, () => {
      const placements: Placement[] = [];
      for (let i = 0; i < jobs.length; i += 100) {
        const p = to[rr++ % to.length]!;
        const part = jobs.slice(i, i + 100);
        partitions[p]!.push({ jobs: part.map((j) => j.id) });
        waiting[p]!.push({ p, offset: partitions[p]!.length - 1, jobs: part.map((j) => j.id), at: clock.now() });
        placements.push({ partition: p, offset: partitions[p]!.length - 1, jobs: part.length, users: part.map((j) => j.userId) });
      }
      return placements;
    });

  const shardSettings = { ...settings.shard, pollIntervalMs: opts.pollIntervalMs ?? settings.shard.pollIntervalMs };
  const specs = opts.processes ?? [{ shards: Array.from({ length: opts.shards }, (_, s) => s) }];
  const weightOf = (u: string) => opts.weights[u] ?? 1;
  const cores = specs.map((spec) => {
    // Its own clock: the simulation's (the database's) plus its skew; timers are relative.
    const skew = spec.skewMs ?? 0;
    const own = { now: () => clock.now() + skew, setTimeout: (fn: () => void, ms: number) => clock.setTimeout(fn, ms), clearTimeout: (id: unknown) => clock.clearTimeout(id as never) };
    const dispatch = { ...settings.dispatch, maxQueued: opts.maxQueued ?? settings.dispatch.maxQueued };
    const core = new SchedulerCore({ load, mark, publish }, { shard: shardSettings, dispatch }, own, { fenced: () => {}, weightOf });
    for (const s of spec.shards) core.addShard(s, "1");
    return core;
  });

  // The executors: start `capacity` jobs per second on average, taking whole messages (the
  // real executor claims a message's jobs in one statement), every partition at once: one
  // message from each partition with messages in turn, each partition in its order; a message
  // is committed once started, the executors commit every commitEveryMs and each scheduler
  // reads the commits every 50 ms.
  let credit = 0;
  const waiting = partitions.map(() => [] as { p: number; offset: number; jobs: bigint[]; at: number }[]);
  let turn = 0;
  const committed = new Map<number, Commit>();
  const waits = new Map<number, { sum: number; n: number }>();
  const tick = () => {
    credit = Math.min(credit + opts.capacity / 1000, opts.capacity / 1000); // idle capacity does not accumulate
    while (credit > 0 && waiting.some((q) => q.length > 0)) {
      while (waiting[turn % waiting.length]!.length === 0) turn++;
      const msg = waiting[turn++ % waiting.length]!.shift()!;
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
  // Slots mode: messages are read ahead at once; a message counts as consumed (committable) once
  // every job in it started, and only as part of its partition's contiguous prefix.
  const pool = opts.slots ? new FairSlots({ capacity: opts.slots.capacity, reserve: opts.slots.reserve, activeMs: 10_000 }) : null;
  const left = partitions.map(() => new Map<number, number>());
  const occupancy = new Map<string, number[]>();
  const tickSlots = () => {
    const now = clock.now();
    for (const q of waiting) {
      for (let msg = q.shift(); msg; msg = q.shift()) {
        const m = msg;
        left[m.p]!.set(m.offset, m.jobs.length);
        for (const id of m.jobs) {
          const r = rows.get(id)!;
          void pool!.acquire(r.userId, weightOf(r.userId), now).then(() => {
            r.status = "started";
            r.startedAt = clock.now();
            const n = left[m.p]!.get(m.offset)! - 1;
            left[m.p]!.set(m.offset, n);
            if (n === 0) {
              const w = waits.get(m.p) ?? { sum: 0, n: 0 };
              w.sum += clock.now() - m.at;
              w.n++;
              waits.set(m.p, w);
            }
            while (left[m.p]!.get(consumed[m.p]!) === 0) left[m.p]!.delete(consumed[m.p]!++);
            const ms = opts.slots!.durationMs[r.userId] ?? 1;
            clock.setTimeout(() => {
              pool!.noteRun(r.userId, ms);
              pool!.release(r.userId, clock.now());
            }, ms);
          });
        }
      }
    }
    const second = Math.floor(now / 1000);
    for (const [u, n] of pool!.holders()) {
      const per = occupancy.get(u) ?? [];
      per[second] = (per[second] ?? 0) + n;
      occupancy.set(u, per);
    }
  };
  const commit = () =>
    partitions.forEach((_, p) => {
      if (committed.get(p)?.next === consumed[p]) return;
      const w = waits.get(p);
      committed.set(p, { next: consumed[p]!, waitMs: w ? w.sum / w.n : null });
      waits.delete(p);
    });
  // Demand reports: each process's last report, read by the others at their next exchange.
  const reports = new Map<number, DemandReport>();
  const exchange = (i: number) => {
    const mine = cores[i]!.dispatcher.demandReport(String(i), opts.reportEveryMs ?? 100);
    reports.set(i, mine);
    if (opts.exchange !== false) cores[i]!.dispatcher.setPeers(mine, [...reports].filter(([k]) => k !== i).map(([, r]) => r));
  };

  const w: World = {
    clock,
    rows,
    cores,
    core: cores[0]!,
    maxOutstanding: 0,
    maxQueued: 0,
    queued: () => partitions.reduce((n, part, p) => n + part.slice(consumed[p]!).reduce((m, msg) => m + msg.jobs.length, 0), 0),
    early: () => [...rows.values()].filter((r) => r.startedAt !== undefined && r.startedAt < r.dueAt),
    occupancy,
    add(userId, n, dueAt, shardOf) {
      for (let i = 0; i < n; i++) {
        const id = nextId++;
        const shard = shardOf ? shardOf(i) : Number(id % BigInt(opts.shards));
        rows.set(id, { id, userId, shard, dueAt: typeof dueAt === "number" ? dueAt : dueAt(i), status: "waiting" });
      }
    },
    async run(untilMs) {
      const every = opts.reportEveryMs ?? 100;
      while (clock.now() < untilMs) {
        clock.increment(1);
        if (pool) {
          tickSlots();
          // The executors' slot report, as every 100 ms (src/executor/slot-report.ts).
          if (clock.now() % 100 === 0) for (const c of cores) c.dispatcher.setExecutorReport(pool.waitingByUser(), pool.runTimes());
        } else tick();
        if (clock.now() % (opts.commitEveryMs ?? 25) === 0) commit();
        if (clock.now() % 50 === 0) for (const c of cores) c.dispatcher.observe(new Map(committed));
        // Processes report at different instants, as independent processes do.
        if (cores.length > 1) cores.forEach((_, i) => clock.now() % every === Math.floor((i * every) / cores.length) && exchange(i));
        w.maxOutstanding = Math.max(w.maxOutstanding, cores.reduce((n, c) => n + c.dispatcher.inFlight, 0));
        w.maxQueued = Math.max(w.maxQueued, ...cores.map((c) => c.dispatcher.queue.size));
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
    // The small user's jobs are on time (marked ahead): they go to the on-time lane and wait
    // behind other jobs on time only, not behind the flood's backlog (one lane for all: 224-278
    // ms here, the flood's window). The tail is the flood's first jobs, marked ahead too.
    expect(late[98]!).toBeLessThan(200);
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

/**
 * Worst deviation, in points, of each full 1 s window's shares from the weights, over the users
 * still backlogged in that window (a user's last start is after the window's end): while all
 * are backlogged, and after some run out, renormalised over the rest.
 */
function worstDeviationAllPhases(w: World, weights: Record<string, number>, from: number): { worst: number; windows: number } {
  const users = Object.keys(weights);
  const last = new Map(users.map((u) => [u, lastStart(w, u)]));
  const until = Math.max(...last.values());
  const counts = windows(w.rows.values(), users, from, until);
  let worst = 0;
  let n = 0;
  counts.forEach((c, k) => {
    const end = from + (k + 1) * 1000;
    const live = users.map((u, i) => ({ u, i })).filter(({ u }) => last.get(u)! > end);
    if (live.length < 2) return;
    n++;
    const d = worstDeviation([live.map(({ i }) => c[i]!)], live.map(({ u }) => weights[u]!));
    if (process.env.SIM_TRACE) console.log("window", k, c.join("/"), live.map(({ u }) => u).join(""), d.toFixed(1));
    worst = Math.max(worst, d);
  });
  return { worst, windows: n };
}

describe("fair share across scheduler processes, simulated (16 shards split 5/5/6, one shared executor pool)", () => {
  const three: ProcessSpec[] = [
    { shards: [0, 1, 2, 3, 4] },
    { shards: [5, 6, 7, 8, 9], skewMs: 2_000 },
    { shards: [10, 11, 12, 13, 14, 15], skewMs: -300 },
  ];

  test("weights 1:2:4: every full second within 2 points in every phase (all backlogged, then renormalised); nothing starts early though one clock runs 2 s ahead", async () => {
    const weights = { a: 1, b: 2, c: 4 };
    const w = world({ shards: 16, capacity: 5_000, weights, processes: three });
    for (const u of ["a", "b", "c"]) w.add(u, 10_000, 1_000);
    await w.run(9_000);
    expect([...w.rows.values()].every((r) => r.status === "started")).toBe(true);
    // Every second, while all three are backlogged and after c runs out (renormalised over a
    // and b): within 2 points. Without the exchange it is 41-52 points off (test below).
    const { worst, windows: n } = worstDeviationAllPhases(w, weights, 1_000);
    expect(n).toBeGreaterThanOrEqual(5);
    expect(worst).toBeLessThanOrEqual(2);
    expect(w.early()).toEqual([]);
    // The three processes together keep the executors busy (each alone would sit at a floor).
    const busy = windows(w.rows.values(), ["a", "b", "c"], 1_000, lastStart(w, "c"));
    for (const c of busy.slice(1)) expect(c.reduce((x, y) => x + y, 0)).toBeGreaterThanOrEqual(4_900);
  });

  test("without the exchange (each process alone) the same backlog drifts far from the weights", async () => {
    const weights = { a: 1, b: 2, c: 4 };
    const w = world({ shards: 16, capacity: 5_000, weights, processes: three, exchange: false });
    for (const u of ["a", "b", "c"]) w.add(u, 10_000, 1_000);
    await w.run(9_000);
    expect(worstDeviationAllPhases(w, weights, 1_000).worst).toBeGreaterThan(20);
  });

  test("a user whose jobs sit in one process's shards gets its weighted share of the whole pool", async () => {
    // "solo" has jobs only in process 0's shards (ids picked so); a and b everywhere.
    const weights = { a: 1, b: 1, solo: 2 };
    const w = world({ shards: 16, capacity: 4_000, weights, processes: three });
    w.add("a", 8_000, 1_000);
    w.add("b", 8_000, 1_000);
    w.add("solo", 4_000, 1_000, (i) => i % 5);
    await w.run(8_000);
    // Without the exchange solo gets a third of the pool, not half: 35 points off. The first
    // second is off by up to 9 while the windows ramp up from their floor (every process keeps
    // at least one batch, so until the cluster's rate is known the split is flatter than the
    // shares), then within 2.
    const { worst, windows: n } = worstDeviationAllPhases(w, weights, 1_000);
    expect(n).toBeGreaterThanOrEqual(3);
    expect(worst).toBeLessThanOrEqual(9);
    expect(worstDeviationAllPhases(w, weights, 2_000).worst).toBeLessThanOrEqual(2);
  });

  test("a small user behind a flood in another process is not held back by it", async () => {
    const w = world({ shards: 16, capacity: 5_000, weights: {}, processes: three });
    w.add("flood", 30_000, 1_000);
    w.add("small", 60, (i) => 1_500 + i * 50);
    await w.run(6_000);
    const late = [...w.rows.values()].filter((r) => r.userId === "small").map((r) => r.startedAt! - r.dueAt).sort((a, b) => a - b);
    expect(late.length).toBe(60);
    expect(late.every((l) => l >= 0)).toBe(true);
    // Its jobs go to the on-time lane (467 ms at p99 here when they shared the flood's).
    expect(late[58]!).toBeLessThan(250);
  });
});

describe("many users, simulated (memory bounded by SCHEDULER_MAX_QUEUED)", () => {
  test("400 users x 60 jobs with room for 4,000 queued: the queue stays within the cap, every job starts, turns stay even", async () => {
    const users = Array.from({ length: 400 }, (_, i) => `u${String(i).padStart(3, "0")}`);
    const w = world({ shards: 8, capacity: 5_000, weights: {}, maxQueued: 4_000 });
    for (const u of users) w.add(u, 60, 1_000);
    await w.run(8_000);
    expect([...w.rows.values()].every((r) => r.status === "started")).toBe(true);
    expect(w.maxQueued).toBeLessThanOrEqual(4_000);
    // Jain's index of starts per user, per full second while every user is backlogged.
    const until = Math.min(...users.map((u) => lastStart(w, u)));
    const counts = windows(w.rows.values(), users, 1_000, until);
    expect(counts.length).toBeGreaterThanOrEqual(2);
    for (const c of counts) {
      const sum = c.reduce((a, b) => a + b, 0);
      const sq = c.reduce((a, b) => a + b * b, 0);
      expect((sum * sum) / (c.length * sq)).toBeGreaterThanOrEqual(0.95);
    }
  });
});

describe("fair by occupancy, simulated (executors' slots shared by held per weight)", () => {
  // With weights 1:3 the same run gives the short jobs' user 22-25 % of the slot time, not 75 %
  // (docs/architecture.md, known limitations): it is held back by the window, full of the long
  // jobs' user's jobs waiting for its slots.
  test("jobs of 100 ms and of 10 ms, equal weights, both backlogged: slot time splits evenly, starts 1:10", { timeout: 120_000 }, async () => {
    for (const [wa, wb] of [[1, 1]] as const) {
      const w = world({ shards: 8, capacity: 0, weights: { a: wa, b: wb }, slots: { capacity: 200, reserve: 4, durationMs: { a: 100, b: 10 } } });
      w.add("a", 8_000, 1_000);
      w.add("b", 80_000, 1_000);
      await w.run(6_000);
      const occA = w.occupancy.get("a")!;
      const occB = w.occupancy.get("b")!;
      const starts = (u: string, from: number, to: number) => [...w.rows.values()].filter((r) => r.userId === u && r.startedAt !== undefined && r.startedAt >= from && r.startedAt < to).length;
      // From the third second on (the first reports carry no run times yet).
      for (let sec = 3; sec < 6; sec++) {
        const share = occB[sec]! / (occA[sec]! + occB[sec]!);
        expect(Math.abs(share - wb / (wa + wb))).toBeLessThan(0.05);
      }
      // Starts follow slot time over duration: b's jobs are 10x shorter.
      const ratio = starts("b", 3_000, 6_000) / starts("a", 3_000, 6_000);
      expect(Math.abs(ratio - (10 * wb) / wa) / ((10 * wb) / wa)).toBeLessThan(0.1);
      // Work-conserving: the slots stay in use.
      expect((occA[4]! + occB[4]!) / 1000).toBeGreaterThan(190);
    }
  });
});
