/**
 * Recent activity for operators (the console's operator view, GET /api/v1/admin/activity): who
 * got what share of the starts, interval by interval, against their weight; who got what share of
 * the executors' time (occupancy); how late the starts were; and who is waiting now.
 *
 * Occupancy: a user's share of the summed run time (duration_ms, the handler's run time) of the
 * attempts started in an interval. Shares of starts alone hide a user whose jobs run 100x longer:
 * they hold executor slots 100x longer per start, and the scheduler shares executor time by
 * weight. Like the starts, it counts attempts that ended: runs still in flight are not counted
 * yet (an attempt without a duration counts 0).
 *
 * Sources: job_attempts (append-only, indexed by started_at; an attempt is there once it has
 * ended, so runs still in flight are not counted yet) and the waiting jobs' index for the due
 * backlog. Each database answers with counts and summed run times per (interval, user) and a
 * lateness histogram per interval; percentiles cannot be merged across databases, histograms can
 * (and counts and run times add up). The histogram has LATENESS_STEPS buckets per doubling of
 * (lateness + 1 ms), so a percentile is read to within ~9 % (the bucket's upper bound is reported).
 */
import type { Databases, Sql } from "../db/databases.ts";
import { inList, WAITING } from "./lifecycle.ts";

export const LATENESS_STEPS = 8;

/** The histogram bucket of a lateness (the SQL below computes the same). */
export function latenessBucket(ms: number): number {
  return Math.floor(Math.log2(Math.max(0, ms) + 1) * LATENESS_STEPS);
}

/** The largest lateness in bucket `k`, in ms. */
export function bucketUpperMs(k: number): number {
  return Math.round(2 ** ((k + 1) / LATENESS_STEPS) - 1);
}

/** The q-quantile of a histogram (bucket -> count), as its bucket's upper bound; null if empty. */
export function quantileMs(hist: Map<number, number>, q: number): number | null {
  const total = [...hist.values()].reduce((a, b) => a + b, 0);
  if (total === 0) return null;
  const rank = Math.ceil(q * total);
  let seen = 0;
  for (const k of [...hist.keys()].sort((a, b) => a - b)) {
    seen += hist.get(k)!;
    if (seen >= rank) return bucketUpperMs(k);
  }
  return null; // unreachable: seen reaches total
}

export interface StartsRow {
  t: number;
  user_id: string;
  n: number;
  /** The summed duration_ms of these attempts (null durations count 0); absent: 0. */
  run_ms?: number;
}
export interface LatenessRow { t: number; k: number; n: number }
export interface WaitingRow { user_id: string; n: number; oldest: Date }
export interface UserInfo { id: string; username: string; job_weight: number }

export interface Activity {
  from: string;
  to: string;
  interval_ms: number;
  /** Oldest first; every interval of the window, empty ones included. */
  intervals: {
    at: string;
    starts: number;
    lateness_p50_ms: number | null;
    lateness_p99_ms: number | null;
    /** user id -> share of this interval's starts (0-1). */
    share: Record<string, number>;
    /** user id -> weight / sum of the weights of the users who started jobs in this interval. */
    weight_share: Record<string, number>;
    /** The summed run time (duration_ms) of the attempts started in this interval, ms. */
    run_ms: number;
    /**
     * user id -> share of this interval's run_ms (0-1): the user's share of executor time, by the
     * handler's run time of the attempts that ended (runs still in flight are not counted yet).
     * Empty when run_ms is 0.
     */
    occupancy: Record<string, number>;
  }[];
  /** Users who started jobs in the window or are waiting now, most starts first (at most the reader's maxUsers). */
  users: {
    id: string;
    username: string | null;
    job_weight: number | null;
    starts: number;
    share: number;
    /** Jobs due and not yet started now. */
    waiting: number;
    /** weight / sum of the weights of every user waiting now (the share owed under backlog); null when not waiting. */
    owed_share: number | null;
  }[];
  backlog: { waiting: number; oldest_due_at: string | null };
}

/** Merges what the databases answered into the view. Pure. */
export function summarize(
  a: { from: number; to: number; intervalMs: number; defaultWeight: number },
  starts: StartsRow[],
  lateness: LatenessRow[],
  waiting: WaitingRow[],
  users: UserInfo[],
  maxUsers = Infinity,
): Activity {
  const info = new Map(users.map((u) => [u.id, u]));
  const weight = (id: string) => info.get(id)?.job_weight ?? a.defaultWeight;
  const slots = Math.max(1, Math.ceil((a.to - a.from) / a.intervalMs));
  const byT = new Map<number, { users: Map<string, number>; runMs: Map<string, number>; hist: Map<number, number> }>();
  for (let i = 0; i < slots; i++) byT.set(a.from + i * a.intervalMs, { users: new Map(), runMs: new Map(), hist: new Map() });
  const perUser = new Map<string, number>();
  for (const r of starts) {
    const slot = byT.get(r.t);
    if (!slot) continue;
    slot.users.set(r.user_id, (slot.users.get(r.user_id) ?? 0) + r.n);
    slot.runMs.set(r.user_id, (slot.runMs.get(r.user_id) ?? 0) + (r.run_ms ?? 0));
    perUser.set(r.user_id, (perUser.get(r.user_id) ?? 0) + r.n);
  }
  for (const r of lateness) {
    const slot = byT.get(r.t);
    if (slot) slot.hist.set(r.k, (slot.hist.get(r.k) ?? 0) + r.n);
  }
  const waitingBy = new Map<string, { n: number; oldest: Date }>();
  for (const w of waiting) {
    const prev = waitingBy.get(w.user_id);
    waitingBy.set(w.user_id, { n: (prev?.n ?? 0) + w.n, oldest: prev && prev.oldest < w.oldest ? prev.oldest : w.oldest });
  }
  const owedTotal = [...waitingBy.keys()].reduce((sum, id) => sum + weight(id), 0);
  const totalStarts = [...perUser.values()].reduce((x, y) => x + y, 0);
  // The users shown: the most starts first, then the most waiting. Every user counts in the
  // totals and weight sums; only these are listed.
  const ids = [...new Set([...perUser.keys(), ...waitingBy.keys()])];
  ids.sort((x, y) => (perUser.get(y) ?? 0) - (perUser.get(x) ?? 0) || (waitingBy.get(y)?.n ?? 0) - (waitingBy.get(x)?.n ?? 0) || x.localeCompare(y));
  ids.length = Math.min(ids.length, maxUsers);
  const oldest = [...waitingBy.values()].reduce<Date | null>((o, w) => (o === null || w.oldest < o ? w.oldest : o), null);
  return {
    from: new Date(a.from).toISOString(),
    to: new Date(a.to).toISOString(),
    interval_ms: a.intervalMs,
    intervals: [...byT].map(([t, slot]) => {
      let n = 0;
      let wsum = 0;
      let runMs = 0;
      for (const [id, k] of slot.users) {
        n += k;
        wsum += weight(id);
        runMs += slot.runMs.get(id) ?? 0;
      }
      const here = ids.filter((id) => slot.users.has(id));
      return {
        at: new Date(t).toISOString(),
        starts: n,
        lateness_p50_ms: quantileMs(slot.hist, 0.5),
        lateness_p99_ms: quantileMs(slot.hist, 0.99),
        share: Object.fromEntries(here.map((id) => [id, slot.users.get(id)! / n])),
        weight_share: Object.fromEntries(here.map((id) => [id, weight(id) / wsum])),
        run_ms: runMs,
        occupancy: runMs ? Object.fromEntries(here.map((id) => [id, (slot.runMs.get(id) ?? 0) / runMs])) : {},
      };
    }),
    users: ids.map((id) => ({
      id,
      username: info.get(id)?.username ?? null,
      job_weight: info.get(id)?.job_weight ?? null,
      starts: perUser.get(id) ?? 0,
      share: totalStarts ? (perUser.get(id) ?? 0) / totalStarts : 0,
      waiting: waitingBy.get(id)?.n ?? 0,
      owed_share: waitingBy.has(id) ? weight(id) / owedTotal : null,
    })),
    backlog: { waiting: [...waitingBy.values()].reduce((x, w) => x + w.n, 0), oldest_due_at: oldest?.toISOString() ?? null },
  };
}

/** What one database answered for a time range. */
interface Rows { starts: StartsRow[]; lateness: LatenessRow[] }

/**
 * Reads activity from every database. Intervals that ended more than `settleMs` ago are read
 * once and kept (per interval width); a refresh reads only the newer rows, so its work is bounded
 * by `settleMs` of job_attempts whatever the window. One reader per API process.
 */
export class ActivityReader {
  /** interval width -> interval start -> its rows, for settled intervals. */
  private readonly settled = new Map<number, Map<number, Rows>>();

  constructor(
    private readonly dbs: Databases,
    private readonly opts: { defaultWeight: number; maxUsers: number; settleMs: number; keepMs: number },
  ) {}

  async read(windowMs: number, intervalMs: number, now = Date.now()): Promise<Activity> {
    // The current interval is included, still filling; the window covers whole intervals.
    const to = Math.ceil((now + 1) / intervalMs) * intervalMs;
    const from = to - Math.ceil(windowMs / intervalMs) * intervalMs;
    // Intervals starting before this have ended at least settleMs ago.
    const settledBefore = Math.min(to, Math.max(from, Math.floor((now - this.opts.settleMs) / intervalMs) * intervalMs));
    const kept = this.settled.get(intervalMs) ?? new Map<number, Rows>();
    this.settled.set(intervalMs, kept);
    let readFrom = settledBefore;
    for (let t = from; t < settledBefore; t += intervalMs) {
      if (!kept.has(t)) {
        readFrom = t;
        break;
      }
    }
    const fresh = await this.rows(readFrom, to, intervalMs);
    for (let t = readFrom; t < settledBefore; t += intervalMs) kept.set(t, { starts: [], lateness: [] });
    for (const r of fresh.starts) if (r.t < settledBefore) kept.get(r.t)?.starts.push(r);
    for (const r of fresh.lateness) if (r.t < settledBefore) kept.get(r.t)?.lateness.push(r);
    for (const t of kept.keys()) if (t < now - this.opts.keepMs) kept.delete(t);
    const old = [...kept].filter(([t]) => t >= from && t < readFrom).map(([, r]) => r);
    const starts = [...old.flatMap((r) => r.starts), ...fresh.starts];
    const lateness = [...old.flatMap((r) => r.lateness), ...fresh.lateness];
    const waiting = (await Promise.all(this.dbs.all.map((sql) => waitingNow(sql)))).flat();

    // Names and weights of every user in the window or waiting: the interval shares and the
    // owed shares need all their weights.
    const ids = [...new Set([...starts.map((r) => r.user_id), ...waiting.map((w) => w.user_id)])];
    const users = ids.length ? await this.dbs.users<UserInfo[]>`SELECT id::text, username, job_weight FROM users WHERE id = ANY(${ids}::bigint[])` : [];
    const view = summarize({ from, to, intervalMs, defaultWeight: this.opts.defaultWeight }, starts, lateness, waiting, users, this.opts.maxUsers);
    return view;
  }

  /** Starts and run times per (interval, user) and the lateness histogram per interval in [from, to), from every database. */
  private async rows(from: number, to: number, intervalMs: number): Promise<Rows> {
    const since = new Date(from);
    const until = new Date(to);
    const parts = await Promise.all(
      this.dbs.all.map(async (sql) => {
        // date_bin and date_part work in timestamp and float arithmetic: ~2x faster than
        // extract(), which is numeric (bench/activity.ts).
        const slot = sql`date_part('epoch', date_bin(${`${intervalMs} milliseconds`}::interval, started_at, 'epoch'::timestamptz)) * 1000`;
        const [starts, lateness] = await Promise.all([
          sql<StartsRow[]>`
            SELECT ${slot} AS t, user_id::text AS user_id, count(*)::int AS n, coalesce(sum(duration_ms), 0)::float8 AS run_ms
            FROM job_attempts WHERE started_at >= ${since} AND started_at < ${until} GROUP BY 1, 2`,
          sql<LatenessRow[]>`
            SELECT ${slot} AS t, floor(ln(greatest(0, date_part('epoch', started_at - due_at) * 1000) + 1) / ln(2) * ${LATENESS_STEPS})::int AS k, count(*)::int AS n
            FROM job_attempts WHERE started_at >= ${since} AND started_at < ${until} AND due_at IS NOT NULL GROUP BY 1, 2`,
        ]);
        return { starts, lateness };
      }),
    );
    return {
      starts: parts.flatMap((p) => p.starts).map((r) => ({ ...r, t: Number(r.t) })),
      lateness: parts.flatMap((p) => p.lateness).map((r) => ({ ...r, t: Number(r.t) })),
    };
  }
}

/**
 * Jobs due and waiting now, per user. The waiting jobs' index leads with (shard, user), then
 * due_at: a plain count would scan every waiting job, the ones due next month too. This walks
 * the distinct (shard, user) pairs (one index descent each) and counts only the due rows of
 * each: work in pairs plus due jobs, not in all jobs waiting (bench/activity.ts: 9 ms against
 * 57 ms with a million future jobs in the database).
 */
function waitingNow(sql: Sql) {
  const waiting = sql.unsafe(inList(WAITING));
  return sql<WaitingRow[]>`
    WITH RECURSIVE pairs AS (
      (SELECT shard_id, user_id FROM jobs WHERE status IN ${waiting} ORDER BY shard_id, user_id LIMIT 1)
      UNION ALL
      SELECT n.shard_id, n.user_id FROM pairs p, LATERAL (
        SELECT shard_id, user_id FROM jobs WHERE status IN ${waiting} AND (shard_id, user_id) > (p.shard_id, p.user_id)
        ORDER BY shard_id, user_id LIMIT 1) n)
    SELECT p.user_id::text AS user_id, c.n, c.oldest FROM pairs p, LATERAL (
      SELECT count(*)::int AS n, min(due_at) AS oldest FROM jobs
      WHERE status IN ${waiting} AND shard_id = p.shard_id AND user_id = p.user_id AND due_at <= now()) c
    WHERE c.n > 0`;
}
