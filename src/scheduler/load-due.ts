/**
 * The scheduler's one read of a shard: the waiting jobs it loads into the fair queue. (Its
 * status changes, mark, revert, take back and rescue, are in src/jobs/transitions.ts.)
 */
import { inList, WAITING } from "../jobs/lifecycle.ts";
import type { FairItem } from "../../actors/fair-queue.ts";
import type { LoadInput, LoadOutput } from "../../actors/shard.machine.ts";
import type { Sql } from "../db/databases.ts";

/**
 * Waiting jobs of a shard due by the horizon: for each user with waiting jobs (a skip-scan over
 * the due index), up to its limit, after its cursor (a range on the same index), in (due_at, id)
 * order; `maxRows` in all. Also returns the earliest due time beyond the horizon (one index probe
 * per user), which tells the shard actor when to load next, and the database's clock, which
 * decides the cursors.
 */
export async function loadDue(sql: Sql, input: LoadInput): Promise<Omit<LoadOutput, "rescuedAt">> {
  const users = input.users;
  const horizon = new Date(input.horizon);
  const rows = await sql<{ kind: "r" | "n"; id: string | null; user_id: string | null; due_at: Date | null; db_now: Date }[]>`
    WITH RECURSIVE u(user_id) AS (
      (SELECT user_id FROM jobs WHERE shard_id = ${input.shard} AND status IN ${sql.unsafe(inList(WAITING))}
       ORDER BY user_id LIMIT 1)
      UNION ALL
      SELECT (SELECT j.user_id FROM jobs j
              WHERE j.shard_id = ${input.shard} AND j.status IN ${sql.unsafe(inList(WAITING))} AND j.user_id > u.user_id
              ORDER BY j.user_id LIMIT 1)
      FROM u WHERE u.user_id IS NOT NULL),
    known AS (
      SELECT * FROM unnest(${users.map((u) => u.userId)}::bigint[], ${users.map((u) => u.limit)}::int[],
        ${users.map((u) => (u.after ? new Date(u.after.dueAt).toISOString() : null))}::timestamptz[],
        ${users.map((u) => u.after?.id.toString() ?? null)}::bigint[]) AS k(user_id, lim, due_at, id)),
    per_user AS (
      SELECT u.user_id, k.lim, k.due_at, k.id FROM u LEFT JOIN known k ON k.user_id = u.user_id WHERE u.user_id IS NOT NULL),
    due AS (
      SELECT d.id, d.user_id, d.due_at FROM per_user p
      CROSS JOIN LATERAL (
        SELECT j.id, j.user_id, j.due_at FROM jobs j
        WHERE j.shard_id = ${input.shard} AND j.user_id = p.user_id AND j.status IN ${sql.unsafe(inList(WAITING))}
          AND j.due_at <= ${horizon}
          AND (j.due_at, j.id) > (coalesce(p.due_at, '-infinity'), coalesce(p.id, -1))
        ORDER BY j.due_at, j.id LIMIT coalesce(p.lim, ${input.newUserLimit})) d
      LIMIT ${input.maxRows}),
    later AS (
      SELECT min(n.due_at) AS due_at FROM per_user p
      CROSS JOIN LATERAL (
        SELECT j.due_at FROM jobs j
        WHERE j.shard_id = ${input.shard} AND j.user_id = p.user_id AND j.status IN ${sql.unsafe(inList(WAITING))} AND j.due_at > ${horizon}
        ORDER BY j.due_at LIMIT 1) n)
    SELECT 'r' AS kind, id::text, user_id::text, due_at, now() AS db_now FROM due
    UNION ALL
    SELECT 'n', NULL, NULL, due_at, now() FROM later`;
  const jobs: FairItem[] = [];
  let nextDue: number | null = null;
  for (const r of rows) {
    if (r.kind === "n") nextDue = r.due_at?.getTime() ?? null;
    else jobs.push({ id: BigInt(r.id!), userId: r.user_id!, shard: input.shard, dueAt: r.due_at!.getTime() });
  }
  return { jobs, nextDue, dbNow: rows[0]!.db_now.getTime() };
}
