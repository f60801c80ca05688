import { describe, expect, test } from "bun:test";
import { StartWindow, type WindowSettings } from "../../actors/start-window.ts";

const settings: WindowSettings = { targetDelayMs: 200, minJobs: 100, maxJobs: 50_000, rateSpanMs: 100, rateMemoryMs: 1_000 };

describe("StartWindow", () => {
  test("a message is started once the group's committed offset passes it, on its own partition only", () => {
    const w = new StartWindow(settings);
    w.published([{ partition: 0, offset: 10, jobs: 5 }, { partition: 1, offset: 3, jobs: 7 }, { partition: 0, offset: 11, jobs: 2 }], 0);
    expect(w.outstanding).toBe(14);
    // Committed offset 11 on partition 0 = offsets up to 10 consumed.
    expect(w.observe(new Map([[0, 11]]), 50)).toBe(5);
    expect(w.outstanding).toBe(9);
    expect(w.lastDelays).toEqual([50]);
    // Offsets of other schedulers' messages in between do not matter; a partition never
    // published to is ignored.
    expect(w.observe(new Map([[0, 40], [1, 4], [5, 99]]), 60)).toBe(9);
    expect(w.outstanding).toBe(0);
    expect(w.started).toBe(14);
    // Observing the same offsets again starts nothing more.
    expect(w.observe(new Map([[0, 40], [1, 4]]), 70)).toBe(0);
  });

  test("the window is the highest recent start rate times the target delay, within its bounds", () => {
    const w = new StartWindow(settings);
    expect(w.size(0)).toBe(settings.minJobs);
    // 1,000 jobs started per 100 ms = 10,000/s for a second: window = 10,000 x 0.2 s = 2,000.
    let offset = 0;
    for (let t = 0; t <= 1_000; t += 100) {
      w.published([{ partition: 0, offset, jobs: 1_000 }], t);
      w.observe(new Map([[0, ++offset]]), t);
    }
    expect(w.rate(1_000)).toBeCloseTo(10_000, 0);
    expect(w.size(1_000)).toBe(2_000);
    // Starts stop: the window keeps the best rate for rateMemoryMs, then falls to the floor.
    for (let t = 1_100; t <= 2_300; t += 100) w.observe(new Map([[0, offset]]), t);
    expect(w.size(2_300)).toBe(settings.minJobs);
  });

  test("a burst of commits counts over at least one span, not as an infinite rate", () => {
    const w = new StartWindow(settings);
    w.published([{ partition: 0, offset: 0, jobs: 500 }], 0);
    w.observe(new Map([[0, 0]]), 0);
    w.observe(new Map([[0, 1]]), 1);
    expect(w.rate(1)).toBe(0); // 1 ms apart: no sample spans 100 ms yet
    w.observe(new Map([[0, 1]]), 120);
    expect(w.rate(120)).toBeCloseTo((500 * 1000) / 120, 0);
  });

  test("forget drops a partition's outstanding jobs", () => {
    const w = new StartWindow(settings);
    w.published([{ partition: 2, offset: 0, jobs: 30 }, { partition: 2, offset: 1, jobs: 20 }, { partition: 3, offset: 0, jobs: 1 }], 0);
    w.observe(new Map([[2, 1]]), 10);
    w.forget(2);
    expect(w.outstanding).toBe(1);
  });
});
