/**
 * The settings every process must share (sql/000020): stored by the first process to start,
 * checked by every later one. SHARD_COUNT and the order of DATABASE_URLS decide which database
 * holds each job (src/shard-map.ts): a process that disagrees would look for jobs where they are
 * not (404s, jobs never run). KAFKA_PARTITIONS is the due topic's partition count the schedulers
 * spread messages over. A database is named by its database name (hosts and passwords may change).
 */
import type { Config } from "../config.ts";
import type { Sql } from "./databases.ts";
import { databaseName } from "./pg-url.ts";

/** The settings of this process, by name. */
export function clusterSettings(config: Pick<Config, "shardCount" | "databaseUrls"> & { kafka: Pick<Config["kafka"], "partitions"> }): Record<string, string> {
  return {
    shard_count: String(config.shardCount),
    databases: config.databaseUrls.map(databaseName).join(","),
    kafka_partitions: String(config.kafka.partitions),
  };
}

/**
 * Stores the settings not stored yet and returns one line per setting that differs from the
 * stored one (empty: this process agrees with the cluster).
 */
export async function checkClusterSettings(users: Sql, mine: Record<string, string>): Promise<string[]> {
  const names = Object.keys(mine);
  await users`
    INSERT INTO cluster_settings (name, value)
    SELECT * FROM unnest(${names}::text[], ${names.map((n) => mine[n]!)}::text[])
    ON CONFLICT (name) DO NOTHING`;
  const stored = await users<{ name: string; value: string }[]>`SELECT name, value FROM cluster_settings WHERE name = ANY(${names}::text[]) ORDER BY name`;
  return stored.filter((s) => s.value !== mine[s.name]).map((s) => `${s.name}: this process has ${mine[s.name]}, the cluster ${s.value}`);
}
