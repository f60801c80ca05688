/**
 * A shard database primary dies under load and nothing acknowledged is lost: runs
 * bench/failover.ts in its short form (both shard databases under Patroni, a primary and a
 * synchronous standby each; kill -9 of cluster 0's primary mid-load) and checks its figures.
 * The program prints the timings; this test asserts only what must hold whatever the machine's
 * speed.
 */
import { expect, test } from "bun:test";
import { requireService } from "./support/env.ts";

test("kill -9 of a database primary under load: every acknowledged job is on the promoted standby and runs once per attempt; the API answers only 201 or 503 + Retry-After; the old primary rejoins as the synchronous standby and refuses writes", async () => {
  await requireService("etcd");
  const run = Bun.spawn(["bun", "bench/failover.ts"], {
    cwd: new URL("..", import.meta.url).pathname,
    env: { ...process.env, DURATION: "20", KILL_AT: "6", CLIENTS: "4", KILL: "postgres" },
    stdout: "pipe",
    stderr: "inherit",
  });
  const out = await new Response(run.stdout).text();
  console.log(out);
  const line = out.split("\n").find((l) => l.startsWith("JSON "));
  expect(line).toBeDefined();
  const f = JSON.parse(line!.slice(5));
  expect(f.acknowledged).toBeGreaterThan(0);
  expect({
    missing: f.missing,
    not_succeeded: f.not_succeeded,
    duplicates: f.duplicate_calls_per_job_attempt,
    never_called: f.acknowledged_never_called,
    refuses_writes: f.old_primary_refuses_writes,
  }).toEqual({ missing: 0, not_succeeded: 0, duplicates: 0, never_called: 0, refuses_writes: true });
  expect(Object.keys(f.api_answers).filter((c) => c !== "201" && c !== "503 + Retry-After")).toEqual([]);
  expect(f.new_primary).not.toBe(f.old_primary);
  expect(Number.isFinite(f.old_primary_sync_standby_after_s)).toBe(true);
  expect(await run.exited).toBe(0);
}, 400_000);
