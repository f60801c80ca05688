import { describe, expect, test } from "bun:test";
import { StartWindow, type Commit, type WindowSettings } from "../../actors/start-window.ts";

const settings: WindowSettings = { targetDelayMs: 200, minJobs: 100, maxJobs: 50_000, rateSpanMs: 100, rateMemoryMs: 1_000 };
const at = (entries: [number, number, number?][]) => new Map<number, Commit>(entries.map(([p, next, waitMs]) => [p, { next, waitMs: waitMs ?? null }]));

describe("StartWindow", () => {
  test("a message is started once the group's committed offset passes it, on its own partition only", () => {
    const w = new StartWindow(settings);
    w.published([{ partition: 0, offset: 10, jobs: 5, users: [] }, { partition: 1, offset: 3, jobs: 7, users: [] }, { partition: 0, offset: 11, jobs: 2, users: [] }], 0);
    expect(w.outstanding).toBe(14);
    // Committed offset 11 on partition 0 = offsets up to 10 consumed.
    expect(w.observe(at([[0, 11]]), 50)).toBe(5);
    expect(w.outstanding).toBe(9);
    expect(w.lastDelays).toEqual([50]);
    // Offsets of other schedulers' messages in between do not matter; a partition never
    // published to is ignored.
    expect(w.observe(at([[0, 40], [1, 4], [5, 99]]), 60)).toBe(9);
    expect(w.outstanding).toBe(0);
    expect(w.started).toBe(14);
    // Observing the same offsets again starts nothing more.
    expect(w.observe(at([[0, 40], [1, 4]]), 70)).toBe(0);
  });

  test("the window is the start rate times the span (the target delay at first), within its bounds", () => {
    const w = new StartWindow(settings);
    expect(w.size(0)).toBe(settings.minJobs);
    // 1,000 jobs started per 100 ms = 10,000/s: window = 10,000 x 0.2 s = 2,000.
    let offset = 0;
    for (let t = 0; t <= 1_000; t += 100) {
      w.published([{ partition: 0, offset, jobs: 1_000, users: [] }], t);
      w.observe(at([[0, ++offset]]), t);
    }
    expect(w.rate(1_000)).toBeCloseTo(10_000, 0);
    expect(w.size(1_000)).toBe(2_000);
    // Starts stop: the rate keeps its best sample for rateMemoryMs, then the window is the floor.
    for (let t = 1_100; t <= 2_300; t += 100) w.observe(at([[0, offset]]), t);
    expect(w.size(2_300)).toBe(settings.minJobs);
    expect(new StartWindow({ ...settings, maxJobs: 500 }).size(0)).toBe(settings.minJobs);
  });

  test("a burst of commits counts over at least one span, not as an infinite rate", () => {
    const w = new StartWindow(settings);
    w.published([{ partition: 0, offset: 0, jobs: 500, users: [] }], 0);
    w.observe(at([[0, 0]]), 0);
    w.observe(at([[0, 1]]), 1);
    expect(w.rate(1)).toBe(0); // 1 ms apart: no sample spans 100 ms yet
    w.observe(at([[0, 1]]), 120);
    expect(w.rate(120)).toBeCloseTo((500 * 1000) / 120, 0);
  });

  test("the executors' wait steers the span: above the target it shrinks, below it grows only while the window held dispatching back", () => {
    const run = (wait: number, limited: boolean, rounds = 50) => {
      const w = new StartWindow(settings);
      let offset = 0;
      for (let t = 0; t < rounds * 50; t += 50) {
        if (limited) w.limited(t);
        w.published([{ partition: 0, offset, jobs: 10, users: [] }], t);
        w.observe(at([[0, ++offset, wait]]), t);
      }
      return w;
    };
    expect(run(200, true).spanMs).toBeCloseTo(200, 5); // at the target: unchanged
    const slow = run(800, false);
    expect(slow.spanMs).toBeLessThan(100);
    expect(slow.spanMs).toBeGreaterThanOrEqual(200 / 8); // bounded below
    expect(slow.lastWaitMs).toBe(800);
    expect(run(50, false).spanMs).toBeCloseTo(200, 5); // not held back: no reason to grow
    const fast = run(50, true);
    expect(fast.spanMs).toBeGreaterThan(300);
    expect(fast.spanMs).toBeLessThanOrEqual(200 * 8); // bounded above
    // One observation moves the span by a few percent at most, so a delayed signal cannot swing it.
    expect(run(5_000, false, 1).spanMs).toBeCloseTo(180, 5);
    expect(run(100, true, 1).spanMs).toBeCloseTo(206, 5); // at half the target: +3 % at most
    expect(run(1, true, 1).spanMs).toBeCloseTo(220, 5); // far under it (the executors starve): +10 %
    // Commits that carry no wait (another version of the executor) leave the span alone.
    const w = new StartWindow(settings);
    w.published([{ partition: 0, offset: 0, jobs: 10, users: [] }], 0);
    w.observe(at([[0, 1]]), 10);
    expect([w.spanMs, w.lastWaitMs]).toEqual([200, null]);
  });
});

test("StartWindow: a user's jobs published and not yet started, per user", () => {
  const w = new StartWindow(settings);
  w.published([{ partition: 0, offset: 0, jobs: 3, users: ["a", "a", "b"] }, { partition: 1, offset: 0, jobs: 2, users: ["a", "c"] }], 0);
  expect([w.outstandingOf("a"), w.outstandingOf("b"), w.outstandingOf("c")]).toEqual([3, 1, 1]);
  w.observe(at([[0, 1]]), 10);
  expect([w.outstandingOf("a"), w.outstandingOf("b"), w.outstandingOf("c")]).toEqual([1, 0, 1]);
  w.observe(at([[0, 1], [1, 1]]), 20);
  expect([w.outstandingOf("a"), w.outstandingOf("c")]).toEqual([0, 0]);
});
