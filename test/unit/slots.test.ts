import { describe, expect, test } from "bun:test";
import { FairSlots } from "../../actors/slots.ts";

const settle = () => new Promise((r) => setTimeout(r, 0));

/** Acquires n slots for a user, counting the grants as they come. */
function want(slots: FairSlots, user: string, n: number, got: Map<string, number>, weight = 1, now = 0) {
  const all: Promise<boolean>[] = [];
  for (let i = 0; i < n; i++) {
    all.push(
      slots.acquire(user, weight, now).then((ok) => {
        if (ok) got.set(user, (got.get(user) ?? 0) + 1);
        return ok;
      }),
    );
  }
  return all;
}

describe("FairSlots", () => {
  test("one user alone takes all but the newcomer's guard", async () => {
    const s = new FairSlots({ capacity: 1000, reserve: 5, activeMs: 10_000 });
    const got = new Map<string, number>();
    want(s, "a", 2000, got);
    await settle();
    expect(got.get("a")).toBe(995);
    expect(s.waiting).toBe(1005);
  });

  test("in a small pool the guards vanish: slots follow the weights", async () => {
    const s = new FairSlots({ capacity: 8, reserve: 40, activeMs: 10_000 });
    const got = new Map<string, number>();
    want(s, "a", 100, got, 4);
    want(s, "b", 100, got, 1);
    await settle();
    // a took all 8 first (alone, no newcomer guard in 8 slots); as they end, b gets its fifth.
    for (let i = 0; i < 8; i++) s.release("a", 1);
    await settle();
    expect(s.heldBy("a") + s.heldBy("b")).toBe(8);
    expect(s.heldBy("b")).toBeLessThanOrEqual(2);
    expect(s.heldBy("a")).toBeGreaterThanOrEqual(6);
  });

  test("a newcomer starts at once while another user holds the pool, and keeps its guard", async () => {
    const s = new FairSlots({ capacity: 1000, reserve: 5, activeMs: 10_000 });
    const got = new Map<string, number>();
    want(s, "a", 2000, got);
    want(s, "b", 3, got);
    await settle();
    expect(got.get("b")).toBe(3);
    // a's jobs end one by one: a may not eat b's guard (nor a newcomer's).
    for (let i = 0; i < 50; i++) s.release("a", 1);
    await settle();
    expect(s.heldBy("a")).toBeLessThanOrEqual(1000 - 3 - 2 - 5);
    for (let i = 0; i < 3; i++) s.release("b", 1);
    await settle();
    expect(s.heldBy("b")).toBe(0);
    // b is still active: its guard stays free for it.
    expect(1000 - s.inUse).toBeGreaterThanOrEqual(10);
    const later = new Map<string, number>();
    want(s, "b", 5, later, 1, 2);
    await settle();
    expect(later.get("b")).toBe(5);
  });

  test("contended slots split by weight, not by starts", async () => {
    const s = new FairSlots({ capacity: 30, reserve: 0, activeMs: 10_000 });
    const got = new Map<string, number>();
    // Enough of each that neither runs out: a's jobs take 10 ticks, b's 1.
    want(s, "a", 1_000, got, 1);
    want(s, "b", 10_000, got, 2);
    await settle();
    const ends: { at: number; user: string }[] = [];
    const held = () => ({ a: s.heldBy("a"), b: s.heldBy("b") });
    let seen = { a: s.heldBy("a"), b: s.heldBy("b") };
    for (const [u, n] of Object.entries(seen)) for (let i = 0; i < n; i++) ends.push({ at: u === "a" ? 10 : 1, user: u });
    const occupancy = { a: 0, b: 0 };
    for (let now = 1; now <= 200; now++) {
      const due = ends.filter((e) => e.at === now);
      for (const e of due) ends.splice(ends.indexOf(e), 1);
      const before = held();
      for (const e of due) s.release(e.user, now);
      await settle();
      const after = held();
      // New grants: held went up beyond what was released.
      const released = { a: due.filter((e) => e.user === "a").length, b: due.filter((e) => e.user === "b").length };
      for (const u of ["a", "b"] as const) {
        const granted = after[u] - (before[u] - released[u]);
        for (let i = 0; i < granted; i++) ends.push({ at: now + (u === "a" ? 10 : 1), user: u });
      }
      if (now > 50) {
        occupancy.a += after.a;
        occupancy.b += after.b;
      }
      seen = after;
    }
    const shareB = occupancy.b / (occupancy.a + occupancy.b);
    expect(shareB).toBeGreaterThan(0.6);
    expect(shareB).toBeLessThan(0.73);
  });

  test("noisy: a user above its weighted share while another waits; nobody while the pool is only lent", async () => {
    const s = new FairSlots({ capacity: 100, reserve: 5, activeMs: 10_000 });
    const got = new Map<string, number>();
    want(s, "a", 200, got);
    await settle();
    // a holds 95 of 100 alone: lent, not taken from anyone.
    expect(s.noisy()).toEqual([]);
    want(s, "b", 50, got);
    await settle();
    // b got its guard and waits for more; a holds more than half.
    expect(s.heldBy("b")).toBeGreaterThan(0);
    expect(s.noisy()).toEqual([{ user: "a", held: s.heldBy("a"), share: 50 }]);
  });

  test("close refuses the waiting jobs", async () => {
    const s = new FairSlots({ capacity: 1, reserve: 0, activeMs: 1_000 });
    expect(await s.acquire("a", 1, 0)).toBe(true);
    const waiting = s.acquire("a", 1, 0);
    s.close();
    expect(await waiting).toBe(false);
    expect(await s.acquire("b", 1, 0)).toBe(false);
  });

  test("idle users are forgotten and their guards freed", async () => {
    const s = new FairSlots({ capacity: 1000, reserve: 5, activeMs: 1_000 });
    const got = new Map<string, number>();
    await Promise.all(want(s, "b", 1, got));
    s.release("b", 0);
    want(s, "a", 2000, got, 1, 10);
    await settle();
    expect(got.get("a")).toBe(1000 - 5 - 5);
    s.release("a", 5_000); // b idle for 5 s: forgotten
    await settle();
    expect(s.activeUsers).toBe(1);
    expect(s.heldBy("a")).toBe(995);
  });
});

test("FairSlots under pressure: users above their guard share the limit, a quiet user still gets its guard", async () => {
  const s = new FairSlots({ capacity: 1000, reserve: 5, activeMs: 10_000 });
  const got = new Map<string, number>();
  want(s, "a", 2000, got);
  await settle();
  s.setLimit(100);
  for (let i = 0; i < 500; i++) s.release("a", 1);
  await settle();
  // a ended 500 and took none back: it holds 495, over the limit.
  expect(s.heldBy("a")).toBe(495);
  want(s, "b", 3, got);
  await settle();
  expect(got.get("b")).toBe(3);
  for (let i = 0; i < 495; i++) s.release("a", 1);
  await settle();
  expect(s.inUse).toBeLessThanOrEqual(100);
  s.setLimit(1000);
  await settle();
  expect(s.heldBy("a")).toBeGreaterThan(900);
});
