/**
 * Quotas and abuse limits of the API, each answered with 429, a stable code and Retry-After.
 * They are kept per API process (no shared state on the request path): with k API processes a
 * user can reach k times a rate limit, and the pending-jobs quota is checked against a count at
 * most about a second old plus this process's own creations since.
 */
import type { Sql } from "../db/databases.ts";
import { ApiError, type ErrorCode } from "./errors.ts";

const tooMany = (code: ErrorCode, message: string, retryAfterS: number) => new ApiError(429, code, message, undefined, Math.max(1, Math.ceil(retryAfterS)));

/** Counts per key in fixed windows of `windowMs`; at most `max` keys (oldest dropped). */
export class WindowCounter {
  private readonly windows = new Map<string, { start: number; n: number }>();

  constructor(
    private readonly windowMs: number,
    private readonly max = 100_000,
  ) {}

  private current(key: string, now: number) {
    let w = this.windows.get(key);
    if (!w || now - w.start >= this.windowMs) {
      if (!w && this.windows.size >= this.max) this.windows.delete(this.windows.keys().next().value!);
      w = { start: now, n: 0 };
      this.windows.set(key, w);
    }
    return w;
  }

  count(key: string, now = Date.now()): number {
    return this.current(key, now).n;
  }

  add(key: string, n = 1, now = Date.now()): void {
    this.current(key, now).n += n;
  }

  /** Seconds until the key's window ends. */
  retryAfterS(key: string, now = Date.now()): number {
    return (this.current(key, now).start + this.windowMs - now) / 1000;
  }
}

/** Failed logins per username and per client address (a success resets neither). */
export class LoginThrottle {
  private readonly byName = new WindowCounter(60_000);
  private readonly byAddress = new WindowCounter(60_000);

  constructor(private readonly perMinute: number) {}

  /** Throws 429 when the name or the address used up its failed attempts this minute. */
  check(username: string, address: string): void {
    if (this.perMinute === 0) return;
    for (const [counter, key] of [[this.byName, username], [this.byAddress, address]] as const) {
      if (counter.count(key) >= this.perMinute) {
        throw tooMany("too_many_attempts", `too many failed logins; try again in ${Math.ceil(counter.retryAfterS(key))} s`, counter.retryAfterS(key));
      }
    }
  }

  failed(username: string, address: string): void {
    this.byName.add(username);
    this.byAddress.add(address);
  }
}

/** The pending-jobs quota and the per-user creation rate. */
export class CreateQuota {
  private readonly rate = new WindowCounter(1_000);
  private readonly pending = new Map<string, { n: number; at: number }>();

  constructor(
    private readonly dbs: readonly Sql[],
    private readonly maxPending: number,
    private readonly perSecond: number,
  ) {}

  /** Admits `n` new jobs for the user or throws 429; call `created` once they are in. */
  async admit(userId: string, n: number): Promise<void> {
    if (this.perSecond > 0 && this.rate.count(userId) + n > this.perSecond) {
      throw tooMany("rate_limited", `at most ${this.perSecond} job creations per second`, this.rate.retryAfterS(userId));
    }
    if (this.maxPending > 0 && (await this.pendingOf(userId)) + n > this.maxPending) {
      throw tooMany("quota_exceeded", `at most ${this.maxPending} unfinished jobs per user; wait for some to finish or cancel some`, 1);
    }
    this.rate.add(userId, n);
  }

  created(userId: string, n: number): void {
    const p = this.pending.get(userId);
    if (p) p.n += n;
  }

  /**
   * Unfinished jobs of the user: counted in every database (the `jobs` table holds only those)
   * when the last count is over a second old and could matter (past 90 % of the quota), or over
   * 30 s; in between, this process adds what it created. (A count over ~600,000 rows every
   * second cost the batch create benchmark ~10 %.)
   */
  private async pendingOf(userId: string): Promise<number> {
    const now = Date.now();
    const p = this.pending.get(userId);
    if (p && (now - p.at < 1_000 || (p.n < this.maxPending * 0.9 && now - p.at < 30_000))) return p.n;
    const counts = await Promise.all(this.dbs.map((sql) => sql<{ n: number }[]>`SELECT count(*)::int AS n FROM jobs WHERE user_id = ${userId}`));
    const n = counts.reduce((a, [r]) => a + r!.n, 0);
    if (this.pending.size >= 100_000 && !p) this.pending.delete(this.pending.keys().next().value!);
    this.pending.set(userId, { n, at: now });
    return n;
  }
}
