import { describe, expect, test } from "bun:test";
import { OffsetTracker } from "../../actors/offset-tracker.ts";

describe("OffsetTracker", () => {
  test("out-of-order completions: the commit never passes an offset whose claim is not durable", () => {
    const t = new OffsetTracker();
    const gen = [10, 11, 12, 13, 14].map((o) => t.track(0, o))[0]!;
    expect(t.committable(0)).toBeNull();
    t.done(0, 12, gen);
    t.done(0, 14, gen);
    expect(t.committable(0)).toBeNull(); // 10 is not done: nothing may be committed
    t.done(0, 10, gen);
    expect(t.committable(0)).toBe(11); // 10 done; 11 not: commit up to (not including) 11
    t.committed(0, 11);
    expect(t.committable(0)).toBeNull(); // unchanged since the last commit
    t.done(0, 11, gen);
    expect(t.committable(0)).toBe(13); // 11, 12 done; 13 not
    t.done(0, 13, gen);
    expect(t.committable(0)).toBe(15);
    expect(t.pending(0)).toBe(0);
  });

  test("every permutation of completions commits exactly the done prefix", () => {
    const perms = (xs: number[]): number[][] => (xs.length <= 1 ? [xs] : xs.flatMap((x, i) => perms([...xs.slice(0, i), ...xs.slice(i + 1)]).map((p) => [x, ...p])));
    const offsets = [3, 4, 7, 8, 9]; // gaps: other messages of the partition (e.g. already committed) in between
    for (const order of perms(offsets)) {
      const t = new OffsetTracker();
      const gen = offsets.map((o) => t.track(1, o))[0]!;
      const done = new Set<number>();
      for (const o of order) {
        t.done(1, o, gen);
        done.add(o);
        let prefix = 0;
        while (prefix < offsets.length && done.has(offsets[prefix]!)) prefix++;
        const expected = prefix === 0 ? null : offsets[prefix - 1]! + 1;
        const got = t.committable(1);
        if (got !== null) t.committed(1, got);
        if (expected !== null) expect(got === null ? expected : got).toBe(expected);
        else expect(got).toBeNull();
      }
    }
  });

  test("a dropped (revoked) partition ignores late completions, even once assigned again", () => {
    const t = new OffsetTracker();
    const gen = t.track(5, 100)!;
    t.drop(5);
    const gen2 = t.track(5, 50)!; // re-assigned: consumption restarts at the committed offset
    t.done(5, 100, gen);
    expect(t.committable(5)).toBeNull();
    t.done(5, 50, gen2);
    expect(t.committable(5)).toBe(51);
  });

  test("a rebalance that keeps the partition delivers taken messages again: they are skipped, not taken twice", () => {
    const t = new OffsetTracker();
    const gen = [7, 8, 9].map((o) => t.track(0, o))[0]!;
    t.done(0, 7, gen);
    t.committed(0, 8);
    // Fetching restarts at the committed offset, 8: 8 and 9 are in processing already.
    expect(t.track(0, 8)).toBeNull();
    expect(t.track(0, 9)).toBeNull();
    expect(t.track(0, 10)).toBe(gen); // new messages continue the same generation
    for (const o of [8, 9, 10]) t.done(0, o, gen);
    expect(t.committable(0)).toBe(11);
    expect(t.pending(0)).toBe(0);
  });
});
