/**
 * Capped users' jobs dispatched and not finished (scheduled or running), counted across every
 * database: what their concurrency caps are checked against (actors/dispatcher.ts). Reads the
 * partial index of in-flight rows (sql/000012), so its cost follows the jobs in flight, not the
 * table.
 */
import type { Databases } from "../db/databases.ts";
import { IN_FLIGHT, inList } from "../jobs/lifecycle.ts";

/** Per user asked for, its jobs in flight cluster-wide (0 for a user with none). */
export async function countInFlight(dbs: Databases, userIds: string[]): Promise<Map<string, number>> {
  const out = new Map<string, number>(userIds.map((u) => [u, 0]));
  const counts = await Promise.all(
    dbs.all.map(
      (sql) => sql<{ user_id: string; n: number }[]>`
        SELECT user_id::text, count(*)::int AS n FROM jobs
        WHERE status IN ${sql.unsafe(inList(IN_FLIGHT))} AND user_id = ANY(${userIds}::bigint[])
        GROUP BY user_id`,
    ),
  );
  for (const rows of counts) for (const r of rows) out.set(r.user_id, out.get(r.user_id)! + r.n);
  return out;
}
