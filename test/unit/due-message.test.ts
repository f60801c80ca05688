import { expect, test } from "bun:test";
import { decodeDue, encodeDue, MAX_JOBS_PER_MESSAGE, type DueEntry } from "../../src/due-message.ts";

const entry = (i: number): DueEntry => ({ id: String(1000 + i), shard: i % 16, user_id: "7", attempt: 1, due_at: "2030-01-01T00:00:00.000Z", epoch: "3", trace: { traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" } });

test("jobs travel up to MAX_JOBS_PER_MESSAGE per message, keyed by the first id, and decode back in order", () => {
  const entries = Array.from({ length: 250 }, (_, i) => entry(i));
  const msgs = encodeDue(entries);
  expect(msgs.length).toBe(Math.ceil(250 / MAX_JOBS_PER_MESSAGE));
  expect(msgs.map((m) => [m.key, m.jobs])).toEqual([["1000", 100], ["1100", 100], ["1200", 50]]);
  expect(msgs.flatMap((m) => decodeDue(m.value)!)).toEqual(entries);
});

test("a bare entry is accepted; malformed messages are refused whole", () => {
  expect(decodeDue(JSON.stringify({ id: "5", shard: 1, attempt: 2 }))).toEqual([{ id: "5", shard: 1, attempt: 2 } as DueEntry]);
  for (const bad of ["", "nope", "{}", '{"jobs": []}', JSON.stringify({ jobs: [entry(1), { id: "x", shard: 1, attempt: 1 }] }), JSON.stringify({ id: "5", shard: -1, attempt: 1 }), JSON.stringify({ id: "5", shard: 1, attempt: 0 })]) {
    expect(decodeDue(bad)).toBeNull();
  }
});
