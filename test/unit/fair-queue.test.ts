import { describe, expect, test } from "bun:test";
import { FairQueue, MAX_WEIGHT, MIN_WEIGHT, MinHeap, sanitizeWeight, type FairItem } from "../../actors/fair-queue.ts";
import { capPart, clusterShare, type DemandReport } from "../../actors/cluster-share.ts";

let nextId = 1n;
const job = (userId: string, dueAt = 0, shard = 0): FairItem => ({ id: nextId++, userId, shard, dueAt });

/** A queue whose weights are read from `weights` at each dispatch (change it to change them). */
function queue(weights: Record<string, number> = {}): FairQueue<FairItem> {
  return new FairQueue<FairItem>((u) => weights[u] ?? 1);
}

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
    const q = queue({ a: 1, b: 3 });
    for (let i = 0; i < 400; i++) {
      q.push(job("a", i));
      q.push(job("b", i));
    }
    const order = drain(q, 1_000, 400);
    let a = 0;
    order.forEach((u, k) => {
      if (u === "a") a++;
      expect(Math.abs(a - (k + 1) / 4)).toBeLessThanOrEqual(1);
    });
    expect(a).toBe(100);
  });

  test("one order across shards: a user's share does not depend on how its jobs spread over shards", () => {
    // a's jobs sit on one shard, b's are spread over 16; equal weights must still alternate.
    const q = queue();
    for (let i = 0; i < 320; i++) {
      q.push(job("a", 0, 3));
      q.push(job("b", 0, i % 16));
    }
    const order = drain(q, 0, 200);
    expect(order.filter((u) => u === "a").length).toBe(100);
    for (let k = 0; k < order.length; k += 2) expect(new Set(order.slice(k, k + 2)).size).toBe(2);
  });

  test("fairness persists across refills (the queue is refilled, not reset)", () => {
    const q = queue({ a: 1, b: 3 });
    const counts = { a: 0, b: 0 };
    for (let poll = 0; poll < 50; poll++) {
      // Each round tops up both users and dispatches only 3 jobs (less than one full round for b).
      while (q.stockOf(0, "a") < 5) q.push(job("a", poll));
      while (q.stockOf(0, "b") < 5) q.push(job("b", poll));
      for (const u of drain(q, poll, 3)) counts[u as "a" | "b"]++;
    }
    expect(counts.a + counts.b).toBe(150);
    expect(Math.abs(counts.a - 150 / 4)).toBeLessThanOrEqual(1);
  });

  test("a late user is served promptly and is not starved by an existing backlog", () => {
    const q = queue();
    for (let i = 0; i < 1000; i++) q.push(job("big", 0));
    drain(q, 0, 500);
    q.push(job("late", 10));
    q.push(job("late", 10));
    const next = drain(q, 10, 4);
    expect(next.slice(0, 2)).toContain("late");
    expect(next.filter((u) => u === "late").length).toBe(2);
  });

  test("an idle user earns no credit: after idling it alternates instead of bursting", () => {
    const q = queue();
    for (let i = 0; i < 300; i++) q.push(job("busy", 0));
    q.push(job("idler", 0));
    drain(q, 0, 200); // idler got its one job early, then was idle for ~199 dispatches
    for (let i = 0; i < 50; i++) q.push(job("idler", 5));
    const next = drain(q, 5, 20);
    const idler = next.filter((u) => u === "idler").length;
    expect(idler).toBeGreaterThanOrEqual(9);
    expect(idler).toBeLessThanOrEqual(11);
  });

  test("emptying between refills earns nothing: a user keeps its lead over the clock", () => {
    // b (weight 9) is backlogged; a (weight 1) has one job at a time and is refilled right
    // after each of its dispatches. It must get a tenth, not more.
    const q = queue({ a: 1, b: 9 });
    for (let i = 0; i < 1000; i++) q.push(job("b", 0));
    q.push(job("a", 0));
    const order: string[] = [];
    for (let i = 0; i < 500; i++) {
      const it = q.pop(0)!;
      order.push(it.userId);
      if (it.userId === "a") q.push(job("a", 0));
    }
    expect(Math.abs(order.filter((u) => u === "a").length - 50)).toBeLessThanOrEqual(1);
  });

  test("many users with fractional weights get shares proportional to weight", () => {
    const weights: Record<string, number> = { u1: 0.5, u2: 1, u3: 1.5, u4: 2.25, u5: 4.75 };
    const q = queue(weights);
    for (const u of Object.keys(weights)) for (let i = 0; i < 2000; i++) q.push(job(u, i));
    const n = 1000;
    const counts: Record<string, number> = {};
    for (const u of drain(q, 1e9, n)) counts[u] = (counts[u] ?? 0) + 1;
    const total = Object.values(weights).reduce((s, w) => s + w, 0);
    for (const [u, w] of Object.entries(weights)) expect(Math.abs(counts[u]! - (n * w) / total)).toBeLessThanOrEqual(1.5);
  });

  test("a weight change applies from the user's next dispatch", () => {
    const weights = { a: 1, b: 1 };
    const q = queue(weights);
    for (let i = 0; i < 1000; i++) {
      q.push(job("a", 0));
      q.push(job("b", 0));
    }
    expect(drain(q, 0, 100).filter((u) => u === "a").length).toBe(50);
    weights.a = 4;
    expect(Math.abs(drain(q, 0, 500).filter((u) => u === "a").length - 400)).toBeLessThanOrEqual(2);
  });

  test("any weight it is given keeps the clock finite and the order fair", () => {
    for (const bad of [5e-324, 0, -1, Number.NaN, Number.POSITIVE_INFINITY, 1e308]) {
      const q = queue({ bad, good: 1 });
      for (let i = 0; i < 200; i++) {
        q.push(job("bad", 0));
        q.push(job("good", 0));
      }
      drain(q, 0, 100);
      // After the bad user, a newcomer still gets served at once (the clock did not run away).
      q.push(job("new", 1));
      expect(drain(q, 1, 3)).toContain("new");
      expect(Number.isFinite(1 / q.weightOf("bad"))).toBe(true);
    }
    expect([sanitizeWeight(5e-324), sanitizeWeight(1e9), sanitizeWeight(Number.NaN, 2), sanitizeWeight(3)]).toEqual([MIN_WEIGHT, MAX_WEIGHT, 2, 3]);
  });

  test("only due items leave; peek shows the next without taking it; nextDueAt tells when", () => {
    const q = queue();
    q.push(job("a", 100));
    q.push(job("b", 50));
    expect(q.pop(10)).toBeUndefined();
    expect(q.peek(10)).toBeUndefined();
    expect(q.nextDueAt()).toBe(50);
    expect(q.peek(60)?.userId).toBe("b");
    expect(q.pop(60)?.userId).toBe("b");
    expect(q.pop(60)).toBeUndefined();
    expect(q.nextDueAt()).toBe(100);
    expect(q.pop(100)?.userId).toBe("a");
    expect(q.size).toBe(0);
  });

  test("ties go to the earlier due time, then the smaller id; a user's jobs leave in time order across shards", () => {
    const q = queue();
    const late = { id: 10n, userId: "a", shard: 1, dueAt: 5 };
    const early = { id: 20n, userId: "a", shard: 2, dueAt: 3 };
    const other = { id: 15n, userId: "b", shard: 1, dueAt: 3 };
    q.push(late);
    q.push(early);
    q.push(other);
    expect(q.pop(10)).toBe(other); // tie at vtime 0 and due 3: id 15 < 20
    expect(q.pop(10)).toBe(early);
    expect(q.pop(10)).toBe(late);
  });

  test("duplicate ids are refused; stock counts per shard and user", () => {
    const q = queue();
    const a = job("a", 0, 2);
    expect(q.push(a)).toBe(true);
    expect(q.push({ ...a })).toBe(false);
    expect(q.size).toBe(1);
    q.push(job("a", 0, 2));
    q.push(job("a", 0, 3));
    expect([q.stockOf(2, "a"), q.stockOf(3, "a"), q.stockOf(2, "b")]).toEqual([2, 1, 0]);
    q.pop(0);
    expect(q.stockOf(2, "a") + q.stockOf(3, "a")).toBe(2);
  });

  test("removeShard drops exactly that shard's items and keeps the others' order", () => {
    const q = queue();
    const kept = [job("a", 1, 1), job("b", 2, 1), job("a", 3, 2)];
    const gone = [job("a", 0, 7), job("b", 0, 7), job("c", 5, 7)];
    [...kept, ...gone].forEach((x) => q.push(x));
    expect(q.removeShard(7).map((i) => i.id).sort()).toEqual(gone.map((i) => i.id).sort());
    expect(q.size).toBe(3);
    expect(q.stockOf(7, "a")).toBe(0);
    const out: bigint[] = [];
    for (let it = q.pop(10); it; it = q.pop(10)) out.push(it.id);
    expect(out.sort()).toEqual(kept.map((i) => i.id).sort());
    expect(q.push(gone[0]!)).toBe(true); // its id may be queued again
  });
});

describe("FairQueue: jobs that stop waiting", () => {
  test("a copy with a new due time replaces the queued one: a job moved to now leaves now", () => {
    const q = queue();
    const later = job("a", 60_000);
    q.push(later);
    q.push(job("b", 0));
    expect(q.push({ ...later, dueAt: 5 })).toBe(true);
    expect(q.size).toBe(2);
    expect(q.stockOf(0, "a")).toBe(1);
    const out = [q.pop(10), q.pop(10)].map((i) => [i?.userId, i?.dueAt]);
    expect(out).toContainEqual(["a", 5]);
    expect(q.pop(100_000)).toBeUndefined(); // the stale copy is gone
  });

  test("remove takes a queued job out at once, from the head or the middle, and its stock with it", () => {
    const q = queue();
    const a = [job("a", 1), job("a", 2), job("a", 3)];
    a.forEach((x) => q.push(x));
    q.push(job("b", 1));
    expect(q.remove(a[1]!.id)?.id).toBe(a[1]!.id);
    expect(q.remove(a[0]!.id)?.id).toBe(a[0]!.id);
    expect(q.remove(a[0]!.id)).toBeUndefined();
    expect(q.stockOf(0, "a")).toBe(1);
    const out: bigint[] = [];
    for (let it = q.pop(10); it; it = q.pop(10)) out.push(it.id);
    expect(out).toContain(a[2]!.id);
    expect(out).not.toContain(a[0]!.id);
    expect(out).not.toContain(a[1]!.id);
    expect(q.size).toBe(0);
  });

  test("a ready user whose due head is removed waits for its next job's due time", () => {
    const q = queue();
    const now = job("a", 0);
    q.push(now);
    q.push(job("a", 500));
    expect(q.peek(10)?.id).toBe(now.id);
    q.remove(now.id);
    expect(q.pop(10)).toBeUndefined();
    expect(q.nextDueAt()).toBe(500);
    expect(q.pop(500)?.userId).toBe("a");
  });

  test("cancelling a user's queued jobs frees its stock and its place: others are not held up", () => {
    const q = queue();
    for (let i = 0; i < 100; i++) q.push(job("gone", 0, i % 4));
    for (let i = 0; i < 10; i++) q.push(job("stays", 0, 1));
    expect(q.removeUser("gone")).toBe(100);
    for (let s = 0; s < 4; s++) expect(q.stockOf(s, "gone")).toBe(0);
    expect(drain(q, 0)).toEqual(Array(10).fill("stays"));
  });

  test("a refunded dispatch costs the user nothing: its share is as if the job had never been popped", () => {
    const q = queue();
    for (let i = 0; i < 200; i++) {
      q.push(job("a", 0));
      q.push(job("b", 0));
    }
    // 20 of a's pops turn out stale (the rows were cancelled) and are refunded.
    let refunded = 0;
    const order: string[] = [];
    while (order.length < 100) {
      const it = q.pop(0)!;
      if (it.userId === "a" && refunded < 20) {
        refunded++;
        q.refund("a");
        continue;
      }
      order.push(it.userId);
    }
    expect(Math.abs(order.filter((u) => u === "a").length - 50)).toBeLessThanOrEqual(1);
  });

  test("idle users are forgotten once the clock passes them; many removals keep the order", () => {
    const q = queue();
    for (let u = 0; u < 1000; u++) q.push(job(`u${u}`, 0));
    drain(q, 0);
    q.prune();
    expect(q.userCount).toBe(0);
    // 50,000 users x 1 job, then removal of every other one.
    const ids: bigint[] = [];
    for (let u = 0; u < 50_000; u++) {
      const j = job(`v${u}`, u);
      ids.push(j.id);
      q.push(j);
    }
    for (let i = 0; i < ids.length; i += 2) q.remove(ids[i]!);
    expect(q.size).toBe(25_000);
    let prev = -1;
    for (let it = q.pop(1e9); it; it = q.pop(1e9)) {
      expect(it.dueAt % 2).toBe(1);
      expect(it.dueAt).toBeGreaterThan(prev); // equal vtimes: due order
      prev = it.dueAt;
    }
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

test("MinHeap with positions removes in O(log n) comparisons", () => {
  let comparisons = 0;
  type E = { v: number; pos: number };
  const h = new MinHeap<E>((a, b) => (comparisons++, a.v - b.v), { get: (e) => e.pos, set: (e, i) => (e.pos = i) });
  const n = 50_000;
  const es = Array.from({ length: n }, (_, i) => ({ v: (i * 7919) % n, pos: -1 }));
  es.forEach((e) => h.push(e));
  // Every entry knows its index (what lets remove skip a search).
  const arr = h.toArray();
  expect(arr.every((e, i) => e.pos === i)).toBe(true);
  comparisons = 0;
  for (let i = 0; i < n; i += 2) expect(h.remove(es[i]!)).toBe(true);
  // At most ~2 log2(n) comparisons per removal (down then up).
  expect(comparisons / (n / 2)).toBeLessThan(2 * Math.log2(n) + 2);
  expect(h.toArray().every((e, i) => e.pos === i)).toBe(true);
  expect(es.filter((_, i) => i % 2 === 0).every((e) => e.pos === -1)).toBe(true);
  const out: number[] = [];
  while (h.size) out.push(h.pop()!.v);
  expect(out).toEqual(es.filter((_, i) => i % 2 === 1).map((e) => e.v).sort((a, b) => a - b));
});

describe("FairQueue: priorities and parking", () => {
  const pjob = (userId: string, dueAt: number, priority: number): FairItem => ({ id: nextId++, userId, shard: 0, dueAt, priority });

  test("inside a user, due jobs leave by priority; the users still alternate", () => {
    const q = queue();
    const low = Array.from({ length: 100 }, (_, i) => pjob("a", i, 2));
    const high = Array.from({ length: 10 }, (_, i) => pjob("a", 50 + i, 0));
    for (const j of [...low, ...high]) q.push(j);
    for (let i = 0; i < 110; i++) q.push(pjob("b", i, 1));
    const out: FairItem[] = [];
    for (let it = q.pop(1_000); it; it = q.pop(1_000)) out.push(it);
    const a = out.filter((j) => j.userId === "a");
    // a's ten high ones first, then its low ones in due order; a and b alternate throughout.
    expect(a.slice(0, 10).map((j) => j.priority)).toEqual(Array(10).fill(0));
    expect(a.slice(10).map((j) => j.dueAt)).toEqual(low.map((j) => j.dueAt));
    for (let k = 0; k + 1 < out.length; k += 2) expect(new Set([out[k]!.userId, out[k + 1]!.userId]).size).toBe(2);
  });

  test("a high job not yet due does not hold back a due low one", () => {
    const q = queue();
    q.push(pjob("a", 100, 0));
    const low = pjob("a", 10, 2);
    q.push(low);
    expect(q.pop(50)).toBe(low);
    expect(q.pop(50)).toBeUndefined();
    expect(q.pop(100)?.priority).toBe(0);
  });

  test("a job that comes due while its user is ready joins the priority order", () => {
    const q = queue();
    q.push(pjob("a", 0, 2));
    q.push(pjob("a", 1, 2));
    q.push(pjob("a", 5, 0));
    expect(q.pop(1)?.dueAt).toBe(0);
    // At 5 the high one (due at 5) goes before the low one due at 1.
    expect(q.pop(5)?.priority).toBe(0);
    expect(q.pop(5)?.dueAt).toBe(1);
  });

  test("a parked user is out of the order until unparked, and earns no credit meanwhile", () => {
    const q = queue();
    for (let i = 0; i < 50; i++) {
      q.push(job("a", 0));
      q.push(job("b", 0));
    }
    q.park("a");
    expect(q.parkedUsers()).toEqual(["a"]);
    expect(drain(q, 10, 20)).toEqual(Array(20).fill("b"));
    // The demand report leaves a parked user out.
    expect([...q.demand(10).keys()]).toEqual(["b"]);
    q.unpark("a");
    // Back at the clock: alternates with b, no burst of a's to catch up.
    const next = drain(q, 10, 20);
    for (let k = 0; k + 1 < next.length; k += 2) expect(new Set([next[k], next[k + 1]]).size).toBe(2);
  });

  test("removing a parked user's jobs empties it; pushing to a parked user keeps it parked", () => {
    const q = queue();
    const j = job("a", 0);
    q.push(j);
    q.park("a");
    q.push(job("a", 0));
    expect(q.pop(10)).toBeUndefined();
    q.removeUser("a");
    expect(q.parkedUsers()).toEqual([]);
    expect(q.size).toBe(0);
  });
});

describe("a capped user's room across processes (capPart)", () => {
  const report = (member: string, capped: [string, number][]): DemandReport => ({
    member,
    rate: 0,
    spanMs: 100,
    userIds: [],
    weights: [],
    queued: [],
    limitedUserIds: capped.map(([u]) => u),
    limitedQueued: capped.map(([, n]) => n),
  });

  test("the parts every process takes of a room add up to at most the room, and someone always gets one", () => {
    for (const split of [[1, 1, 1], [500, 3, 0], [10, 20, 30], [7, 7, 7], [1, 0, 0]]) {
      const reports = split.map((n, i) => report(`p${i}`, n > 0 ? [["u", n]] : []));
      for (const room of [0, 1, 2, 3, 5, 10, 17]) {
        let taken = 0;
        reports.forEach((mine, i) => {
          if (split[i] === 0) return;
          const share = clusterShare(mine, reports.filter((_, k) => k !== i));
          taken += capPart(room, share.capParts.get("u"));
        });
        expect(taken).toBeLessThanOrEqual(room);
        if (room > 0) expect(taken).toBeGreaterThan(0);
      }
    }
  });
});
