/**
 * Users' weights for the scheduler's fair order, and their concurrency caps and pauses
 * (`limitOf`), read from the users table (the first database): a weight is the user's, not a copy frozen into each job, so an operator's change
 * applies to that user's pending jobs within one refresh (the fair order reads `weightOf` at each
 * dispatch). Users not seen in any load for FORGET_AFTER_MS are dropped, so the book and the
 * refresh hold only users with work.
 *
 * The users database is not on a load's critical path: `seen()` never fails and waits at most
 * SEEN_WAIT_MS for the weights of users it does not know. A user whose weight could not be read
 * by then gets a fallback at once (its last known weight, which a known user keeps when a
 * refresh fails, or the default weight) and is marked stale; the read goes on in the
 * background, and the periodic refresh reads stale users again with the others, until the real
 * weight arrives. So an outage of the users database leaves new users at the
 * default weight for its duration; it no longer stops loads on healthy shard databases.
 */
import type { Sql } from "../db/databases.ts";
import { log } from "../log.ts";
import { metrics } from "../metrics.ts";

export const FORGET_AFTER_MS = 10 * 60_000;

/**
 * How long `seen()` waits for unknown users' weights before applying a fallback. A healthy users
 * database answers the read in a few milliseconds (tens under load), so new users normally
 * queue at their real weight; and a load runs ahead of its jobs' due times by the look-ahead
 * (4 s by default; loads triggered by due times come a quarter of it apart), so a wait this
 * short delays a load without making its jobs late, while a users database that does not answer
 * (a connect timeout is 10 s) no longer holds it.
 */
export const SEEN_WAIT_MS = 250;

interface Known {
  weight: number;
  /** users.max_running (null: the default) and users.paused. */
  maxRunning: number | null;
  paused: boolean;
  seenAt: number;
  /** The weight is a fallback: the users database could not be read for this user yet. */
  stale: boolean;
}

export class WeightBook {
  private known = new Map<string, Known>();
  /** Users whose first read is under way, and that read. */
  private reading = new Map<string, Promise<void>>();
  private refreshing = false;
  private timer: ReturnType<typeof setInterval> | null = null;

  constructor(
    private readonly users: Sql,
    private readonly defaultWeight: number,
    private readonly seenWaitMs = SEEN_WAIT_MS,
    /** USER_MAX_RUNNING: a user's cap when it has none of its own (Infinity: none). */
    private readonly defaultMaxRunning = Infinity,
  ) {}

  /**
   * Notes the users of a load. Unknown users' weights are read (at most `seenWaitMs` waited
   * for); those still unknown then get a fallback weight, the real one follows when read.
   * Never rejects.
   */
  async seen(userIds: string[]): Promise<void> {
    const now = Date.now();
    const waits = new Set<Promise<void>>();
    const unknown: string[] = [];
    for (const u of userIds) {
      const k = this.known.get(u);
      if (k) k.seenAt = now;
      else {
        const p = this.reading.get(u);
        if (p) waits.add(p);
        else unknown.push(u);
      }
    }
    if (unknown.length > 0) waits.add(this.readNew(unknown));
    if (waits.size === 0) return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([Promise.all(waits), new Promise<void>((resolve) => (timer = setTimeout(resolve, this.seenWaitMs)))]);
    clearTimeout(timer);
    this.fallback(userIds.filter((u) => !this.known.has(u)), now);
  }

  /** The weight the book holds for a user (the default for a user it does not know). */
  weightOf(userId: string): number {
    return this.known.get(userId)?.weight ?? this.defaultWeight;
  }

  /**
   * The most jobs of the user that may be dispatched and not finished at once, cluster-wide:
   * 0 while paused, its max_running, else the default (Infinity: no cap). A user whose row could
   * not be read yet is uncapped and not paused (its jobs are never held back by an outage).
   */
  limitOf(userId: string): number {
    const k = this.known.get(userId);
    if (!k) return this.defaultMaxRunning;
    if (k.paused) return 0;
    return k.maxRunning ?? this.defaultMaxRunning;
  }

  /** Users whose weight is a fallback right now (the users database could not be read for them). */
  staleUsers(): string[] {
    return [...this.known].filter(([, k]) => k.stale).map(([u]) => u);
  }

  start(refreshMs: number): void {
    this.timer = setInterval(() => void this.refresh(), refreshMs);
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /**
   * Forgets users not seen for FORGET_AFTER_MS and reads every other known user again, stale
   * ones included (so a user first seen during an outage gets its weight once the database
   * answers). One refresh at a time: a database that does not answer gets no pile of reads.
   */
  async refresh(): Promise<void> {
    if (this.refreshing) return;
    const now = Date.now();
    for (const [u, k] of this.known) {
      if (now - k.seenAt <= FORGET_AFTER_MS) continue;
      this.known.delete(u);
      if (k.stale) metrics.weightsStale.dec();
    }
    if (this.known.size === 0) return;
    this.refreshing = true;
    try {
      await this.read([...this.known.keys()]);
    } catch (err) {
      log.warn("weight refresh failed; keeping the last weights", { err: err as Error, staleUsers: this.staleUsers().length });
    } finally {
      this.refreshing = false;
    }
  }

  /** Reads users not known yet, in the background; the promise never rejects. */
  private readNew(userIds: string[]): Promise<void> {
    const p: Promise<void> = this.read(userIds)
      .catch((err) => {
        log.warn("could not read users' weights; using fallback weights until a refresh reads them", { err: err as Error, users: userIds.length });
        this.fallback(userIds, Date.now());
      })
      .finally(() => {
        for (const u of userIds) if (this.reading.get(u) === p) this.reading.delete(u);
      });
    for (const u of userIds) this.reading.set(u, p);
    return p;
  }

  /** Gives users with no weight yet the fallback (a known user keeps its last weight). */
  private fallback(userIds: string[], seenAt: number): void {
    for (const u of userIds) {
      if (this.known.has(u)) continue;
      this.known.set(u, { weight: this.defaultWeight, maxRunning: null, paused: false, seenAt, stale: true });
      metrics.weightsStale.inc();
    }
  }

  private async read(userIds: string[]): Promise<void> {
    const rows = await this.users<{ id: string; job_weight: number; max_running: number | null; paused: boolean }[]>`
      SELECT id::text, job_weight, max_running, paused FROM users WHERE id = ANY(${userIds}::bigint[])`;
    const found = new Map(rows.map((r) => [r.id, r]));
    const now = Date.now();
    for (const u of userIds) {
      // A user that no longer exists keeps the default weight until its jobs are gone.
      const r = found.get(u);
      const read = { weight: r?.job_weight ?? this.defaultWeight, maxRunning: r?.max_running ?? null, paused: r?.paused ?? false };
      const k = this.known.get(u);
      if (k) {
        Object.assign(k, read);
        if (k.stale) metrics.weightsStale.dec();
        k.stale = false;
      } else this.known.set(u, { ...read, seenAt: now, stale: false });
    }
  }
}
