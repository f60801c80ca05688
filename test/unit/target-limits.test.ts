import { describe, expect, test } from "bun:test";
import { hostOf, leaseShare, limitKey, TargetGate, type GateAnswer, type TargetLimit } from "../../actors/target-limits.ts";

const HOST = "api.example.com";
const KEY = limitKey("7", HOST);

function gate(limit: TargetLimit, now = 0, lease?: { c?: number; r?: number }) {
  const g = new TargetGate({ waitMs: 500, idleMs: 5_000 });
  g.setLimits(new Map([[KEY, limit]]), now);
  g.keysFor("7", HOST);
  if (lease) {
    // A key exists once a job asked for it; the lease follows.
    const first = g.acquire([KEY], now);
    for (const [bound, n] of Object.entries(lease)) g.setLease(KEY, bound as "c" | "r", n, now + 60_000, now);
    return { g, first };
  }
  return { g, first: null };
}

const settled = async (p: GateAnswer | Promise<GateAnswer>, within = 5): Promise<GateAnswer | "pending"> =>
  Promise.race([Promise.resolve(p), Bun.sleep(within).then(() => "pending" as const)]);

describe("leaseShare", () => {
  test("never more than the limit less the others' permits, never less than what is in use while that fits", () => {
    expect(leaseShare(10, { member: "a", inUse: 0, want: 10 }, []).permits).toBe(10);
    expect(leaseShare(10, { member: "a", inUse: 0, want: 10 }, [{ member: "b", permits: 7, want: 7 }]).permits).toBe(3);
    expect(leaseShare(10, { member: "a", inUse: 4, want: 4 }, [{ member: "b", permits: 3, want: 10 }]).permits).toBe(4);
    expect(leaseShare(10, { member: "a", inUse: 9, want: 9 }, [{ member: "b", permits: 3, want: 3 }]).permits).toBe(7);
  });

  test("a lease shrinks to an equal share, as its calls end, while another executor wants more", () => {
    expect(leaseShare(10, { member: "a", inUse: 8, want: 10 }, [{ member: "b", permits: 0, want: 10 }]).permits).toBe(8);
    expect(leaseShare(10, { member: "a", inUse: 2, want: 10 }, [{ member: "b", permits: 0, want: 10 }]).permits).toBe(5);
    // 7 over 3: 3, 2, 2 by member name.
    expect(leaseShare(7, { member: "a", inUse: 0, want: 7 }, [{ member: "b", permits: 0, want: 7 }, { member: "c", permits: 0, want: 7 }]).permits).toBe(3);
    expect(leaseShare(7, { member: "c", inUse: 0, want: 7 }, [{ member: "a", permits: 3, want: 7 }, { member: "b", permits: 0, want: 7 }]).permits).toBe(2);
  });

  test("random executors renewing in any order: the leases together never exceed the limit, and converge to equal shares", () => {
    let seed = 42;
    const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    for (let round = 0; round < 200; round++) {
      const limit = 1 + Math.floor(rand() * 20);
      const n = 2 + Math.floor(rand() * 4);
      const ex = Array.from({ length: n }, (_, j) => ({ member: `e${j}`, permits: 0, inUse: 0, want: limit }));
      for (let step = 0; step < 400; step++) {
        const i = Math.floor(rand() * n);
        const me = ex[i]!;
        // Calls end and start within the permits held.
        me.inUse = Math.floor(rand() * (me.permits + 1));
        me.permits = leaseShare(limit, me, ex.filter((_, j) => j !== i)).permits;
        expect(ex.reduce((s, e) => s + e.permits, 0)).toBeLessThanOrEqual(limit);
      }
      // Then every call ends and each renews twice in turn: the shares are equal (to rounding).
      for (let pass = 0; pass < 2; pass++)
        ex.forEach((me, i) => {
          me.inUse = 0;
          me.permits = leaseShare(limit, me, ex.filter((_, j) => j !== i)).permits;
        });
      expect(ex.reduce((s, e) => s + e.permits, 0)).toBeLessThanOrEqual(limit);
      expect(ex.map((e) => e.permits)).toEqual(ex.map((_, j) => Math.floor(limit / n) + (j < limit % n ? 1 : 0)));
    }
  });
});

describe("TargetGate", () => {
  test("keys: the user's limit and the operator's, only where one is set", () => {
    const g = new TargetGate({ waitMs: 500, idleMs: 5_000 });
    const limit = { maxConcurrent: 1, maxPerSecond: null };
    g.setLimits(new Map([[limitKey("7", HOST), limit], [limitKey("0", "other.example"), limit]]), 0);
    expect(g.keysFor("7", HOST)).toEqual(["7/api.example.com"]);
    expect(g.keysFor("8", HOST)).toEqual([]);
    expect(g.keysFor("7", undefined)).toEqual([]);
    g.setLimits(new Map([[limitKey("7", HOST), limit], [limitKey("0", HOST), limit]]), 0);
    expect(g.keysFor("7", HOST)).toEqual(["7/api.example.com", "0/api.example.com"]);
    expect(g.keysFor("8", HOST)).toEqual(["0/api.example.com"]);
  });

  test("hostOf is the WHATWG host name, without the port", () => {
    expect(hostOf("https://API.Example.com:8443/x?y")).toBe("api.example.com");
    expect(hostOf("http://[::1]:80/")).toBe("[::1]");
    expect(hostOf("not a url")).toBeUndefined();
  });

  test("calls at once: within the lease's permits; the next waits and goes when one ends", async () => {
    const { g, first } = gate({ maxConcurrent: 2, maxPerSecond: null }, 0, { c: 2 });
    expect(await settled(first!)).toEqual({ go: true, at: 0 });
    expect(await settled(g.acquire([KEY], 1))).toEqual({ go: true, at: 1 });
    const third = g.acquire([KEY], 2);
    expect(await settled(third)).toBe("pending");
    expect(g.waiting).toBe(1);
    g.release([KEY], 50, 60);
    expect(await settled(third)).toEqual({ go: true, at: 60 });
  });

  test("no lease yet: jobs wait for it, none is deferred on a guess; past waitMs they are deferred", async () => {
    const { g } = gate({ maxConcurrent: 2, maxPerSecond: null });
    const waits = Array.from({ length: 5 }, () => g.acquire([KEY], 0));
    for (const w of waits) expect(await settled(w)).toBe("pending");
    expect(g.unleased([KEY])).toBe(true);
    g.setLease(KEY, "c", 2, 10_000, 100);
    expect(await settled(waits[0]!)).toEqual({ go: true, at: 100 });
    expect(await settled(waits[1]!)).toEqual({ go: true, at: 100 });
    expect(await settled(waits[2]!)).toBe("pending");
    g.tick(600);
    for (const w of waits.slice(2)) expect(((await settled(w)) as GateAnswer).go).toBe(false);
  });

  test("a lease that ran out lends nothing", async () => {
    const { g, first } = gate({ maxConcurrent: 5, maxPerSecond: null }, 0, { c: 5 });
    await first;
    g.setLease(KEY, "c", 5, 1_000, 0);
    expect(await settled(g.acquire([KEY], 999))).toEqual({ go: true, at: 999 });
    expect(await settled(g.acquire([KEY], 1_000))).toBe("pending");
  });

  test("calls per second: spread evenly over the second, never more than the permits in any second; a backlog is deferred at the limit's pace", async () => {
    const { g, first } = gate({ maxConcurrent: null, maxPerSecond: 4 }, 0, { r: 4 });
    expect(await first).toEqual({ go: true, at: 0 });
    // 4 permits x 500 ms = 2 may wait here; the rest are deferred, their calendar 250 ms a step (1 s / 4).
    const waiting = [g.acquire([KEY], 10), g.acquire([KEY], 10)];
    const deferred = await Promise.all([g.acquire([KEY], 10), g.acquire([KEY], 10), g.acquire([KEY], 10)]);
    const later: GateAnswer = { go: false, calendar: [{ key: KEY, stepMs: 250 }] };
    expect(deferred).toEqual([later, later, later]);
    // The waiting ones go at their even places (250 ms apart, up to 50 ms early), on the ticks.
    for (let t = 25; t <= 600; t += 25) g.tick(t);
    expect(await Promise.all(waiting)).toEqual([{ go: true, at: 200 }, { go: true, at: 450 }]);
    // A steady stream, one job every 100 ms: never more than 4 start within any second.
    const answers: Promise<GateAnswer>[] = [];
    for (let t = 600; t < 6_000; t += 25) {
      if (t % 100 === 0 && t < 5_000) answers.push(Promise.resolve(g.acquire([KEY], t)));
      g.tick(t);
    }
    const starts = [0, 200, 450, ...(await Promise.all(answers)).flatMap((a) => (a.go ? [a.at] : []))];
    for (const s of starts) expect(starts.filter((x) => x >= s && x < s + 1_000).length).toBeLessThanOrEqual(4);
    expect(starts.length).toBeGreaterThan(15);
  });

  test("a start counts from when the call starts, so calls held up cannot bunch with the next second's", async () => {
    const { g, first } = gate({ maxConcurrent: null, maxPerSecond: 1 }, 0, { r: 1 });
    expect(await first).toEqual({ go: true, at: 0 });
    g.started([KEY], 0, 800); // its slot and claim took 800 ms
    const next = g.acquire([KEY], 1_000);
    g.tick(1_000);
    expect(await settled(next)).toBe("pending");
    g.tick(1_800);
    expect(await settled(next)).toEqual({ go: true, at: 1_800 });
  });

  test("a call given back frees its permit at once", async () => {
    const { g, first } = gate({ maxConcurrent: 1, maxPerSecond: 1 }, 0, { c: 1, r: 1 });
    const a = await first!;
    const next = g.acquire([KEY], 5);
    expect(await settled(next)).toBe("pending");
    g.giveBack([KEY], (a as { at: number }).at, 10);
    expect(await settled(next)).toEqual({ go: true, at: 10 });
  });

  test("while a renewal is out, calls stay within what it reports in use; when contended that is the share, or what runs", async () => {
    const { g, first } = gate({ maxConcurrent: 10, maxPerSecond: null }, 0, { c: 10 });
    await first;
    for (let i = 0; i < 5; i++) await g.acquire([KEY], 1);
    // Another executor wants more: the answer says so, with an equal share of 5.
    g.setLease(KEY, "c", 10, 60_000, 2, 5, true);
    expect(await settled(g.acquire([KEY], 3))).toEqual({ go: true, at: 3 }); // 7 running
    const [d] = g.demand(4);
    expect(d!.inUse).toBe(7); // max(share 5, 7 running): the lease cannot shrink below what runs
    expect(await settled(g.acquire([KEY], 5))).toBe("pending"); // held to 7 until the answer
    g.release([KEY], 10, 6);
    g.release([KEY], 10, 6);
    g.setLease(KEY, "c", 7, 60_000, 7, 5, true); // the answer: 7, as reported
    // 6 running after the release and the waiting one's start: the next renewal reports 6, and so on down to the share.
    expect(g.demand(8)[0]!.inUse).toBe(6);
    g.renewalEnded(9);
  });

  test("demand: in use and wanted per bound, for the lease", async () => {
    const { g, first } = gate({ maxConcurrent: 3, maxPerSecond: 10 }, 0, { c: 1, r: 10 });
    await first;
    void g.acquire([KEY], 1);
    void g.acquire([KEY], 1);
    expect(g.demand(2)).toEqual([
      { key: KEY, bound: "c", limit: 3, inUse: 1, want: 3 },
      // While the renewal is out, up to the whole lease may be in use: it reports that.
      { key: KEY, bound: "r", limit: 10, inUse: 10, want: 3 },
    ]);
  });
});
