/**
 * An executor's run slots, shared between users by occupancy: who holds a slot, not who started
 * the most jobs. Pure: no I/O, time passed in.
 *
 * A job waits here (unclaimed) until it gets a slot, and holds it from its claim to its outcome.
 * When a slot is free, it goes to the waiting user holding the fewest slots per unit of weight
 * (held / weight; ties to the longest waiting), so contended slots are split in proportion to
 * weight however long each user's jobs take: a user whose jobs take 100x longer holds its share
 * of slots and starts 100x fewer jobs. Work-conserving, but for a guard:
 *
 * - a user is active while it holds or waits for a slot here, and for `activeMs` after;
 * - every active user u has a guard of g(u) = min(reserve, floor(capacity x w(u) / (2 W)))
 *   slots (W: the active users' weights), at most half its weighted share: while it holds fewer,
 *   its missing ones stay free for it (`reserved`); and min(reserve, 1 % of capacity) more stay
 *   free for a user not active yet (a newcomer);
 * - a user holding fewer than its guard takes any free slot; a user at or above it takes one
 *   only if the others' reserves and a newcomer's stay free afterwards.
 *
 * Under pressure (the process cannot keep up: setLimit), users at or above their guard share
 * `limit` slots instead of the capacity; those below it still take any free slot. So a tenant
 * whose calls cost the process more than it has gives back first, not a quiet user.
 *
 * So one tenant can never take the whole pool: a user whose jobs are quick, or new, finds a free
 * slot at once even while another's endpoint hangs and holds every other slot until its timeout,
 * and the pool gives up at most about 2 x reserve slots to idleness. The guards never bend the
 * weights among backlogged users by more than half a share, and vanish in small pools or with
 * many users.
 */
export interface SlotSettings {
  capacity: number;
  /** Slots kept free per active user below it (and for a newcomer). */
  reserve: number;
  /** A user stays active this long after it last held or waited for a slot. */
  activeMs: number;
}

interface Tenant {
  id: string;
  weight: number;
  held: number;
  /** Its guard (see the header). */
  guard: number;
  /** Mean run time of its recent runs (ms, an exponential average; null: none yet). */
  runMs: number | null;
  /** Waiting jobs, oldest first (from `head`), each with the order it arrived in. */
  waiting: { seq: number; go: (ok: boolean) => void }[];
  head: number;
  lastSeen: number;
}

/** Weight of a new run in a user's mean run time. */
const RUN_EWMA = 0.05;

export class FairSlots {
  private tenants = new Map<string, Tenant>();
  private waitingTenants = new Set<Tenant>();
  private used = 0;
  private waitingJobs = 0;
  /** Kept free for a user not active yet. */
  private newcomer: number;
  /** Σ over active users of max(0, guard - held). */
  private reserved = 0;
  private seq = 0;
  /** Slots users at or above their guard may fill (the capacity, less under pressure). */
  private limit: number;
  private closed = false;
  private expiredAt = -Infinity;

  constructor(private readonly s: SlotSettings) {
    this.newcomer = Math.min(s.reserve, Math.floor(s.capacity / 100));
    this.limit = s.capacity;
  }

  /** The slots users at or above their guard may fill (see the header); at most the capacity. */
  setLimit(limit: number): void {
    const raised = limit > this.limit;
    this.limit = Math.max(0, Math.min(this.s.capacity, Math.floor(limit)));
    if (raised) this.grant();
  }

  get currentLimit(): number {
    return this.limit;
  }

  get inUse(): number {
    return this.used;
  }

  /** Jobs waiting for a slot. */
  get waiting(): number {
    return this.waitingJobs;
  }

  get activeUsers(): number {
    return this.tenants.size;
  }

  heldBy(userId: string): number {
    return this.tenants.get(userId)?.held ?? 0;
  }

  /** Users with jobs waiting for a slot, and how many (the saturated users). */
  waitingByUser(): Map<string, number> {
    const out = new Map<string, number>();
    for (const t of this.waitingTenants) out.set(t.id, t.waiting.length - t.head);
    return out;
  }

  /** A run of the user's took `ms` (its handler): feeds its mean run time. */
  noteRun(userId: string, ms: number): void {
    const t = this.tenants.get(userId);
    if (!t) return;
    t.runMs = t.runMs === null ? ms : t.runMs + RUN_EWMA * (ms - t.runMs);
  }

  /** Active users' mean run times (ms), for those with runs. */
  runTimes(): Map<string, number> {
    const out = new Map<string, number>();
    for (const t of this.tenants.values()) if (t.runMs !== null) out.set(t.id, t.runMs);
    return out;
  }

  /**
   * The noisy users: those holding more slots than their weighted share of the capacity
   * (capacity x w / W over the active users) while another user waits for one. Each with what
   * it holds and its share. Work-conserving sharing lends idle slots, so holding more is fine
   * until someone else waits: then it is what the others pay for.
   */
  noisy(): { user: string; held: number; share: number }[] {
    let W = 0;
    for (const t of this.tenants.values()) W += t.weight;
    const out: { user: string; held: number; share: number }[] = [];
    for (const t of this.tenants.values()) {
      const share = (this.s.capacity * t.weight) / W;
      if (t.held <= share) continue;
      let othersWait = false;
      for (const o of this.waitingTenants) if (o !== t) othersWait = true;
      if (othersWait) out.push({ user: t.id, held: t.held, share });
    }
    return out;
  }

  /** Slots held per user, for metrics. */
  holders(): Map<string, number> {
    const out = new Map<string, number>();
    for (const t of this.tenants.values()) if (t.held > 0) out.set(t.id, t.held);
    return out;
  }

  /** Resolves true once the user holds one more slot (false: closed, the job must not run). */
  acquire(userId: string, weight: number, now: number): Promise<boolean> {
    if (this.closed) return Promise.resolve(false);
    const t = this.tenant(userId, weight, now);
    if (t.waiting.length === t.head && this.may(t)) {
      this.take(t);
      return Promise.resolve(true);
    }
    return new Promise<boolean>((go) => {
      t.waiting.push({ seq: this.seq++, go });
      this.waitingJobs++;
      this.waitingTenants.add(t);
    });
  }

  /** The user's job ended: its slot goes to whoever is next. */
  release(userId: string, now: number): void {
    const t = this.tenants.get(userId);
    if (!t || t.held === 0) throw new Error(`release without a slot held by user ${userId}`);
    if (t.held <= t.guard) this.reserved++;
    t.held--;
    this.used--;
    t.lastSeen = now;
    this.expire(now);
    this.grant();
  }

  /** Refuses every waiting job (they must not run: the executor is stopping) and any later. */
  close(): void {
    this.closed = true;
    for (const t of this.waitingTenants) {
      for (let i = t.head; i < t.waiting.length; i++) t.waiting[i]!.go(false);
      this.waitingJobs -= t.waiting.length - t.head;
      t.waiting = [];
      t.head = 0;
    }
    this.waitingTenants.clear();
  }

  /** Gives free slots to waiting users, fewest held per weight first, while any may take one. */
  private grant(): void {
    while (this.used < this.s.capacity && this.waitingTenants.size > 0) {
      let best: Tenant | null = null;
      for (const t of this.waitingTenants) {
        if (!this.may(t)) continue;
        if (!best) best = t;
        else {
          const d = t.held / t.weight - best.held / best.weight;
          if (d < 0 || (d === 0 && t.waiting[t.head]!.seq < best.waiting[best.head]!.seq)) best = t;
        }
      }
      if (!best) return;
      const w = best.waiting[best.head++]!;
      this.waitingJobs--;
      if (best.head === best.waiting.length) {
        best.waiting = [];
        best.head = 0;
        this.waitingTenants.delete(best);
      }
      this.take(best);
      w.go(true);
    }
  }

  /** Whether `t` may take a slot now (see the header). */
  private may(t: Tenant): boolean {
    const free = this.s.capacity - this.used;
    if (free < 1) return false;
    if (t.held < t.guard) return true;
    return Math.min(free, this.limit - this.used) - 1 >= this.reserved + this.newcomer;
  }

  private take(t: Tenant): void {
    if (t.held < t.guard) this.reserved--;
    t.held++;
    this.used++;
  }

  private tenant(userId: string, weight: number, now: number): Tenant {
    const w = weight > 0 && Number.isFinite(weight) ? weight : 1;
    let t = this.tenants.get(userId);
    if (t) {
      t.lastSeen = now;
      if (t.weight !== w) {
        t.weight = w;
        this.reguard();
      }
    } else {
      t = { id: userId, weight: w, held: 0, guard: 0, runMs: null, waiting: [], head: 0, lastSeen: now };
      this.tenants.set(userId, t);
      this.reguard();
    }
    this.expire(now);
    return t;
  }

  /** Forgets users idle for activeMs (at most once per second of `now`). */
  private expire(now: number): void {
    if (now - this.expiredAt < 1_000) return;
    this.expiredAt = now;
    let changed = false;
    for (const t of this.tenants.values()) {
      if (t.held === 0 && t.head === t.waiting.length && now - t.lastSeen > this.s.activeMs) {
        this.tenants.delete(t.id);
        changed = true;
      }
    }
    if (changed) this.reguard();
  }

  /** Recomputes the guards and the reserve after the active users or their weights changed. */
  private reguard(): void {
    let W = 0;
    for (const t of this.tenants.values()) W += t.weight;
    this.reserved = 0;
    for (const t of this.tenants.values()) {
      t.guard = Math.min(this.s.reserve, Math.floor((this.s.capacity * t.weight) / (2 * W)));
      this.reserved += Math.max(0, t.guard - t.held);
    }
    this.grant();
  }
}
