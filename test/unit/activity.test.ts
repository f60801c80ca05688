import { describe, expect, test } from "bun:test";
import { bucketUpperMs, latenessBucket, quantileMs, summarize } from "../../src/jobs/activity.ts";

describe("lateness histogram", () => {
  test("a bucket's upper bound holds every lateness in it, within 9 % (+1 ms)", () => {
    for (let ms = 0; ms < 200_000; ms = ms < 50 ? ms + 1 : Math.ceil(ms * 1.013)) {
      const upper = bucketUpperMs(latenessBucket(ms));
      expect(upper).toBeGreaterThanOrEqual(ms);
      expect(upper).toBeLessThanOrEqual(ms * 1.0906 + 1);
    }
  });

  test("percentiles by rank: p50 and p99 of 100 values", () => {
    const hist = new Map<number, number>();
    const add = (ms: number, n: number) => hist.set(latenessBucket(ms), (hist.get(latenessBucket(ms)) ?? 0) + n);
    add(10, 50);
    add(1_000, 49);
    add(60_000, 1);
    expect(quantileMs(hist, 0.5)).toBe(bucketUpperMs(latenessBucket(10)));
    expect(quantileMs(hist, 0.51)).toBe(bucketUpperMs(latenessBucket(1_000)));
    expect(quantileMs(hist, 0.99)).toBe(bucketUpperMs(latenessBucket(1_000)));
    expect(quantileMs(hist, 1)).toBe(bucketUpperMs(latenessBucket(60_000)));
    expect(quantileMs(new Map(), 0.5)).toBeNull();
  });
});

describe("summarize", () => {
  const from = 1_000_000;
  const a = { from, to: from + 30_000, intervalMs: 10_000, defaultWeight: 1 };
  const users = [
    { id: "1", username: "light", job_weight: 1 },
    { id: "2", username: "heavy", job_weight: 3 },
    { id: "3", username: "idle", job_weight: 4 },
  ];

  test("per interval: shares of starts summed across databases, weight shares among the users who started", () => {
    const view = summarize(
      a,
      [
        { t: from, user_id: "1", n: 10 },
        { t: from, user_id: "2", n: 20 }, // database 0
        { t: from, user_id: "2", n: 10 }, // database 1, same interval
        { t: from + 10_000, user_id: "1", n: 5 },
        { t: from + 90_000, user_id: "1", n: 99 }, // outside the window: ignored
      ],
      [],
      [],
      users,
    );
    expect(view.intervals.map((i) => i.starts)).toEqual([40, 5, 0]);
    expect(view.intervals[0]!.share).toEqual({ "1": 0.25, "2": 0.75 });
    expect(view.intervals[0]!.weight_share).toEqual({ "1": 0.25, "2": 0.75 });
    // Alone in an interval, a user is owed all of it.
    expect(view.intervals[1]!.weight_share).toEqual({ "1": 1 });
    expect(view.intervals[2]).toMatchObject({ share: {}, weight_share: {}, lateness_p50_ms: null });
    expect(view.users.map((u) => [u.id, u.starts, u.share])).toEqual([["2", 30, 30 / 45], ["1", 15, 15 / 45]]);
  });

  test("waiting: merged across databases; owed shares among every waiting user; the oldest due time", () => {
    const view = summarize(
      a,
      [{ t: from, user_id: "1", n: 1 }],
      [],
      [
        { user_id: "2", n: 5, oldest: new Date(from + 2_000) },
        { user_id: "2", n: 7, oldest: new Date(from + 1_000) },
        { user_id: "3", n: 1, oldest: new Date(from + 3_000) },
      ],
      users,
    );
    const by = new Map(view.users.map((u) => [u.id, u]));
    expect(by.get("2")).toMatchObject({ waiting: 12, owed_share: 3 / 7, starts: 0 });
    expect(by.get("3")).toMatchObject({ waiting: 1, owed_share: 4 / 7 });
    expect(by.get("1")).toMatchObject({ waiting: 0, owed_share: null, starts: 1 });
    expect(view.backlog).toEqual({ waiting: 13, oldest_due_at: new Date(from + 1_000).toISOString() });
  });

  test("occupancy: shares of the summed run time, beside shares of starts, summed across databases", () => {
    const view = summarize(
      a,
      [
        { t: from, user_id: "1", n: 10, run_ms: 6_000 }, // 600 ms a run, database 0
        { t: from, user_id: "1", n: 10, run_ms: 4_000 }, // database 1, same interval
        { t: from, user_id: "2", n: 20, run_ms: 200 }, // 10 ms a run
        { t: from + 10_000, user_id: "1", n: 3, run_ms: 0 }, // no durations (null counts 0)
        { t: from + 10_000, user_id: "2", n: 1 },
      ],
      [],
      [],
      users,
    );
    expect(view.intervals[0]!.share).toEqual({ "1": 0.5, "2": 0.5 });
    expect(view.intervals[0]!.run_ms).toBe(10_200);
    expect(view.intervals[0]!.occupancy["1"]).toBeCloseTo(10_000 / 10_200, 10);
    expect(view.intervals[0]!.occupancy["2"]).toBeCloseTo(200 / 10_200, 10);
    // No run time measured: no occupancy shares, while the starts still have theirs.
    expect(view.intervals[1]).toMatchObject({ starts: 4, run_ms: 0, occupancy: {} });
    expect(view.intervals[2]).toMatchObject({ run_ms: 0, occupancy: {} });
  });

  test("a user the users table does not know (deleted) counts with the default weight", () => {
    const view = summarize(a, [{ t: from, user_id: "9", n: 1 }, { t: from, user_id: "2", n: 3 }], [], [], users);
    expect(view.intervals[0]!.weight_share).toEqual({ "9": 0.25, "2": 0.75 });
    expect(view.users.find((u) => u.id === "9")).toMatchObject({ username: null, job_weight: null });
  });
});
