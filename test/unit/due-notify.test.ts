import { expect, test } from "bun:test";
import { duePayload, parseDuePayload } from "../../src/db/due-notify.ts";

test("a due notification carries each shard's earliest due time, and reads back", () => {
  const p = duePayload([{ shard: 3, dueAt: 2_000 }, { shard: 3, dueAt: 1_000 }, { shard: 7, dueAt: 5_000 }]);
  expect(p).toBe("3:1000,7:5000");
  expect(parseDuePayload(p)).toEqual([{ shard: 3, at: 1_000 }, { shard: 7, at: 5_000 }]);
});

test("too many shards for one notification: every shard, at the earliest time", () => {
  const many = Array.from({ length: 4_096 }, (_, s) => ({ shard: s, dueAt: 1_700_000_000_000 + s }));
  const p = duePayload(many);
  expect(p.length).toBeLessThan(8_000);
  expect(parseDuePayload(p)).toEqual([{ shard: null, at: 1_700_000_000_000 }]);
});

test("malformed parts are skipped", () => {
  expect(parseDuePayload("1:5,x:3,2:,:4,*:9")).toEqual([{ shard: 1, at: 5 }, { shard: null, at: 9 }]);
});
