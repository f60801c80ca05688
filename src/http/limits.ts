/**
 * Quotas and abuse limits of the API, each answered with 429, a stable code and Retry-After.
 * They are kept per API process (no shared state on the request path): with k API processes a
 * user can reach k times a rate limit, and the pending-jobs quota is checked against a count at
 * most about a second old plus this process's own creations since.
 */
import { TUNING } from "../config.ts";
import type { Databases } from "../db/databases.ts";
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

/**
 * Failed logins, limited per account and per client address (src/http/client-address.ts).
 *
 * Per account: past `perAccount` failed logins for a username within a minute, from anywhere,
 * every attempt on that username is refused, the right password too (a success resets nothing).
 *
 * Per address: an address is over its limit once `perAddress` *different usernames* failed from
 * it within a minute. Repeated failures on one username count once (the per-account limit holds
 * them), so one user mistyping, or a script hammering one account, 200 times from an office NAT
 * or an API gateway never spends the address's budget, and every other account behind it logs
 * in. A password sprayer (one or two guesses each for many usernames) spends one unit per
 * username and is refused after `perAddress` of them for the rest of the minute. While the
 * address is over, a username that logged in successfully from this same address in the last
 * 24 h is still admitted (held by its own limit only): knowing that pair means knowing the
 * password, so it is no use to a sprayer, and an office's regular users keep working while
 * someone behind their NAT sprays. A username new to the address is refused then: telling its
 * right password from a sprayer's guess would take checking the password, which is what the
 * limit withholds.
 *
 * (The simpler rule "over its limit, the address refuses only usernames that already failed"
 * does not slow a sprayer at all: each sprayed username is new.)
 *
 * Counters live in fixed one-minute windows, per API process, at most 100,000 keys each (the
 * oldest dropped; a dropped username-address pair counts again, which errs towards refusing).
 */
const pairKey = (username: string, address: string) => `${address} ${username}`;

export class LoginThrottle {
  private readonly byName = new WindowCounter(60_000);
  private readonly byAddress = new WindowCounter(60_000);
  /** Failures per address and username: the address is charged on a pair's first. */
  private readonly pairs = new WindowCounter(60_000);
  /** Last successful login per address and username (ms), oldest first. */
  private readonly known = new Map<string, number>();
  private static readonly KNOWN_MS = 24 * 3_600_000;
  private static readonly KNOWN_MAX = 100_000;

  constructor(
    private readonly perAccount: number,
    private readonly perAddress: number,
  ) {}

  /** Throws 429 when the username, or the address for this username, used up its failed attempts this minute. */
  check(username: string, address: string, now = Date.now()): void {
    if (this.perAccount > 0 && this.byName.count(username, now) >= this.perAccount) {
      const s = this.byName.retryAfterS(username, now);
      throw tooMany("too_many_attempts", `too many failed logins for this username; try again in ${Math.ceil(s)} s`, s);
    }
    if (this.perAddress > 0 && this.byAddress.count(address, now) >= this.perAddress && !this.isKnown(username, address, now)) {
      const s = this.byAddress.retryAfterS(address, now);
      throw tooMany("too_many_attempts", `too many failed logins from this address; try again in ${Math.ceil(s)} s`, s);
    }
  }

  failed(username: string, address: string, now = Date.now()): void {
    this.byName.add(username, 1, now);
    if (this.perAddress === 0) return;
    const pair = pairKey(username, address);
    if (this.pairs.count(pair, now) === 0) this.byAddress.add(address, 1, now);
    this.pairs.add(pair, 1, now);
  }

  succeeded(username: string, address: string, now = Date.now()): void {
    if (this.perAddress === 0) return;
    const pair = pairKey(username, address);
    this.known.delete(pair); // re-inserted last: the map stays oldest first
    if (this.known.size >= LoginThrottle.KNOWN_MAX) this.known.delete(this.known.keys().next().value!);
    this.known.set(pair, now);
  }

  private isKnown(username: string, address: string, now: number): boolean {
    const at = this.known.get(pairKey(username, address));
    return at !== undefined && now - at < LoginThrottle.KNOWN_MS;
  }
}

/** The pending-jobs quota and the per-user creation rate. */
export class CreateQuota {
  private readonly rate = new WindowCounter(1_000);
  private readonly pending = new Map<string, { n: number; at: number; byDb: number[] }>();

  constructor(
    private readonly dbs: Databases,
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
    // A database out counts what it last counted (0 if never): new jobs go to the others.
    const counts = await Promise.allSettled(
      this.dbs.all.map((sql, i) => this.dbs.gate.within(i, TUNING.db.answerWithinMs, () => sql<{ n: number }[]>`SELECT count(*)::int AS n FROM jobs WHERE user_id = ${userId}`)),
    );
    if (counts.every((c) => c.status === "rejected")) throw (counts[0] as PromiseRejectedResult).reason;
    const byDb = counts.map((c, i) => (c.status === "fulfilled" ? c.value[0]!.n : (p?.byDb[i] ?? 0)));
    const n = byDb.reduce((a, b) => a + b, 0);
    if (this.pending.size >= 100_000 && !p) this.pending.delete(this.pending.keys().next().value!);
    this.pending.set(userId, { n, at: now, byDb });
    return n;
  }
}
