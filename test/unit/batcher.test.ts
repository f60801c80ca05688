import { expect, test } from "bun:test";
import { Batcher } from "../../src/batcher.ts";

test("requests of one tick go in one call per key; each caller gets its own result", async () => {
  const calls: [string, number[]][] = [];
  const b = new Batcher<string, number, number>(async (key, items) => (calls.push([key, items]), items.map((x) => x * 10)));
  const got = await Promise.all([b.submit("a", 1), b.submit("b", 2), b.submit("a", 3)]);
  expect(got).toEqual([10, 20, 30]);
  expect(calls).toEqual([["a", [1, 3]], ["b", [2]]]);
});

test("serial: one call per key at a time; what comes meanwhile goes next, at most maxBatch a call", async () => {
  const calls: number[][] = [];
  let inFlight = 0;
  let most = 0;
  const b = new Batcher<string, number, number>(
    async (_, items) => {
      calls.push(items);
      most = Math.max(most, ++inFlight);
      await Bun.sleep(10);
      inFlight--;
      return items;
    },
    3,
    true,
  );
  const first = b.submit("k", 0);
  await Bun.sleep(1); // the first call is out
  const rest = Array.from({ length: 7 }, (_, i) => b.submit("k", i + 1));
  expect(await Promise.all([first, ...rest])).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
  expect(most).toBe(1);
  expect(calls).toEqual([[0], [1, 2, 3], [4, 5, 6], [7]]);
});
