/**
 * Prepares the backing services for the configured cluster: creates each database in
 * DATABASE_URLS when missing, applies migrations to all of them and creates the Kafka topics.
 * Idempotent; run by ops/services-up.sh.
 */
import { loadConfig } from "../src/config.ts";
import { connect, ensureDatabase } from "../src/db/databases.ts";
import { migrate } from "../src/db/migrate.ts";
import { databaseName } from "../src/db/pg-url.ts";
import { KafkaBus } from "../src/kafka.ts";

const config = loadConfig();
for (const url of config.databaseUrls) {
  await ensureDatabase(url);
  const sql = connect(url, 1);
  const applied = await migrate(sql);
  await sql.end();
  console.error(`[ops] database ${databaseName(url)}: ${applied.length ? `applied ${applied.join(", ")}` : "up to date"}`);
}
// The broker may still be electing its controller right after start; kafkajs retries.
await new KafkaBus(config.kafka).ensureTopics();
console.error(`[ops] kafka topics: ${config.kafka.topicDue}, ${config.kafka.topicDlq}`);
