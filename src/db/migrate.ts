/**
 * Forward-only migration runner. Files `sql/NNNNNN_name.sql` are applied in order, each once,
 * inside one transaction that first takes a transaction-scoped advisory lock: when several
 * processes start at once, one migrates and the others wait, then find nothing left to do.
 */
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { Sql } from "./databases.ts";

export const SQL_DIR = join(import.meta.dir, "..", "..", "sql");
const MIGRATION_LOCK = 0x66_61_69_72; // "fair"

export interface Migration {
  version: number;
  name: string;
  text: string;
}

export function readMigrations(dir = SQL_DIR): Migration[] {
  const out: Migration[] = [];
  for (const file of readdirSync(dir).sort()) {
    const m = /^(\d{6})_([a-z0-9_]+)\.sql$/.exec(file);
    if (!m) continue;
    out.push({ version: Number(m[1]), name: m[2]!, text: readFileSync(join(dir, file), "utf8") });
  }
  out.forEach((mig, i) => {
    if (mig.version !== i + 1) throw new Error(`migration numbers must run 1, 2, 3...; found ${mig.version} at position ${i + 1}`);
  });
  return out;
}

export class SchemaTooNewError extends Error {
  constructor(
    readonly databaseVersion: number,
    readonly codeVersion: number,
  ) {
    super(`the database's schema is at migration ${databaseVersion}, newer than this code's ${codeVersion}: run the newer release`);
    this.name = "SchemaTooNewError";
  }
}

/** Applies pending migrations; returns the versions this call applied. Refuses a database migrated by newer code. */
export async function migrate(sql: Sql, migrations = readMigrations()): Promise<number[]> {
  return sql.begin(async (tx) => {
    await tx`SELECT pg_advisory_xact_lock(${MIGRATION_LOCK})`;
    await tx`CREATE TABLE IF NOT EXISTS schema_migrations (
      version    integer PRIMARY KEY,
      name       text NOT NULL,
      applied_at timestamptz NOT NULL DEFAULT now())`;
    const rows = await tx<{ version: number }[]>`SELECT version FROM schema_migrations`;
    const done = new Set(rows.map((r) => r.version));
    // A database migrated by newer code has tables and columns this code does not know how to
    // keep consistent (an older process would write rows a newer trigger or reader misreads).
    const newest = Math.max(0, ...done);
    const known = migrations.length > 0 ? migrations[migrations.length - 1]!.version : 0;
    if (newest > known) throw new SchemaTooNewError(newest, known);
    const applied: number[] = [];
    for (const m of migrations) {
      if (done.has(m.version)) continue;
      await tx.unsafe(m.text);
      await tx`INSERT INTO schema_migrations (version, name) VALUES (${m.version}, ${m.name})`;
      applied.push(m.version);
    }
    return applied;
  });
}
