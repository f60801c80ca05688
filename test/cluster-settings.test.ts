/**
 * The settings that decide where jobs live are the cluster's (src/db/cluster-settings.ts): the
 * first process stores them, a later one that disagrees refuses to start (exit 2, naming them)
 * instead of looking for jobs where they are not.
 */
import { afterAll, expect, setDefaultTimeout, test } from "bun:test";
import { connect } from "../src/db/databases.ts";
import { checkClusterSettings } from "../src/db/cluster-settings.ts";
import { freshDatabases } from "./support/env.ts";
import { slice, type Slice } from "./support/procs.ts";

setDefaultTimeout(60_000);

const slices: Slice[] = [];
afterAll(async () => {
  for (const s of slices) await s.close();
});

test("stored by the first, checked by every later one", async () => {
  const fresh = await freshDatabases(1);
  const sql = connect(fresh.urls[0]!, 1);
  try {
    const mine = { shard_count: "16", databases: "a,b", kafka_partitions: "12" };
    expect(await checkClusterSettings(sql, mine)).toEqual([]);
    expect(await checkClusterSettings(sql, mine)).toEqual([]);
    expect(await checkClusterSettings(sql, { ...mine, shard_count: "32", databases: "a,b,c" })).toEqual([
      "databases: this process has a,b,c, the cluster a,b",
      "shard_count: this process has 32, the cluster 16",
    ]);
  } finally {
    await sql.end();
    await fresh.drop();
  }
});

test("a process with another SHARD_COUNT or KAFKA_PARTITIONS than the cluster refuses to start (exit 2), naming the setting", async () => {
  const s = await slice({ env: { SHARD_COUNT: "8", LOG_LEVEL: "warn" } });
  slices.push(s);
  await s.start("api");
  for (const [extra, named] of [[{ SHARD_COUNT: "4" }, "shard_count: this process has 4, the cluster 8"], [{ KAFKA_PARTITIONS: "6" }, "kafka_partitions: this process has 6, the cluster 4"]] as const) {
    const proc = Bun.spawn(["bun", "src/main.ts", "scheduler"], {
      env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/root", ...s.env, ...extra, PORT: "0" },
      stderr: "pipe",
      stdout: "pipe",
    });
    expect(await proc.exited).toBe(2);
    expect(await new Response(proc.stderr).text()).toContain(named);
  }
  // The cluster's own settings still start.
  await s.start("scheduler");
});
