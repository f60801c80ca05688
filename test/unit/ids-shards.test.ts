import { describe, expect, test } from "bun:test";
import { ID_EPOCH_MS, IdGenerator, idTimestamp, parseId } from "../../src/ids.ts";
import { databaseOf, shardOf, shardsOfDatabase } from "../../src/shard-map.ts";

describe("ids", () => {
  test("strictly increasing within a generator, even when the clock steps back", () => {
    let now = Date.UTC(2026, 0, 1);
    const gen = new IdGenerator(5, () => now);
    const ids: bigint[] = [];
    for (let i = 0; i < 3000; i++) {
      if (i === 1500) now -= 10_000;
      ids.push(gen.next());
    }
    for (let i = 1; i < ids.length; i++) expect(ids[i]! > ids[i - 1]!).toBe(true);
  });

  test("sequence overflow borrows the next millisecond instead of repeating", () => {
    const gen = new IdGenerator(1, () => Date.UTC(2026, 0, 1));
    const ids = new Set(Array.from({ length: 5000 }, () => gen.next()));
    expect(ids.size).toBe(5000);
  });

  test("different nodes never collide at the same instant", () => {
    const t = () => Date.UTC(2026, 5, 1);
    const a = new IdGenerator(1, t);
    const b = new IdGenerator(2, t);
    const all = new Set<bigint>();
    for (let i = 0; i < 2000; i++) {
      all.add(a.next());
      all.add(b.next());
    }
    expect(all.size).toBe(4000);
  });

  test("time-ordered and above 2^53", () => {
    const at = Date.UTC(2026, 11, 1, 12);
    const id = new IdGenerator(4095, () => at).next();
    expect(idTimestamp(id)).toBe(at);
    expect(id > 2n ** 53n).toBe(true);
    expect(() => new IdGenerator(4096)).toThrow();
    expect(ID_EPOCH_MS).toBe(Date.UTC(2024, 0, 1));
  });

  test("parseId accepts positive int64 decimal strings only", () => {
    expect(parseId("123")).toBe(123n);
    expect(parseId("9223372036854775807")).toBe(9223372036854775807n);
    expect(parseId(42)).toBe(42n);
    for (const bad of ["0", "-1", "01", "1e3", "9223372036854775808", "", " 1", "abc", 1.5, null, {}]) expect(parseId(bad)).toBeNull();
  });
});

describe("shard map", () => {
  test("ids spread evenly over shards even when generated in one burst", () => {
    const gen = new IdGenerator(3, () => Date.UTC(2026, 0, 1));
    const counts = new Array(16).fill(0);
    for (let i = 0; i < 16_000; i++) counts[shardOf(gen.next(), 16)]++;
    for (const c of counts) expect(c).toBeWithin(800, 1200);
  });

  test("shards map onto databases in contiguous, balanced ranges", () => {
    expect(Array.from({ length: 8 }, (_, s) => databaseOf(s, 8, 2))).toEqual([0, 0, 0, 0, 1, 1, 1, 1]);
    expect(Array.from({ length: 5 }, (_, s) => databaseOf(s, 5, 3))).toEqual([0, 0, 1, 1, 2]);
    expect(shardsOfDatabase(1, 8, 2)).toEqual([4, 5, 6, 7]);
    expect(Array.from({ length: 16 }, (_, s) => databaseOf(s, 16, 1)).every((d) => d === 0)).toBe(true);
    expect(() => databaseOf(16, 16, 2)).toThrow();
  });

  test("the mapping is stable (changing it would re-home existing jobs)", () => {
    expect([1n, 2n, 3n, 123456789012345678n].map((id) => shardOf(id, 1024))).toMatchSnapshot();
  });
});
