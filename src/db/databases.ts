/**
 * The physical databases and the shard -> database routing. Users live in the first database;
 * each logical shard's jobs live in `databaseOf(shard)`. Ids (int8) come back as strings.
 */
import postgres from "postgres";
import { databaseOf } from "../shard-map.ts";
import { databaseName, withDatabase } from "./pg-url.ts";
import { DatabaseGate } from "./gate.ts";
import { TUNING } from "../config.ts";

export type Sql = postgres.Sql;

export interface Databases {
  all: Sql[];
  users: Sql;
  shardCount: number;
  forShard(shard: number): Sql;
  /** Index in `all` of the database holding a shard. */
  indexOf(shard: number): number;
  /** Which of them answer: the hot paths' statements go through it (src/db/gate.ts). */
  gate: DatabaseGate;
  close(): Promise<void>;
}

export function connect(url: string, max: number, applicationName = "fairshare"): Sql {
  return postgres(url, {
    max,
    idle_timeout: 30,
    connect_timeout: 10,
    onnotice: () => {},
    // Pooled statements are prepared once per connection; every query here is static text.
    prepare: true,
    // ...but always planned for their actual parameters. The batched statements pass arrays of
    // ids; a generic plan cannot see their length and, on tables of up to ~100k rows, chose a
    // sequential scan testing every row against the whole array: 175 ms per 1,000-row
    // outcome update instead of ~5 ms, which capped an executor at ~3,000 jobs/s.
    // application_name names the role in pg_stat_activity (which role holds which backend).
    connection: { plan_cache_mode: "force_custom_plan", application_name: applicationName },
  });
}

export function openDatabases(urls: string[], shardCount: number, poolMax: number, applicationName?: string): Databases {
  const all = urls.map((u) => connect(u, poolMax, applicationName));
  const gate = new DatabaseGate((i) => probeDatabase(urls[i]!), TUNING.db.probeEveryMs);
  return {
    gate,
    all,
    users: all[0]!,
    shardCount,
    forShard: (shard) => all[databaseOf(shard, shardCount, all.length)]!,
    indexOf: (shard) => databaseOf(shard, shardCount, all.length),
    close: async () => {
      gate.close();
      await Promise.all(all.map((s) => s.end({ timeout: 5 })));
    },
  };
}

/** Whether the database answers, on a connection of its own (src/db/gate.ts). */
export async function probeDatabase(url: string): Promise<void> {
  const one = postgres(url, { max: 1, connect_timeout: 2, idle_timeout: 1, onnotice: () => {}, connection: { application_name: "fairshare-probe" } });
  try {
    await one`SELECT 1`;
  } finally {
    await one.end({ timeout: 1 }).catch(() => {});
  }
}

/** Creates the database named in `url` when it does not exist (local mode, tests). */
export async function ensureDatabase(url: string): Promise<void> {
  const name = databaseName(url);
  if (!/^[A-Za-z0-9_]+$/.test(name)) throw new Error(`refusing to create database with unusual name ${JSON.stringify(name)}`);
  const admin = connect(withDatabase(url, "postgres"), 1);
  try {
    const [row] = await admin`SELECT 1 AS ok FROM pg_database WHERE datname = ${name}`;
    if (!row) {
      try {
        await admin.unsafe(`CREATE DATABASE "${name}"`);
      } catch (e) {
        // 42P04 duplicate_database: another process created it first.
        if ((e as { code?: string }).code !== "42P04") throw e;
      }
    }
  } finally {
    await admin.end({ timeout: 5 });
  }
  // Through a multi-host URL the first host may be a standby that has the creation on disk but
  // not yet replayed: it answers 3D000 (no such database), and postgres.js does not go on to
  // the next host after an error at start-up. Wait until the new database answers.
  for (let tries = 0; ; tries++) {
    const probe = connect(url, 1);
    try {
      await probe`SELECT 1`;
      return;
    } catch (e) {
      if ((e as { code?: string }).code !== "3D000" || tries >= 100) throw e;
      await Bun.sleep(100);
    } finally {
      await probe.end({ timeout: 5 });
    }
  }
}

/** SQLSTATEs of a statement that was rolled back whole and may simply run again. */
const ROLLED_BACK = new Set(["40P01", "40001"]); // deadlock detected, serialization failure

/**
 * Runs `fn` again (up to `tries` times, with a short jittered pause) when PostgreSQL rolled it
 * back for a deadlock or a serialization failure: the statement had no effect, and every
 * statement retried this way is guarded, so running it again is safe. Other errors pass through.
 */
export async function retryRolledBack<T>(fn: () => Promise<T>, tries = 5): Promise<T> {
  for (let i = 1; ; i++) {
    try {
      return await fn();
    } catch (e) {
      if (i >= tries || !ROLLED_BACK.has((e as { code?: string }).code ?? "")) throw e;
      await Bun.sleep(5 * i + Math.random() * 10);
    }
  }
}

/** Driver codes of a connection that could not be made or was lost (postgres.js), and the gate's for a database out (src/db/gate.ts). */
const CONNECTION_CODES = new Set(["DATABASE_OUT", "ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EPIPE", "CONNECT_TIMEOUT", "CONNECTION_CLOSED", "CONNECTION_ENDED", "CONNECTION_DESTROYED"]);

/**
 * True when an error means the database is unreachable or refusing work for now (down,
 * restarting, shutting down, out of connections, not accepting connections), not that the
 * statement was wrong: the caller may try again later. Any FATAL or PANIC from the server (the
 * session is over: e.g. "database is not accepting connections" at start-up), SQLSTATE classes
 * 08 (connection exception) and 57P (operator intervention), 53300 (too many connections) and
 * 25006 (a write reached a server in recovery: a primary demoted under a failover, `DB_HA=1`).
 */
export function isUnavailable(e: unknown): boolean {
  const err = e as { code?: unknown; severity?: unknown } | null;
  if (err?.severity === "FATAL" || err?.severity === "PANIC") return true;
  const code = err?.code;
  if (typeof code !== "string") return false;
  return CONNECTION_CODES.has(code) || code.startsWith("08") || code.startsWith("57P") || code === "53300" || code === "25006";
}
