import { describe, expect, test } from "bun:test";
import { FairQueue, MinHeap, type FairItem } from "../../actors/fair-queue.ts";

let nextId = 1n;
const job = (userId: string, weight: number, executeAt = 0): FairItem => ({ id: nextId++, userId, weight, executeAt });

function drain(q: FairQueue<FairItem>, now: number, n = Infinity): string[] {
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const it = q.pop(now);
    if (!it) break;
    out.push(it.userId);
  }
  return out;
}

describe("FairQueue", () => {
  test("weights 1 and 3, both backlogged: every prefix within 1 job of 1:3", () => {
    const q = new FairQueue<FairItem>();
    for (let i = 0; i < 400; i++) {
      q.push(job("a", 1, i));
      q.push(job("b", 3, i));
    }
    const order = drain(q, 1_000, 400);
    let a = 0;
    order.forEach((u, k) => {
      if (u === "a") a++;
      expect(Math.abs(a - (k + 1) / 4)).toBeLessThanOrEqual(1);
    });
    expect(a).toBe(100);
  });

  test("fairness persists across polls (the queue is refilled, not reset)", () => {
    const q = new FairQueue<FairItem>();
    const counts = { a: 0, b: 0 };
    for (let poll = 0; poll < 50; poll++) {
      // Each poll tops up both users and dispatches only 3 jobs (less than one full round for b).
      while (q.countOf("a") < 5) q.push(job("a", 1, poll));
      while (q.countOf("b") < 5) q.push(job("b", 3, poll));
      for (const u of drain(q, poll, 3)) counts[u as "a" | "b"]++;
    }
    expect(counts.a + counts.b).toBe(150);
    expect(Math.abs(counts.a - 150 / 4)).toBeLessThanOrEqual(1);
  });

  test("a late user is served promptly and is not starved by an existing backlog", () => {
    const q = new FairQueue<FairItem>();
    for (let i = 0; i < 1000; i++) q.push(job("big", 1, 0));
    drain(q, 0, 500);
    q.push(job("late", 1, 10));
    q.push(job("late", 1, 10));
    const next = drain(q, 10, 4);
    expect(next.slice(0, 2)).toContain("late");
    expect(next.filter((u) => u === "late").length).toBe(2);
  });

  test("an idle user earns no credit: after idling it alternates instead of bursting", () => {
    const q = new FairQueue<FairItem>();
    for (let i = 0; i < 300; i++) q.push(job("busy", 1, 0));
    q.push(job("idler", 1, 0));
    drain(q, 0, 200); // idler got its one job early, then was idle for ~199 dispatches
    for (let i = 0; i < 50; i++) q.push(job("idler", 1, 5));
    const next = drain(q, 5, 20);
    const idler = next.filter((u) => u === "idler").length;
    expect(idler).toBeGreaterThanOrEqual(9);
    expect(idler).toBeLessThanOrEqual(11);
  });

  test("many users with fractional weights get shares proportional to weight", () => {
    const q = new FairQueue<FairItem>();
    const weights: Record<string, number> = { u1: 0.5, u2: 1, u3: 1.5, u4: 2.25, u5: 4.75 };
    for (const [u, w] of Object.entries(weights)) for (let i = 0; i < 2000; i++) q.push(job(u, w, i));
    const n = 1000;
    const counts: Record<string, number> = {};
    for (const u of drain(q, 1e9, n)) counts[u] = (counts[u] ?? 0) + 1;
    const total = Object.values(weights).reduce((s, w) => s + w, 0);
    for (const [u, w] of Object.entries(weights)) expect(Math.abs(counts[u]! - (n * w) / total)).toBeLessThanOrEqual(1.5);
  });

  test("only due items are dispatched; nextDueAt tells when the next one is", () => {
    const q = new FairQueue<FairItem>();
    q.push(job("a", 1, 100));
    q.push(job("b", 1, 50));
    expect(q.pop(10)).toBeUndefined();
    expect(q.hasReady(10)).toBe(false);
    expect(q.nextDueAt()).toBe(50);
    expect(q.pop(60)?.userId).toBe("b");
    expect(q.pop(60)).toBeUndefined();
    expect(q.nextDueAt()).toBe(100);
    expect(q.pop(100)?.userId).toBe("a");
    expect(q.size).toBe(0);
  });

  test("ties go to the earlier execute_at, then the smaller id; a user's jobs leave in time order", () => {
    const q = new FairQueue<FairItem>();
    const late = { id: 10n, userId: "a", weight: 1, executeAt: 5 };
    const early = { id: 20n, userId: "a", weight: 1, executeAt: 3 };
    const other = { id: 15n, userId: "b", weight: 1, executeAt: 3 };
    q.push(late);
    q.push(early);
    q.push(other);
    expect(q.pop(10)).toBe(other); // tie at vtime 0 and execute_at 3: id 15 < 20
    expect(q.pop(10)).toBe(early);
    expect(q.pop(10)).toBe(late);
  });

  test("duplicate ids are refused; removed items never come out", () => {
    const q = new FairQueue<FairItem>();
    const a = job("a", 1, 0);
    expect(q.push(a)).toBe(true);
    expect(q.push({ ...a })).toBe(false);
    const b = job("a", 1, 0);
    q.push(b);
    expect(q.remove(a.id, 0)).toBe(true);
    expect(q.remove(a.id, 0)).toBe(false);
    expect(q.pop(0)).toBe(b);
    expect(q.pop(0)).toBeUndefined();
  });

  test("backlog cursors: the last queued job of each user whose queue is all due by dueBy; reset when it empties", () => {
    const q = new FairQueue<FairItem>();
    const a1 = job("a", 1, 10);
    const a2 = job("a", 1, 20);
    const b1 = job("b", 1, 10);
    const b2 = job("b", 1, 500); // b has a job not yet old enough: no cursor for b
    [a2, a1, b1, b2].forEach((x) => q.push(x));
    expect(q.backlogCursors(100)).toEqual([{ userId: "a", executeAt: 20, id: a2.id }]);
    // Pushing an earlier item does not move the cursor back; popping keeps it while items remain.
    q.push(job("a", 1, 5));
    expect(q.backlogCursors(100)[0]!.id).toBe(a2.id);
    expect(q.backlogCursors(500).map((c) => c.userId)).toEqual(["a", "b"]);
    while (q.size > 0) q.pop(1_000);
    expect(q.backlogCursors(1_000)).toEqual([]);
    const a3 = job("a", 1, 30);
    q.push(a3);
    expect(q.backlogCursors(1_000)).toEqual([{ userId: "a", executeAt: 30, id: a3.id }]);
  });
});

test("MinHeap sorts and removes", () => {
  const h = new MinHeap<number>((a, b) => a - b);
  const xs = Array.from({ length: 200 }, (_, i) => (i * 7919) % 211);
  xs.forEach((x) => h.push(x));
  h.remove(xs[17]!);
  const out: number[] = [];
  while (h.size) out.push(h.pop()!);
  const expected = xs.filter((_, i) => i !== 17).sort((a, b) => a - b);
  expect(out).toEqual(expected);
});
