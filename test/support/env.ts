/**
 * Test support: fresh, migrated databases per test file on the real PostgreSQL, and the
 * addresses of the real Kafka and etcd started by ops/services-up.sh. A service that does not
 * answer fails the test with a message saying how to start it; nothing is skipped or mocked.
 */
import { randomBytes } from "node:crypto";
import { connect as tcp } from "node:net";
import { loadConfig, type Config } from "../../src/config.ts";
import { connect, ensureDatabase } from "../../src/db/databases.ts";
import { migrate } from "../../src/db/migrate.ts";
import { databaseName, withDatabase } from "../../src/db/pg-url.ts";

export const PG_BASE = process.env.TEST_PG_URL ?? "postgres://root@127.0.0.1:5432";
export const KAFKA = process.env.KAFKA_BROKERS ?? "127.0.0.1:9092";
export const ETCD = process.env.ETCD_ENDPOINTS ?? "http://127.0.0.1:2379";

function reachable(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = tcp({ host, port, timeout: 2_000 });
    s.once("connect", () => (s.destroy(), resolve(true)));
    s.once("error", () => resolve(false));
    s.once("timeout", () => (s.destroy(), resolve(false)));
  });
}

export async function requireService(name: "postgresql" | "kafka" | "etcd"): Promise<void> {
  const addr = name === "postgresql" ? new URL(PG_BASE).host || "127.0.0.1:5432" : name === "kafka" ? KAFKA.split(",")[0]! : new URL(ETCD.split(",")[0]!).host;
  const [host, port] = addr.split(":");
  if (!(await reachable(host!, Number(port ?? 5432)))) {
    throw new Error(`${name} is not reachable at ${addr}: start the services with 'bash ops/services-up.sh' (or run 'bash ops/test.sh')`);
  }
}

export const uniqueName = (prefix: string) => `${prefix}_${process.pid}_${randomBytes(4).toString("hex")}`;

/**
 * Creates `count` fresh databases, migrated unless told otherwise; `drop()` removes them. Database
 * i goes on `servers[i % servers.length]` (URLs whose database part is replaced; default the test
 * PostgreSQL), so a test can place them on Patroni clusters through their multi-host URLs.
 */
export async function freshDatabases(count: number, opts: { migrate?: boolean; servers?: string[] } = {}): Promise<{ urls: string[]; drop(): Promise<void> }> {
  const servers = opts.servers ?? [`${PG_BASE}/postgres`];
  if (!opts.servers) await requireService("postgresql");
  const base = uniqueName("fs_test");
  const urls = Array.from({ length: count }, (_, i) => withDatabase(servers[i % servers.length]!, `${base}_${i}`));
  for (const url of urls) {
    await ensureDatabase(url);
    if (opts.migrate === false) continue;
    const sql = connect(url, 1);
    await migrate(sql);
    await sql.end();
  }
  return {
    urls,
    drop: async () => {
      for (const url of urls) {
        const admin = connect(withDatabase(url, "postgres"), 1);
        await admin.unsafe(`DROP DATABASE IF EXISTS "${databaseName(url)}" WITH (FORCE)`).finally(() => admin.end());
      }
    },
  };
}

export function testConfig(env: Record<string, string>): Config {
  return loadConfig({
    APP_MODE: "local",
    KAFKA_BROKERS: KAFKA,
    ETCD_ENDPOINTS: ETCD,
    LOG_LEVEL: "warn",
    ...env,
  });
}

/** Slice settings for end-to-end tests that watch retries: four shards and backoffs short enough to see a retry within a test. */
export const QUICK_RETRY_ENV = { SHARD_COUNT: "4", RETRY_BACKOFF_BASE: "200ms", RETRY_BACKOFF_MAX: "1s" } as const;

/**
 * Runs `during` while the database of `url` lets nobody in: new connections are refused and the
 * open ones whose application_name is LIKE `clients` (default: every role's) are cut.
 */
export async function withoutDatabase(url: string, during: () => Promise<unknown>, clients = "fairshare-%"): Promise<void> {
  const db = databaseName(url);
  const admin = connect(withDatabase(url, "postgres"), 1);
  await admin.unsafe(`ALTER DATABASE "${db}" ALLOW_CONNECTIONS false`);
  try {
    await admin`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = ${db} AND application_name LIKE ${clients}`;
    await during();
  } finally {
    await admin.unsafe(`ALTER DATABASE "${db}" ALLOW_CONNECTIONS true`);
    await admin.end();
  }
}
