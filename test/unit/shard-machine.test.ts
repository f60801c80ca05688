import { describe, expect, test } from "bun:test";
import { createActor, fromPromise, SimulatedClock } from "xstate";
import { CURSOR_MARGIN_MS, shardMachine, type DueJob, type LoadInput, type ShardSettings } from "../../actors/shard.machine.ts";

const settings: ShardSettings = { lookaheadMs: 2_000, pollIntervalMs: 500, credits: 100, batchMax: 50, rescueIntervalMs: 5_000, retryDelayMs: 1_000, refillBelow: 1_000, fullReloadMs: 2_000, premarkMs: 0 };
const flush = () => new Promise((r) => setTimeout(r, 0));
async function advance(clock: SimulatedClock, ms: number, step = 10) {
  for (let t = 0; t < ms; t += step) {
    clock.increment(step);
    await flush();
    await flush();
  }
}

function harness(opts: { jobs: DueJob[]; inFlight?: () => number; settings?: Partial<ShardSettings>; dispatchError?: Error; loadError?: Error }) {
  const clock = new SimulatedClock();
  const pending = opts.jobs; // shared: tests add jobs while the actor runs
  const dispatches: { at: number; ids: bigint[] }[] = [];
  const loads: { at: number; horizon: number; rescue: boolean; after: LoadInput["after"] }[] = [];
  const fetches: boolean[] = [];
  const machine = shardMachine.provide({
    actors: {
      load: fromPromise(async ({ input }) => {
        loads.push({ at: clock.now(), horizon: input.horizon, rescue: input.rescue, after: input.after });
        if (opts.loadError) throw opts.loadError;
        fetches.push(input.fetchJobs);
        // Like the SQL: a user with a cursor gets only rows after it (by execute_at, id).
        const cursor = new Map(input.after.map((c) => [c.userId, c]));
        const afterCursor = (j: DueJob) => {
          const c = cursor.get(j.userId);
          return !c || j.executeAt > c.executeAt || (j.executeAt === c.executeAt && j.id > c.id);
        };
        const jobs = input.fetchJobs ? pending.filter((j) => j.executeAt <= input.horizon && afterCursor(j)) : [];
        return { jobs, inFlight: opts.inFlight?.() ?? 0, fetched: input.fetchJobs };
      }),
      dispatch: fromPromise(async ({ input }) => {
        if (opts.dispatchError) throw opts.dispatchError;
        dispatches.push({ at: clock.now(), ids: input.jobs.map((j) => j.id) });
        for (const j of input.jobs) pending.splice(pending.findIndex((p) => p.id === j.id), 1);
        return input.jobs.length;
      }),
    },
  });
  const actor = createActor(machine, { clock, input: { shard: 3, epoch: "42", settings: { ...settings, ...opts.settings }, now: () => clock.now() } });
  actor.start();
  return { clock, actor, dispatches, loads, fetches };
}

describe("shard actor", () => {
  test("dispatches each job at its execute_at, not at the next poll", async () => {
    const h = harness({ jobs: [{ id: 1n, userId: "a", weight: 1, executeAt: 130 }, { id: 2n, userId: "b", weight: 1, executeAt: 770 }] });
    await advance(h.clock, 1_000);
    expect(h.dispatches.map((d) => [d.at, d.ids])).toEqual([[130, [1n]], [770, [2n]]]);
    h.actor.stop();
  });

  test("with premarkMs, the dispatch step starts that much before execute_at (publishing waits for it)", async () => {
    const h = harness({ jobs: [{ id: 1n, userId: "a", weight: 1, executeAt: 400 }], settings: { premarkMs: 50 } });
    await advance(h.clock, 600);
    expect(h.dispatches.map((d) => d.at)).toEqual([350]);
  });

  test("a job created after the last load is picked up by the next poll", async () => {
    const jobs: DueJob[] = [];
    const h = harness({ jobs });
    await advance(h.clock, 200);
    jobs.push({ id: 9n, userId: "a", weight: 1, executeAt: 900 });
    await advance(h.clock, 1_000);
    expect(h.dispatches.map((d) => d.at)).toEqual([900]);
  });

  test("in-flight work stays within credits; credits return when the load's count drops", async () => {
    let inFlight = 0;
    const jobs = Array.from({ length: 10 }, (_, i) => ({ id: BigInt(i + 1), userId: "a", weight: 1, executeAt: 0 }));
    const h = harness({ jobs, settings: { credits: 3 }, inFlight: () => inFlight });
    await advance(h.clock, 100);
    expect(h.dispatches.flatMap((d) => d.ids).length).toBe(3);
    inFlight = 3; // nothing finished yet
    await advance(h.clock, 1_000);
    expect(h.dispatches.flatMap((d) => d.ids).length).toBe(3);
    inFlight = 1; // two finished
    await advance(h.clock, 600);
    expect(h.dispatches.flatMap((d) => d.ids).length).toBe(5);
  });

  test("dispatch order across users follows the fair queue", async () => {
    const jobs: DueJob[] = [];
    for (let i = 0; i < 8; i++) jobs.push({ id: BigInt(100 + i), userId: "heavy", weight: 1, executeAt: 0 });
    jobs.push({ id: 200n, userId: "light", weight: 1, executeAt: 1 });
    const h = harness({ jobs, settings: { batchMax: 3 } });
    await advance(h.clock, 50);
    const first = h.dispatches[0]!.ids;
    expect(first).toContain(200n);
  });

  test("a fenced-out write ends the actor in 'fenced' and stops all I/O", async () => {
    const err = Object.assign(new Error("fenced"), { name: "FencedOutError" });
    const h = harness({ jobs: [{ id: 1n, userId: "a", weight: 1, executeAt: 0 }], dispatchError: err });
    await advance(h.clock, 100);
    expect(h.actor.getSnapshot().value).toBe("fenced");
    expect(h.actor.getSnapshot().status).toBe("done");
    const loads = h.loads.length;
    await advance(h.clock, 2_000);
    expect(h.loads.length).toBe(loads);
  });

  test("other errors retry after a delay; rescue runs at most every rescueInterval", async () => {
    const h = harness({ jobs: [], loadError: new Error("db down") });
    await advance(h.clock, 2_500);
    expect(h.actor.getSnapshot().value).toBe("retrying");
    // One retry per retryDelay (the simulated clock advances in 10 ms steps).
    const at = h.loads.map((l) => l.at);
    expect(at.length).toBe(3);
    for (let i = 1; i < at.length; i++) expect(at[i]! - at[i - 1]!).toBeWithin(1000, 1011);
    const ok = harness({ jobs: [] });
    await advance(ok.clock, 6_000);
    const rescues = ok.loads.filter((l) => l.rescue).map((l) => l.at);
    expect(ok.loads.length).toBeGreaterThan(10); // polls every 500 ms...
    expect(rescues.length).toBe(2); // ...but rescues only every 5 s
    expect(rescues[0]).toBe(0);
    expect(rescues[1]!).toBeWithin(5000, 5600);
  });

  test("a well-stocked queue is not re-read every poll, but is at least every fullReloadMs", async () => {
    const jobs = Array.from({ length: 30 }, (_, i) => ({ id: BigInt(i + 1), userId: "a", weight: 1, executeAt: 100_000 + i }));
    const h = harness({ jobs, settings: { refillBelow: 10, fullReloadMs: 2_000, lookaheadMs: 1_000_000 } });
    await advance(h.clock, 4_100);
    // Polls every 500 ms; the first reads jobs (queue empty), then only every 2 s.
    expect(h.fetches.length).toBeGreaterThanOrEqual(8);
    expect(h.fetches.filter(Boolean).length).toBe(3);
    expect(h.fetches[0]).toBe(true);
  });

  test("in a backlog, loads read only after each user's last queued job, and every job is still dispatched once", async () => {
    let inFlight = 0;
    const jobs: DueJob[] = [];
    for (let i = 0; i < 40; i++) jobs.push({ id: BigInt(1_000 + i), userId: i % 2 ? "a" : "b", weight: 1, executeAt: 0 });
    const all = jobs.map((j) => j.id);
    // Credits of 5 keep a backlog queued over many polls.
    const h = harness({ jobs, settings: { credits: 5, refillBelow: 4 }, inFlight: () => inFlight });
    await advance(h.clock, CURSOR_MARGIN_MS + 200);
    inFlight = 0;
    for (let t = 0; t < 40; t++) {
      inFlight = 0;
      await advance(h.clock, 500);
    }
    const dispatched = h.dispatches.flatMap((d) => d.ids);
    expect(dispatched.sort()).toEqual(all.sort());
    expect(new Set(dispatched).size).toBe(dispatched.length);
    // The first load had no cursors; once the backlog was older than the margin, loads had them.
    expect(h.loads[0]!.after).toEqual([]);
    expect(h.loads.some((l) => l.after.length > 0)).toBe(true);
    for (const l of h.loads.filter((x) => x.at < CURSOR_MARGIN_MS)) expect(l.after).toEqual([]);
  });

  test("after a dispatch error the next load reads without cursors (the batch's rows went back to waiting)", async () => {
    const jobs = Array.from({ length: 6 }, (_, i) => ({ id: BigInt(i + 1), userId: "a", weight: 1, executeAt: 0 }));
    let fail = false;
    let failedAtLoad = -1;
    const clock = new SimulatedClock();
    const loads: LoadInput[] = [];
    const machine = shardMachine.provide({
      actors: {
        load: fromPromise(async ({ input }) => {
          loads.push(input);
          return { jobs: input.fetchJobs ? jobs : [], inFlight: 0, fetched: input.fetchJobs };
        }),
        dispatch: fromPromise(async ({ input }) => {
          if (fail) {
            if (failedAtLoad < 0) failedAtLoad = loads.length;
            throw new Error("broker down");
          }
          return input.jobs.length;
        }),
      },
    });
    const actor = createActor(machine, { clock, input: { shard: 1, epoch: "1", settings: { ...settings, credits: 1, batchMax: 1, refillBelow: 100 }, now: () => clock.now() } }).start();
    await advance(clock, CURSOR_MARGIN_MS + 1_000);
    expect(loads.at(-1)!.after.length).toBe(1);
    fail = true;
    await advance(clock, 1_500);
    expect(failedAtLoad).toBeGreaterThan(0);
    const afterError = loads.slice(failedAtLoad).find((l) => l.fetchJobs);
    expect(afterError?.after).toEqual([]);
    actor.stop();
  });

  test("STOP ends the actor; nothing is dispatched afterwards", async () => {
    const h = harness({ jobs: [{ id: 1n, userId: "a", weight: 1, executeAt: 300 }] });
    await advance(h.clock, 100);
    h.actor.send({ type: "STOP" });
    await advance(h.clock, 500);
    expect(h.actor.getSnapshot().value).toBe("stopped");
    expect(h.dispatches).toEqual([]);
  });
});
