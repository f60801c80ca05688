/**
 * Per-target limits in an executor: calls to a target host at most N at once and R in any one
 * second, for one user's jobs or every user's, across all executors. Pure: no I/O, time passed in.
 *
 * A limit is a key (`<user id>/<host>`, user 0 for an operator's limit on every user) with up to
 * two bounds: `c`, calls at once, and `r`, calls started in the last second. The executors share
 * each bound by leases (src/executor/target-leases.ts): an executor starts a call only within the
 * permits its unexpired lease holds, and `leaseShare` below sizes the leases so that together they
 * never exceed the bound. A bound's permits in use are the calls running (`c`) or started within
 * the last second (`r`): a lease never shrinks below them, so a permit handed to another executor
 * is free of this one's calls (for `r`, of its calls in the last second).
 *
 * A job whose target is limited takes its permits before its executor slot and its claim, so a
 * job waiting for a limit holds no slot and has used no attempt. It waits here only briefly (about
 * `waitMs`): when more wait ahead of it than the key's permits could serve in that time, or it
 * has waited that long, it is deferred instead: the caller puts it back in the database (its next
 * try moved later, the attempt unchanged) to be dispatched again then. Deferred jobs are spread
 * over one calendar per key for the whole cluster (in the database: a deferred job comes back
 * through any executor), one step apart, a step being the time the limit takes per call (a
 * second over the rate; the mean run time over the calls at once), so a backlog comes back at the
 * pace the limit lets it run, not all at once.
 */

export interface TargetLimit {
  /** Calls at once (null: not bounded). */
  maxConcurrent: number | null;
  /** Calls started in any one second (null: not bounded). */
  maxPerSecond: number | null;
}

export type Bound = "c" | "r";

export interface GateSettings {
  /** How long a job may wait here before it is deferred to the database instead. */
  waitMs: number;
  /** A key with nothing running, waiting or recent is forgotten after this. */
  idleMs: number;
}

/**
 * A job's answer: go (its permits are taken at `at`: say when its call starts, and release them
 * when it ends, or give them back if it does not run), or defer it: a place on each key's
 * calendar, `stepMs` after the one before (the caller reserves them).
 */
export type GateAnswer = { go: true; at: number } | { go: false; calendar: CalendarSlot[] };

export interface CalendarSlot {
  key: string;
  /** The time the limit takes per call (cluster-wide): the calendar's spacing for this key. */
  stepMs: number;
}

/** Operator limits apply to every user's calls: they are the key of user 0. */
export const EVERY_USER = "0";

/** The host a limit names for a target URL: its host name as the WHATWG URL parser gives it (no port). */
export function hostOf(url: string): string | undefined {
  try {
    return new URL(url).hostname || undefined;
  } catch {
    return undefined;
  }
}

export const limitKey = (userId: string, host: string): string => `${userId}/${host}`;

/**
 * An executor's new lease for one bound of one key, given the bound's `limit`, this executor's
 * calls in use and wanted, and the other executors' unexpired leases. Never more than the limit
 * less the others' permits (so all leases together never exceed the limit), never less than what
 * this executor has in use while that fits. While another executor wants more than it holds,
 * this one takes at most its equal share of the limit among the k executors that want any:
 * floor(limit / k), plus one for the first (limit mod k) of them by member name, so the shares add
 * up to the limit. A lease taken when it was alone thus shrinks, as its calls end, to make room.
 * Also returns that share (`fair`, counting this executor as wanting): what its lease is heading
 * for while it has work, which paces its deferrals before the lease gets there.
 */
export function leaseShare(
  limit: number,
  mine: { member: string; inUse: number; want: number },
  others: { member: string; permits: number; want: number }[],
): { permits: number; fair: number; contended: boolean } {
  let held = 0;
  let contended = false;
  const wanting = [mine.member];
  for (const o of others) {
    held += o.permits;
    if (o.want > 0) wanting.push(o.member);
    if (o.want > o.permits) contended = true;
  }
  wanting.sort();
  const fair = Math.floor(limit / wanting.length) + (wanting.indexOf(mine.member) < limit % wanting.length ? 1 : 0);
  const free = Math.max(0, limit - held);
  const desired = contended ? Math.min(mine.want, fair) : mine.want;
  return { permits: Math.min(free, Math.max(desired, mine.inUse)), fair, contended };
}

interface BoundState {
  limit: number;
  /** Permits of this executor's lease, and until when (local clock) it may use them. */
  permits: number;
  validUntil: number;
  /** Its equal share of the limit at the last renewal (leaseShare's `fair`), and whether another executor wanted more than it held. */
  fair: number;
  contended: boolean;
  /** While a renewal is out, the most permits of it in use (see `demand`); Infinity otherwise. */
  ceiling: number;
  /** c: calls running; r: start times (ms) of the calls started in the last second, oldest first. */
  running: number;
  starts: number[];
  /** r: when the next call may start if the rate's permits were spread evenly (GCRA's theoretical arrival time). */
  tat: number;
}

interface Waiter {
  keys: string[];
  since: number;
  answer: (a: GateAnswer) => void;
}

interface KeyState {
  key: string;
  bounds: Partial<Record<Bound, BoundState>>;
  waiting: Waiter[];
  /** Deferrals in the last few seconds: demand this executor had and could not serve. */
  deferredAt: number[];
  /** Mean run time of its calls (ms, an exponential average; null: none yet). */
  runMs: number | null;
  lastSeen: number;
}

const RUN_EWMA = 0.1;
/** How far ahead of its even place a rate-bound call may start (see `free`). */
const RATE_BURST_MS = 50;
/** A call's run time assumed before any of the key's has run (ms). */
const FIRST_RUN_MS = 100;

/** Deferrals this recent count as this executor's demand (`demand`). */
const RECENT_MS = 2_000;

/** Removes one `x` from an ascending list (the latest), keeping it sorted; false if none. */
function removeOne(list: number[], x: number): boolean {
  const i = list.lastIndexOf(x);
  if (i < 0) return false;
  list.splice(i, 1);
  return true;
}

export class TargetGate {
  private limits = new Map<string, TargetLimit>();
  private hostsLimited = new Set<string>();
  private keys = new Map<string, KeyState>();
  private waitingJobs = 0;
  private closed = false;

  constructor(private readonly s: GateSettings) {}

  /** The limits in force (every key's); keys not in it are not limited any more. */
  setLimits(limits: Map<string, TargetLimit>, now: number): void {
    this.limits = limits;
    this.hostsLimited = new Set([...limits.keys()].map((k) => k.slice(k.indexOf("/") + 1)));
    for (const k of this.keys.values()) this.configure(k, limits.get(k.key) ?? null);
    this.pump(now);
  }

  /** The limited keys a call of the user to the host must take (the user's, then every user's). */
  keysFor(userId: string, host: string | undefined): string[] {
    if (!host || !this.hostsLimited.has(host)) return [];
    return [limitKey(userId, host), limitKey(EVERY_USER, host)].filter((k) => this.limits.has(k));
  }

  get waiting(): number {
    return this.waitingJobs;
  }

  /** Takes a permit of every key for one call, now, after a short wait, or not (defer). */
  acquire(keys: string[], now: number): GateAnswer | Promise<GateAnswer> {
    if (this.closed) return { go: false, calendar: [] };
    const states = keys.map((k) => this.state(k, now));
    const primary = states[0]!;
    if (primary.waiting.length === 0 && this.free(states, now)) {
      this.take(states, now);
      return { go: true, at: now };
    }
    if (primary.waiting.length >= this.servedWithin(states, now)) return this.defer(states, now);
    return new Promise<GateAnswer>((answer) => {
      primary.waiting.push({ keys, since: now, answer });
      this.waitingJobs++;
    });
  }

  /** A call that held permits of these keys ended after `ranMs` (no keys: nothing to do). */
  release(keys: string[], ranMs: number, now: number): void {
    if (keys.length === 0) return;
    for (const k of keys) {
      const st = this.keys.get(k);
      if (!st) continue;
      if (st.bounds.c) st.bounds.c.running = Math.max(0, st.bounds.c.running - 1);
      st.runMs = st.runMs === null ? ranMs : st.runMs + RUN_EWMA * (ranMs - st.runMs);
      st.lastSeen = now;
    }
    this.pump(now);
  }

  /**
   * The call granted at `at` starts now (after its slot and claim): its start counts against the
   * rate from now, so calls held up there cannot bunch with the next second's.
   */
  started(keys: string[], at: number, now: number): void {
    for (const k of keys) {
      const starts = this.keys.get(k)?.bounds.r?.starts;
      if (starts && removeOne(starts, at)) starts.push(now);
    }
  }

  /** A call granted at `at` did not run after all (a duplicate or early message): its permits go back. */
  giveBack(keys: string[], at: number, now: number): void {
    if (keys.length === 0) return;
    for (const k of keys) {
      const st = this.keys.get(k);
      if (st?.bounds.c) st.bounds.c.running = Math.max(0, st.bounds.c.running - 1);
      const r = st?.bounds.r;
      if (r && removeOne(r.starts, at)) r.tat = Math.max(now, r.tat - 1_000 / Math.max(1, this.permits(r, now)));
    }
    this.pump(now);
  }

  /** Lets waiting jobs go as permits free up (rate windows move on), defers those waiting too long, forgets idle keys. */
  tick(now: number): void {
    this.pump(now);
    for (const st of this.keys.values()) {
      while (st.waiting.length > 0 && now - st.waiting[0]!.since >= this.s.waitMs) {
        const w = st.waiting.shift()!;
        this.waitingJobs--;
        w.answer(this.defer(w.keys.map((k) => this.state(k, now)), now));
      }
      if (st.waiting.length === 0 && this.inUse(st, "c", now) === 0 && this.inUse(st, "r", now) === 0 && now - st.lastSeen > this.s.idleMs) this.keys.delete(st.key);
    }
  }

  /**
   * A renewal begins: per active key and bound, its limit, this executor's permits in use and
   * wanted. Calls started while the renewal is out must be covered by the lease it writes, so
   * from now until its answer (setLease, or renewalEnded) each bound is held to a ceiling, and
   * the ceiling is what this reports in use (leaseShare never grants less, while it fits): the
   * permits, or, while another executor wants more (as the last answer said), its equal share or
   * what it has in use now, whichever is more, so that its lease shrinks as its calls end.
   */
  demand(now: number): { key: string; bound: Bound; limit: number; inUse: number; want: number }[] {
    const out: { key: string; bound: Bound; limit: number; inUse: number; want: number }[] = [];
    for (const st of this.keys.values()) {
      while (st.deferredAt.length > 0 && now - st.deferredAt[0]! > RECENT_MS) st.deferredAt.shift();
      // Deferred jobs come back through any executor: only the demand seen here counts.
      const queued = st.waiting.length + st.deferredAt.length;
      for (const bound of ["c", "r"] as const) {
        const b = st.bounds[bound];
        if (!b) continue;
        const used = this.inUse(st, bound, now);
        const permits = this.permits(b, now);
        b.ceiling = Math.max(used, b.contended ? Math.min(permits, Math.max(b.fair, used)) : permits);
        out.push({ key: st.key, bound, limit: b.limit, inUse: b.ceiling, want: Math.min(b.limit, used + queued) });
      }
    }
    return out;
  }

  /**
   * The lease's answer: `permits` of the key's bound, usable until `validUntil` (local clock), its
   * equal share, and whether another executor wants more than it holds. Lifts the bound's ceiling.
   */
  setLease(key: string, bound: Bound, permits: number, validUntil: number, now: number, fair = permits, contended = false): void {
    const b = this.keys.get(key)?.bounds[bound];
    if (!b) return;
    b.permits = permits;
    b.validUntil = validUntil;
    b.fair = fair;
    b.contended = contended;
    b.ceiling = Infinity;
    this.pump(now);
  }

  /** A renewal ended without an answer for some bounds (failed, or a key it did not cover): their ceilings are lifted. */
  renewalEnded(now: number): void {
    for (const st of this.keys.values()) for (const b of Object.values(st.bounds)) b.ceiling = Infinity;
    this.pump(now);
  }

  /** Answers every waiting job (not to run here: the executor is stopping) and any later one. */
  close(): void {
    this.closed = true;
    for (const st of this.keys.values()) for (const w of st.waiting.splice(0)) w.answer({ go: false, calendar: [] });
    this.waitingJobs = 0;
  }

  private state(key: string, now: number): KeyState {
    let st = this.keys.get(key);
    if (!st) {
      st = { key, bounds: {}, waiting: [], deferredAt: [], runMs: null, lastSeen: now };
      this.keys.set(key, st);
      this.configure(st, this.limits.get(key) ?? null);
    }
    st.lastSeen = now;
    return st;
  }

  private configure(st: KeyState, limit: TargetLimit | null): void {
    const set = (bound: Bound, n: number | null) => {
      if (n === null) delete st.bounds[bound];
      else if (st.bounds[bound]) st.bounds[bound]!.limit = n;
      else st.bounds[bound] = { limit: n, permits: 0, validUntil: 0, fair: n, contended: false, ceiling: Infinity, running: 0, starts: [], tat: 0 };
    };
    set("c", limit?.maxConcurrent ?? null);
    set("r", limit?.maxPerSecond ?? null);
  }

  private inUse(st: KeyState, bound: Bound, now: number): number {
    const b = st.bounds[bound];
    if (!b) return 0;
    if (bound === "c") return b.running;
    while (b.starts.length > 0 && now - b.starts[0]! >= 1_000) b.starts.shift();
    return b.starts.length;
  }

  /** Permits of the bound this executor may use now: its lease's, while valid, and never above the limit. */
  private permits(b: BoundState, now: number): number {
    return now < b.validUntil ? Math.min(b.permits, b.limit, b.ceiling) : 0;
  }

  /**
   * Whether one more call of every key may start now: within each bound's permits, and for a
   * rate, also spread out: a call starts at most RATE_BURST_MS before its even place (1 s over
   * the permits after the last). Without the spreading, the permits go in a burst, the next
   * second's in another, and the jobs coming back in between (at the limit's even pace) wait
   * out the rest of the second or are deferred again.
   */
  private free(states: KeyState[], now: number): boolean {
    for (const st of states) {
      for (const bound of ["c", "r"] as const) {
        const b = st.bounds[bound];
        if (b && this.inUse(st, bound, now) >= this.permits(b, now)) return false;
      }
      if (st.bounds.r && st.bounds.r.tat - now > RATE_BURST_MS) return false;
    }
    return true;
  }

  private take(states: KeyState[], now: number): void {
    for (const st of states) {
      if (st.bounds.c) st.bounds.c.running++;
      const r = st.bounds.r;
      if (r) {
        r.starts.push(now);
        r.tat = Math.max(r.tat, now) + 1_000 / Math.max(1, this.permits(r, now));
      }
    }
  }

  /**
   * About how many calls the keys' permits start within waitMs: the rate's permits x waitMs,
   * the calls' permits x waitMs / their mean run time (at least one each). Unbounded while a
   * bound has no lease yet: the jobs wait for it (at most waitMs), none is deferred on a guess.
   */
  private servedWithin(states: KeyState[], now: number): number {
    let n = Infinity;
    for (const st of states) {
      const r = st.bounds.r;
      const c = st.bounds.c;
      if ((r && r.validUntil === 0) || (c && c.validUntil === 0)) return Infinity;
      if (r) n = Math.min(n, Math.max(1, Math.floor((this.share(r, now) * this.s.waitMs) / 1_000)));
      if (c) n = Math.min(n, Math.max(1, Math.floor(this.share(c, now) * Math.max(1, this.s.waitMs / Math.max(1, st.runMs ?? FIRST_RUN_MS)))));
    }
    return n;
  }

  /** Whether some bound of these keys has never had a lease (the caller asks for one at once). */
  unleased(keys: string[]): boolean {
    return keys.some((k) => {
      const b = this.keys.get(k)?.bounds;
      return (b?.c?.validUntil ?? 1) === 0 || (b?.r?.validUntil ?? 1) === 0;
    });
  }

  /** The job is to be deferred: its keys' calendar steps (the caller reserves its places). */
  private defer(states: KeyState[], now: number): GateAnswer {
    for (const st of states) st.deferredAt.push(now);
    return { go: false, calendar: states.map((st) => ({ key: st.key, stepMs: this.step(st) })) };
  }

  /** The time the limit takes per call, cluster-wide: 1 s over the rate, the mean run time over the calls at once (the longer). */
  private step(st: KeyState): number {
    let ms = 0;
    if (st.bounds.r) ms = Math.max(ms, 1_000 / st.bounds.r.limit);
    if (st.bounds.c) ms = Math.max(ms, (st.runMs ?? FIRST_RUN_MS) / st.bounds.c.limit);
    return ms;
  }

  /**
   * The permits this executor may expect while it has work: its lease's, or its equal share of
   * the limit if more (a lease sized for the first few jobs grows at the next renewal; one held
   * by another executor shrinks to its share). At least 1.
   */
  private share(b: BoundState, now: number): number {
    return Math.max(1, this.permits(b, now), Math.min(b.fair, b.limit));
  }

  /** Lets waiting jobs go, oldest first per key, while their keys have free permits. */
  private pump(now: number): void {
    for (const st of this.keys.values()) {
      while (st.waiting.length > 0) {
        const w = st.waiting[0]!;
        const states = w.keys.map((k) => this.state(k, now));
        if (!this.free(states, now)) break;
        st.waiting.shift();
        this.waitingJobs--;
        this.take(states, now);
        w.answer({ go: true, at: now });
      }
    }
  }
}
