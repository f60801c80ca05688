/**
 * The target limits and the executors' leases on them (sql/000016), through the users database.
 * The sizing is actors/target-limits.ts (leaseShare); this is its I/O.
 *
 * Invariant: the unexpired leases of a bound never hold more permits than its limit. Every change
 * of a key's leases is made under the key's transaction-scoped advisory lock, after reading the
 * other executors' unexpired leases in the same transaction. An executor uses its permits only
 * until `validUntil`, measured on its own clock from before the transaction began, a margin before
 * the database's expires_at; a lease it cannot renew runs out here before it does there.
 */
import type { Sql } from "../db/databases.ts";
import { leaseShare, limitKey, type Bound, type CalendarSlot, type TargetLimit } from "../../actors/target-limits.ts";

/** Every limit, by key (`<user id>/<host>`; user 0: every user's calls). */
export async function loadTargetLimits(sql: Sql): Promise<Map<string, TargetLimit>> {
  const rows = await sql<{ user_id: string; host: string; max_concurrent: number | null; max_per_second: number | null }[]>`
    SELECT user_id::text, host, max_concurrent, max_per_second FROM target_limits`;
  return new Map(rows.map((r) => [limitKey(r.user_id, r.host), { maxConcurrent: r.max_concurrent, maxPerSecond: r.max_per_second }]));
}

export interface LeaseDemand {
  key: string;
  bound: Bound;
  limit: number;
  inUse: number;
  want: number;
}

export interface Lease {
  key: string;
  bound: Bound;
  permits: number;
  /** Its equal share of the limit among the executors that want any, and whether one wants more than it holds (leaseShare). */
  fair: number;
  contended: boolean;

  /** Until when (this process's Date.now()) the permits may be used. */
  validUntil: number;
}

/**
 * Renews this executor's leases for the bounds in `demand` (one transaction) and gives up its
 * leases of any other key. Returns the new leases.
 */
export async function renewLeases(sql: Sql, member: string, demand: LeaseDemand[], ttlMs: number, marginMs: number): Promise<Lease[]> {
  const startedAt = Date.now();
  const keys = [...new Set(demand.map((d) => d.key))].sort();
  const leases = await sql.begin(async (tx) => {
    if (keys.length > 0) await tx`SELECT pg_advisory_xact_lock(hashtextextended('target:' || k, 0)) FROM (SELECT unnest(${keys}::text[]) AS k ORDER BY 1) s`;
    const others = await tx<{ key: string; bound: Bound; member: string; permits: number; want: number }[]>`
      SELECT key, bound, member, permits, want FROM target_leases
      WHERE key = ANY(${keys}::text[]) AND member <> ${member} AND expires_at > now()`;
    const out: Lease[] = demand.map((d) => {
      const theirs = others.filter((o) => o.key === d.key && o.bound === d.bound);
      return { key: d.key, bound: d.bound, ...leaseShare(d.limit, { member, inUse: d.inUse, want: d.want }, theirs), validUntil: startedAt + ttlMs - marginMs };
    });
    await tx`DELETE FROM target_leases WHERE member = ${member} AND NOT (key = ANY(${keys}::text[]))`;
    if (out.length > 0)
      await tx`
        INSERT INTO target_leases (key, bound, member, permits, want, expires_at)
        SELECT k, b, ${member}, p, w, now() + ${ttlMs} * interval '1 millisecond'
        FROM unnest(${out.map((l) => l.key)}::text[], ${out.map((l) => l.bound)}::text[], ${out.map((l) => l.permits)}::int[], ${demand.map((d) => d.want)}::int[]) AS l(k, b, p, w)
        ON CONFLICT (key, bound, member) DO UPDATE SET permits = excluded.permits, want = excluded.want, expires_at = excluded.expires_at`;
    return out;
  });
  return leases;
}

/** Gives up this executor's leases (it stops), and clears long-expired ones of executors gone, and past calendars. */
export async function dropLeases(sql: Sql, member: string): Promise<void> {
  await sql`DELETE FROM target_leases WHERE member = ${member} OR expires_at < now() - interval '1 minute'`;
  await sql`DELETE FROM target_calendar WHERE next_at < now() - interval '1 minute'`;
}

/**
 * Places deferred jobs on their keys' calendars (one statement for all): per key, its requests
 * in order take the next places, `stepMs` apart, from the calendar's end or `waitMs` from now,
 * whichever is later. A job with several keys takes a place on each and comes back at the latest.
 * Returns each request's delay from the database's now() (ms).
 */
export async function reserveCalendar(sql: Sql, reqs: CalendarSlot[][], waitMs: number): Promise<number[]> {
  const perKey = new Map<string, { n: number; stepMs: number }>();
  for (const slots of reqs)
    for (const { key, stepMs } of slots) {
      const k = perKey.get(key) ?? { n: 0, stepMs };
      k.n++;
      k.stepMs = Math.max(k.stepMs, stepMs);
      perKey.set(key, k);
    }
  const keys = [...perKey.keys()].sort();
  // excluded.next_at - (now() + wait) is the places taken (n x step): added to the calendar's end.
  const rows = await sql<{ key: string; end_ms: number }[]>`
    INSERT INTO target_calendar AS c (key, next_at)
    SELECT k, now() + (${waitMs} + s) * interval '1 millisecond' FROM unnest(${keys}::text[], ${keys.map((k) => perKey.get(k)!.n * perKey.get(k)!.stepMs)}::float8[]) AS r(k, s)
    ON CONFLICT (key) DO UPDATE SET next_at = greatest(c.next_at, now() + ${waitMs} * interval '1 millisecond') + (excluded.next_at - (now() + ${waitMs} * interval '1 millisecond'))
    RETURNING key, extract(epoch FROM next_at - now()) * 1000 AS end_ms`;
  const next = new Map<string, number>();
  for (const r of rows) {
    const k = perKey.get(r.key)!;
    next.set(r.key, Number(r.end_ms) - k.n * k.stepMs);
  }
  return reqs.map((slots) => {
    let at = waitMs;
    for (const { key } of slots) {
      at = Math.max(at, next.get(key)!);
      next.set(key, next.get(key)! + perKey.get(key)!.stepMs);
    }
    return Math.round(at);
  });
}
