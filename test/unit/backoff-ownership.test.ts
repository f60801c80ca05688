import { describe, expect, test } from "bun:test";
import { backoffDelay } from "../../actors/backoff.ts";
import { planOwnership, quotaOf } from "../../src/scheduler/ownership-plan.ts";

describe("backoff", () => {
  const p = { baseMs: 1000, maxMs: 60_000 };
  test("exponential with equal jitter, capped", () => {
    expect(backoffDelay(1, p, () => 0)).toBe(500);
    expect(backoffDelay(1, p, () => 1)).toBe(1000);
    expect(backoffDelay(3, p, () => 0)).toBe(2000);
    expect(backoffDelay(3, p, () => 1)).toBe(4000);
    expect(backoffDelay(30, p, () => 1)).toBe(60_000);
    expect(backoffDelay(1000, p, () => 0.5)).toBe(45_000);
  });
  test("never below half the nominal delay", () => {
    for (let a = 1; a < 12; a++) {
      const nominal = Math.min(60_000, 1000 * 2 ** (a - 1));
      for (let i = 0; i < 50; i++) expect(backoffDelay(a, p)).toBeWithin(nominal / 2, nominal + 1);
    }
  });
});

describe("shard ownership plan", () => {
  test("quotas add up to the shard count and differ by at most one", () => {
    for (const m of [1, 2, 3, 5, 7, 16, 20]) {
      const members = Array.from({ length: m }, (_, i) => `m${i}`);
      const qs = members.map((me) => quotaOf(me, members, 16));
      expect(qs.reduce((a, b) => a + b, 0)).toBe(16);
      expect(Math.max(...qs) - Math.min(...qs)).toBeLessThanOrEqual(1);
    }
  });

  /** Simulates members re-planning in turns with create-if-absent claims, as etcd enforces. */
  function converge(members: string[], owners: Map<number, string>, shardCount = 16) {
    for (let round = 0; round < 20; round++) {
      let changed = false;
      for (const me of members) {
        const plan = planOwnership({ me, members, shardCount, owners });
        for (const s of plan.release) if (owners.get(s) === me) (owners.delete(s), (changed = true));
        for (const s of plan.claim) if (!owners.has(s)) (owners.set(s, me), (changed = true));
      }
      if (!changed) break;
    }
    return owners;
  }

  test("two and three members split 16 shards evenly, each shard owned once", () => {
    for (const members of [["a", "b"], ["a", "b", "c"]]) {
      const owners = converge(members, new Map());
      expect(owners.size).toBe(16);
      const counts = members.map((m) => [...owners.values()].filter((o) => o === m).length);
      expect(Math.max(...counts) - Math.min(...counts)).toBeLessThanOrEqual(1);
    }
  });

  test("a joining member gets its share as others release surplus", () => {
    const owners = converge(["a"], new Map());
    expect(owners.size).toBe(16);
    converge(["a", "b"], owners);
    expect([...owners.values()].filter((o) => o === "b").length).toBe(8);
  });

  test("a dead member's shards are not claimed while its keys exist, then are after they expire", () => {
    const owners = converge(["a", "b"], new Map());
    // b died: it left the member list, but its shard keys live until its lease expires.
    const plan = planOwnership({ me: "a", members: ["a"], shardCount: 16, owners });
    expect(plan.claim).toEqual([]);
    for (const [s, o] of owners) if (o === "b") owners.delete(s);
    converge(["a"], owners);
    expect([...owners.values()].every((o) => o === "a")).toBe(true);
    expect(owners.size).toBe(16);
  });
});
