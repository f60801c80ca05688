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
 *
 * Users are served in a rotating order, so that a load capped by `maxRows` does not always serve
 * the same (lowest) user ids first: users with an id above `startAfterUser` first, ascending,
 * then from the lowest id up to `startAfterUser` (null: from the lowest). The rows come back in
 * that order (user by user, each in (due_at, id) order), so the next load should start after the
 * user of the last row (the shard actor does); past the highest user it wraps to the lowest.
 *
 * The cap stays cheap: the users are sorted (in memory, one row per user) before the per-user
 * reads, so the planner knows the join's output is ordered by user and sorts only within each
 * user (an incremental sort), stopping the per-user reads as soon as `maxRows` rows are out,
 * instead of reading every user's rows to sort them all.
 */
export async function loadDue(sql: Sql, input: LoadInput): Promise<Omit<LoadOutput, "rescuedAt">> {
  const startAfterUser = input.startAfterUser;
  const users = input.users;
  const horizon = new Date(input.horizon);
  const rows = await sql<{ kind: "r" | "n"; id: string | null; user_id: string | null; due_at: Date | null; priority: number | null; db_now: Date }[]>`
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
      SELECT u.user_id, k.lim, k.due_at, k.id,
        -- false: after startAfterUser (served first); true: wrapped around to the lowest ids.
        coalesce(u.user_id <= ${startAfterUser}::bigint, false) AS wrapped
      FROM u LEFT JOIN known k ON k.user_id = u.user_id WHERE u.user_id IS NOT NULL),
    due AS (
      SELECT d.id, d.user_id, d.due_at, d.priority FROM (SELECT * FROM per_user ORDER BY wrapped, user_id) p
      CROSS JOIN LATERAL (
        SELECT j.id, j.user_id, j.due_at, j.priority FROM jobs j
        WHERE j.shard_id = ${input.shard} AND j.user_id = p.user_id AND j.status IN ${sql.unsafe(inList(WAITING))}
          AND j.due_at <= ${horizon}
          AND (j.due_at, j.id) > (coalesce(p.due_at, '-infinity'), coalesce(p.id, -1))
        ORDER BY j.due_at, j.id LIMIT coalesce(p.lim, ${input.newUserLimit})) d
      ORDER BY p.wrapped, p.user_id, d.due_at, d.id
      LIMIT ${input.maxRows}),
    later AS (
      SELECT min(n.due_at) AS due_at FROM per_user p
      CROSS JOIN LATERAL (
        SELECT j.due_at FROM jobs j
        WHERE j.shard_id = ${input.shard} AND j.user_id = p.user_id AND j.status IN ${sql.unsafe(inList(WAITING))} AND j.due_at > ${horizon}
        ORDER BY j.due_at LIMIT 1) n)
    SELECT 'r' AS kind, id::text, user_id::text, due_at, priority, now() AS db_now FROM due
    UNION ALL
    SELECT 'n', NULL, NULL, due_at, NULL, now() FROM later`;
  const jobs: FairItem[] = [];
  let nextDue: number | null = null;
  for (const r of rows) {
    if (r.kind === "n") nextDue = r.due_at?.getTime() ?? null;
    else jobs.push({ id: BigInt(r.id!), userId: r.user_id!, shard: input.shard, dueAt: r.due_at!.getTime(), priority: r.priority! });
  }
  // `due`'s ORDER BY decides which rows are taken; the statement has no outer ORDER BY (sorting
  // the rows again cost more than the rest of the load), so the serving order is checked here,
  // in one pass, and restored if the rows came in another.
  const order = (a: FairItem, b: FairItem) =>
    serving(a.userId, startAfterUser) - serving(b.userId, startAfterUser) || compareIds(a.userId, b.userId) || a.dueAt - b.dueAt || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
  for (let i = 1; i < jobs.length; i++) {
    if (order(jobs[i - 1]!, jobs[i]!) > 0) {
      jobs.sort(order);
      break;
    }
  }
  return { jobs, nextDue, dbNow: rows[0]!.db_now.getTime() };
}

/** Ids as the database prints them (`id::text` of a positive bigint), compared as numbers. */
const compareIds = (a: string, b: string) => a.length - b.length || (a < b ? -1 : a > b ? 1 : 0);

/** 0: served first (id above `after`, or no `after`); 1: after the wrap. */
const serving = (userId: string, after: string | null) => (after !== null && compareIds(userId, after) <= 0 ? 1 : 0);
