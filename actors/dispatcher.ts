/**
 * The dispatcher: one per scheduler process, the single owner of the process's fair order
 * (one FairQueue over every owned shard) and of its start window (StartWindow). Shard actors
 * offer the jobs they load; the dispatcher takes them in fair order, marks them `scheduled`
 * (one request per shard, fenced by the shard's epoch) and publishes each at its due time.
 * All I/O and time are injected (DispatchIo, Clock), so a simulation drives this same code.
 *
 * Invariants:
 * - jobs leave in the queue's fair order; a job due now leaves only while the window has room
 *   (published-and-unstarted plus due-and-not-yet-published < window) and a batch slot is free.
 *   A job popped ahead of its due time (premark, within the early budget) is published at the
 *   end of its due time's slot (at most publishSlotMs late), never before, and needs no batch
 *   slot;
 * - when the next job in fair order is due and the window is full, nothing leaves: a later
 *   user's job does not overtake it, so the window decides how much, the fair order who;
 * - a shard's jobs are dispatched only while the dispatcher holds the shard (addShard ..
 *   removeShard), and removeShard resolves only after every mark and publish started for the
 *   shard has finished, so the next owner's fence bump follows them;
 * - a mark that fails (not fenced) gives its jobs back to the shard actor's loading (they are
 *   still waiting in the database); a fenced mark hands the shard back to ownership;
 * - popped jobs are counted against the window or the early budget by job id until published
 *   or given up (a row that changed meanwhile cannot leave a count behind), and a popped job
 *   that does not leave (cancelled or moved) is refunded its turn;
 * - "due" is judged on the database's clock as estimated from loads (observeDbClock);
 * - in a cluster (setPeers), the window is this process's share of the cluster's and its users'
 *   weights are scaled by the part of their demand it holds (actors/cluster-share.ts); jobs on
 *   time go to the on-time lane of partitions, a backlog to the other (lanes);
 * - a capped user (limitOf finite: max_running, USER_MAX_RUNNING; 0 while paused) has at most its
 *   limit of jobs dispatched and not finished, cluster-wide: its jobs in flight as last counted
 *   (setInFlight, a count sent at a known time), plus its jobs marked since, plus those popped
 *   and not yet published, never exceed this process's part of the room (capPart). A user with
 *   no room is parked in the queue (out of the fair order, its jobs waiting here, not in Kafka or
 *   an executor slot) and unparked by the count that shows room again;
 * - a saturated user (the executors report jobs of it waiting for a slot: it holds its share of
 *   them, actors/slots.ts) whose next job the full window holds back is passed over for this
 *   batch, keeping its place in the order, and its jobs waiting at the executors (this process's
 *   part) stop counting against the window for the users behind it that have nothing out: they
 *   wait for its own slots, and must not hold up a quiet user's job, which would start at once.
 *   Its own jobs go only when the window has room without them, so its jobs waiting at the
 *   executors stay within the window;
 */
import { capPart, clusterShare, type ClusterShare, type DemandReport } from "./cluster-share.ts";
import { FairQueue, sanitizeWeight, type FairItem } from "./fair-queue.ts";
import { StartWindow, type Commit, type Placement, type WindowSettings } from "./start-window.ts";

export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(id: unknown): void;
}

/** A job the database marked `scheduled`, with whatever its publication needs. */
export interface Marked {
  id: bigint;
  shard: number;
  dueAt: number;
}

export interface MarkRequest {
  shard: number;
  epoch: string;
  jobs: FairItem[];
}

export type MarkOutcome<M extends Marked> =
  | { kind: "marked"; rows: M[] }
  | { kind: "fenced"; current: string | null }
  | { kind: "failed"; error: unknown };

export interface DispatchIo<M extends Marked> {
  /** Marks each request's jobs that are still waiting; one outcome per request, in order. */
  mark(reqs: MarkRequest[]): Promise<MarkOutcome<M>[]>;
  /**
   * Publishes marked jobs; resolves with where each message landed. On failure the jobs go back
   * to waiting, then it throws. `onTime`: the jobs were marked ahead and are published at their
   * due time, so their publication must not wait behind a backlog's; `partitions`: where their
   * messages go (spread over them in turn).
   */
  publish(jobs: M[], onTime: boolean, partitions: number[]): Promise<Placement[]>;
}

export interface DispatcherHooks {
  fenced(shard: number, current: string | null): void;
  markFailed(shard: number, error: unknown): void;
  publishFailed(jobs: number, error: unknown): void;
  /** Some user's queued jobs from this shard fell below the low-water mark. */
  refill(shard: number): void;
  /** A user's weight (job_weight), as last read. */
  weightOf(userId: string): number;
  /** Jobs of the user that may be dispatched and not finished at once, cluster-wide (Infinity: no cap; 0: paused). */
  limitOf(userId: string): number;
  /** The shard's last load of the user found more rows than it took (the database holds more). */
  hasMore(shard: number, userId: string): boolean;
  /** (shard, user) pairs the shard actors know to have waiting jobs. */
  knownPairs(): number;
}

export interface DispatcherSettings {
  /** Jobs per mark request batch at most; while batches are under way, at least batchMin due jobs. */
  batchMax: number;
  batchMin: number;
  /** Mark batches under way at once at most. */
  batchesInFlight: number;
  /** Jobs are marked up to this much before their due time and published at it... */
  premarkMs: number;
  /** ...in one batch per this interval at most (a steady stream marks in tens of jobs, not one by one). */
  premarkEveryMs: number;
  /** Jobs due within one slot of this length are published together, at its end. */
  publishSlotMs: number;
  /** Partitions of the due topic (KAFKA_PARTITIONS): split into an on-time lane and a backlog lane. */
  partitions: number;
  /** Queued jobs per (shard, user) a load tops up to, at most (see stocking). */
  userTarget: number;
  /** Jobs the fair queue holds at most, whatever the number of users or the backlog's size. */
  maxQueued: number;
  defaultWeight: number;
  window: WindowSettings;
}

export class Dispatcher<M extends Marked> {
  readonly queue: FairQueue<FairItem>;
  readonly window: StartWindow;
  private readonly lanes: Lanes;
  private epochs = new Map<number, string>();
  /** Marks and publishes under way, per shard. */
  private work = new Map<number, Set<Promise<unknown>>>();
  /**
   * Jobs popped and not yet published (or given up), by id, with what they were counted as:
   * released by id, so a row whose due time changed meanwhile cannot leave a count behind.
   */
  private held = new Map<bigint, { due: boolean; dueAt: number; userId: string }>();
  /** Of those, per user. */
  private heldByUser = new Map<string, number>();
  /** Capped users' jobs dispatched and not finished, cluster-wide, as last counted (setInFlight)... */
  private counted = new Map<string, number>();
  /** ...and their jobs marked by this process since that count was sent (it may not have seen them), per user. */
  private marks: { at: number; userId: string }[] = [];
  private markedSince = new Map<string, number>();
  /** Users with jobs waiting for an executor slot, cluster-wide, as the executors last reported. */
  private saturated = new Map<string, number>();
  /** Users' mean run times (ms), as the executors last reported them. */
  private runMs = new Map<string, number>();
  /** Of those, popped while due: they count against the window. */
  private pendingDue = 0;
  /** Of those, popped before their due time (premark), by due time. */
  private pendingEarly = 0;
  private earlyByDue = new Map<number, number>();
  /** The cluster's split (null: alone, or no reports: this process's own window and weights). */
  private cluster: ClusterShare | null = null;
  /** Recent readings of (database clock - this clock), ms, with their round trips. */
  private clockSamples: { at: number; rtt: number; offset: number }[] = [];
  private clockOffset = 0;
  private batches = 0;
  private timer: unknown = null;
  private timerAt = Infinity;
  private stopped = false;
  private lastEarlyAt = -Infinity;
  /** Rows marked ahead, waiting for the end of their due time's slot, by that time. */
  private slots = new Map<number, Slot<M>>();
  /**
   * Users per shard a refill was asked for whose shard's loads have not brought jobs since
   * (asked once, not per pop). Per user: a shard declines a refill for a user with no more rows,
   * and its other users must still be able to ask when they run low.
   */
  private refillAsked = new Map<number, Set<string>>();

  constructor(
    private readonly io: DispatchIo<M>,
    private readonly hooks: DispatcherHooks,
    private readonly s: DispatcherSettings,
    private readonly clock: Clock,
  ) {
    this.queue = new FairQueue((userId) => this.effectiveWeight(userId), s.defaultWeight, (userId) => this.costOf(userId));
    this.window = new StartWindow(s.window);
    this.lanes = lanes(s.partitions);
  }

  /**
   * The database's clock, as well as this process can tell (see observeDbClock). Every "is it due" decision uses this, so a process whose clock runs ahead
   * does not dispatch early (and the executor's claim refuses an early run anyway).
   */
  now(): number {
    return this.clock.now() + this.clockOffset;
  }

  /**
   * A statement read the database's clock (`dbNow`) between `sentAt` and `answeredAt` (this
   * process's clock). The offset is taken from the reading with the shortest round trip of the
   * last CLOCK_MEMORY_MS, at its midpoint (as NTP does): off by at most half that round trip,
   * well under the time a due message takes to reach an executor's claim, which refuses an
   * early run whatever this says.
   */
  observeDbClock(dbNow: number, sentAt: number, answeredAt: number): void {
    const keep = answeredAt - CLOCK_MEMORY_MS;
    this.clockSamples.push({ at: answeredAt, rtt: answeredAt - sentAt, offset: dbNow - (sentAt + answeredAt) / 2 });
    while (this.clockSamples.length > 1 && this.clockSamples[0]!.at < keep) this.clockSamples.shift();
    let best = this.clockSamples[0]!;
    for (const c of this.clockSamples) if (c.rtt <= best.rtt) best = c;
    this.clockOffset = best.offset;
  }

  /** The weight the fair order uses: the user's, times the part of its cluster-wide demand held here. */
  private effectiveWeight(userId: string): number {
    const w = sanitizeWeight(this.hooks.weightOf(userId), this.s.defaultWeight);
    return w * (this.cluster?.factors.get(userId) ?? 1);
  }

  /**
   * This process's demand, for the other processes (actors/cluster-share.ts): users with work due
   * by the next report (`aheadMs` from now), so a burst loaded ahead is split before it is due.
   */
  demandReport(member: string, aheadMs: number): DemandReport {
    this.queue.prune();
    // A shard whose loads found more of the user than they took stands for a backlog of
    // unknown depth (DEEP_STOCK times the loads' target), one whose rows ran out for what is
    // left: the user's demand moves to the processes that still have a backlog of it before
    // this one runs out.
    const deep = this.stocking().lowWater * DEEP_STOCK;
    const demand = this.queue.demand(this.now() + aheadMs, (shard, userId, n) => (this.hooks.hasMore(shard, userId) ? Math.max(n, deep) : n));
    const r: DemandReport = { member, rate: this.window.meanRate(this.clock.now()), spanMs: this.window.spanMs, userIds: [], weights: [], queued: [], limitedUserIds: [], limitedQueued: [] };
    for (const [u, n] of demand) {
      r.userIds.push(u);
      r.weights.push(sanitizeWeight(this.hooks.weightOf(u), this.s.defaultWeight));
      r.queued.push(n);
    }
    // Every capped user queued here (parked or not), with its jobs queued here as they are (not
    // the deep-stock demand above): every process counts them alike, so the parts of a user's
    // room they take add up to at most the room.
    for (const u of this.cappedUsers()) {
      r.limitedUserIds.push(u);
      r.limitedQueued.push(this.queue.queuedOf(u));
    }
    return r;
  }

  /** The other processes' reports (null: none could be read): re-splits the window and weights. */
  setPeers(mine: DemandReport, others: DemandReport[] | null): ClusterShare | null {
    this.cluster = others === null || others.length === 0 ? null : clusterShare(mine, others);
    this.unparkWithRoom();
    this.pump();
    return this.cluster;
  }

  /** Users with jobs queued here whose jobs in flight must be counted (they have a finite cap). */
  cappedUsers(): string[] {
    const out: string[] = [];
    for (const u of this.queue.userIds()) if (this.hooks.limitOf(u) !== Infinity) out.push(u);
    return out;
  }

  /**
   * Capped users' jobs dispatched and not finished (scheduled or running), cluster-wide, counted
   * by a statement sent at `sentAt` (this process's clock): every mark that ended before it is
   * in the count; those that ended after may not be, so they stay counted here.
   */
  setInFlight(counts: Map<string, number>, sentAt: number): void {
    this.counted = counts;
    this.marks = this.marks.filter((m) => m.at >= sentAt);
    this.markedSince = new Map();
    for (const m of this.marks) this.markedSince.set(m.userId, (this.markedSince.get(m.userId) ?? 0) + 1);
    this.unparkWithRoom();
    this.pump();
  }

  /**
   * What a turn of the user costs in the fair order: its mean run time over REFERENCE_RUN_MS (at
   * least 1, at most MAX_COST), as the executors last reported it; 1 for a user not reported.
   * Turns are then shares of executor time: with users contending, each holds slots in
   * proportion to its weight (actors/slots.ts shares them the same way), and a user whose jobs
   * take 100x longer gets 100x fewer starts. Jobs shorter than the reference all cost 1, so when
   * every job costs about the same, the order is the start-count order it was.
   */
  costOf(userId: string): number {
    const ms = this.runMs.get(userId);
    return ms === undefined ? 1 : Math.min(MAX_COST, Math.max(1, ms / REFERENCE_RUN_MS));
  }

  /**
   * The executors' report: saturated users (their jobs waiting for a slot, cluster-wide), and
   * users' mean run times (costOf).
   */
  setExecutorReport(waiting: Map<string, number>, runMs: Map<string, number> = new Map()): void {
    this.saturated = waiting;
    this.runMs = runMs;
    this.unparkWithRoom();
    this.pump();
  }

  /**
   * Of this process's jobs of a saturated user published and not started, those waiting for its
   * slots: its part of the user's jobs waiting at the executors, at most what it has out of it.
   */
  private stuckOf(userId: string): number {
    const part = this.cluster?.capParts.get(userId)?.part ?? 1;
    return Math.min(this.window.outstandingOf(userId), Math.ceil((this.saturated.get(userId) ?? 0) * part));
  }

  /**
   * Jobs of the user this process may still dispatch now (Infinity: no cap). A capped user not
   * counted yet, or (in a cluster) not in the last reports yet, has none until it is.
   */
  room(userId: string): number {
    const limit = this.hooks.limitOf(userId);
    if (limit === Infinity) return Infinity;
    const counted = this.counted.get(userId);
    if (limit <= 0 || counted === undefined) return 0;
    const free = limit - counted;
    const part = this.cluster ? (this.cluster.capParts.has(userId) ? capPart(free, this.cluster.capParts.get(userId)) : 0) : Math.max(0, free);
    return part - (this.markedSince.get(userId) ?? 0) - (this.heldByUser.get(userId) ?? 0);
  }

  /** Parked users, split by why: paused (limit 0) or at their cap; and their queued jobs. */
  parkedCounts(): { paused: number; capped: number; jobs: number } {
    const out = { paused: 0, capped: 0, jobs: 0 };
    for (const u of this.queue.parkedUsers()) {
      if (this.hooks.limitOf(u) <= 0) out.paused++;
      else out.capped++;
      out.jobs += this.queue.queuedOf(u);
    }
    return out;
  }

  /** Unparks users with room again (a cap raised, a pause lifted: no count needed for those). */
  reviewParked(): void {
    this.unparkWithRoom();
    this.pump();
  }

  private unparkWithRoom(): void {
    for (const u of this.queue.parkedUsers()) if (this.room(u) > 0) this.queue.unpark(u);
  }

  /**
   * The window this process may fill: alone, its own (start rate x span); in a cluster, its
   * share of the cluster's (cluster start rate x span), and at least one batch (or the whole
   * window, if smaller), so a process whose demand is new since the last report can still start
   * it.
   */
  windowSize(localNow: number): number {
    const c = this.cluster;
    if (!c) return this.window.size(localNow);
    const w = this.s.window;
    const total = Math.min(w.maxJobs, Math.max(w.minJobs, Math.ceil((c.rate * c.spanMs) / 1000)));
    return Math.max(Math.min(this.s.batchMin, total), Math.ceil(c.share * total));
  }

  /** The window's parts, for metrics; all zero when nothing is queued or out. */
  parts(): { outstanding: number; pendingDue: number; pendingEarly: number } {
    return { outstanding: this.window.outstanding, pendingDue: this.pendingDue, pendingEarly: this.pendingEarly };
  }

  /**
   * How the shard actors stock the queue: per (shard, user) up to `target` (userTarget, less when
   * many pairs share the maxQueued cap: cap / pairs, at least MIN_TARGET), a refill below
   * `lowWater` (half of it), and `room` jobs per load (what the cap leaves, split between the
   * owned shards, whose loads run at once). So memory and the per-second
   * walks stay bounded by maxQueued however many users have work.
   */
  stocking(): { target: number; lowWater: number; room: number; newUser: number } {
    const pairs = Math.max(this.queue.stockedPairs, this.hooks.knownPairs());
    const fair = Math.floor(this.s.maxQueued / Math.max(1, pairs));
    const target = Math.max(MIN_TARGET, Math.min(this.s.userTarget, fair));
    // Shards load concurrently: each may take its part of what is left.
    const room = Math.floor(Math.max(0, this.s.maxQueued - this.queue.size) / Math.max(1, this.epochs.size));
    // A user the shard has not loaded yet gets one job first: the shard learns its users as its
    // loads rotate through them, and a large first helping would fill the cap with the first
    // users it meets. The shard tops the users it just met up at once (shard.machine.ts).
    return { target, lowWater: Math.max(1, Math.floor(target / 2)), room, newUser: Math.min(target, NEW_USER_LOAD) };
  }

  /** Jobs that stopped waiting (cancelled, moved, or finished elsewhere): out of the order at once. */
  forget(ids: bigint[]): void {
    for (const id of ids) this.queue.remove(id);
    this.pump();
  }

  /** Every queued job of a user stopped waiting (all cancelled). */
  forgetUser(userId: string): void {
    this.queue.removeUser(userId);
    this.pump();
  }

  /**
   * Jobs due now that may still leave before the window is full. Jobs marked ahead whose due
   * time has come count as due: they are about to join the topic.
   */
  budget(now: number): number {
    let earlyDue = 0;
    for (const [at, n] of this.earlyByDue) if (at <= now) earlyDue += n;
    return this.windowSize(this.clock.now()) - this.window.outstanding - this.pendingDue - earlyDue;
  }

  /**
   * Jobs not yet due that may still be marked ahead of time: twice what the executors would
   * start during the premark interval at the measured rate, so a steady stream is always marked
   * ahead while a burst due at one future instant is not marked wholesale past the window.
   */
  earlyBudget(now: number): number {
    const allowed = Math.max(this.s.window.minJobs, Math.ceil((2 * this.window.rate(this.clock.now()) * this.s.premarkMs) / 1000));
    return allowed - this.pendingEarly;
  }

  /** Jobs dispatched and not yet started, including those being marked or waiting to be published. */
  get inFlight(): number {
    return this.window.outstanding + this.pendingDue + this.pendingEarly;
  }

  addShard(shard: number, epoch: string): void {
    this.epochs.set(shard, epoch);
  }

  /** Stops dispatching the shard's jobs; resolves once its marks and publishes have finished. */
  async removeShard(shard: number): Promise<void> {
    this.epochs.delete(shard);
    this.refillAsked.delete(shard);
    this.queue.removeShard(shard);
    for (let w = this.work.get(shard); w && w.size > 0; w = this.work.get(shard)) await Promise.allSettled([...w]);
    this.work.delete(shard);
  }

  owns(shard: number): boolean {
    return this.epochs.has(shard);
  }

  /** Jobs a shard actor loaded. Ignored for a shard no longer held. */
  offer(shard: number, jobs: FairItem[]): void {
    if (!this.epochs.has(shard)) return;
    for (const j of jobs) if (!this.held.has(j.id)) this.queue.push(j);
    if (jobs.length > 0) this.refillAsked.delete(shard);
    this.pump();
  }

  /** The executors' commits: frees the window for the jobs they started, and steers it. */
  observe(committed: Map<number, Commit>): number {
    const started = this.window.observe(committed, this.clock.now());
    this.pump();
    return started;
  }

  stop(): void {
    this.stopped = true;
    if (this.timer !== null) this.clock.clearTimeout(this.timer);
    this.timer = null;
  }

  /** Sends as many batches as the window, the queue and the in-flight limit allow. */
  pump(): void {
    if (this.stopped) return;
    const now = this.now();
    for (;;) {
      const next = this.queue.peek(now + this.s.premarkMs);
      if (!next) break;
      const due = next.dueAt <= now;
      // Due jobs wait for a batch slot; a job not yet due (marked ahead, published at its due
      // time) does not: it is what keeps a small user on time behind someone's backlog.
      const slot = this.batches < this.s.batchesInFlight;
      if (due && !slot) break;
      // While batches are under way, wait for room for a full message's worth of due jobs
      // rather than sending a trickle of tiny statements and messages (their completion pumps).
      if (due && this.batches > 0 && this.budget(now) < this.s.batchMin) {
        this.window.limited(this.clock.now());
        break;
      }
      const batch = this.take(now, !slot);
      if (batch.length === 0) break;
      this.batches++;
      void this.send(batch).finally(() => {
        this.batches--;
        this.pump();
      });
    }
    this.arm(now);
  }

  /**
   * Wakes up when the next job not yet due reaches its premark time (no sooner than
   * premarkEveryMs after the last early batch). Jobs already within it are waiting for room (the
   * window, the early budget or a batch slot), and whatever frees room pumps again: a start
   * observation or a finished batch.
   */
  private arm(now: number): void {
    const next = this.queue.nextDueAt();
    const ready = next === undefined ? Infinity : Math.max(next - this.s.premarkMs, this.lastEarlyAt + this.s.premarkEveryMs);
    const at = ready <= now ? Infinity : ready;
    if (at === this.timerAt) return;
    if (this.timer !== null) this.clock.clearTimeout(this.timer);
    this.timer = null;
    this.timerAt = at;
    if (at === Infinity) return;
    this.timer = this.clock.setTimeout(() => {
      this.timer = null;
      this.timerAt = Infinity;
      this.pump();
    }, at - now);
  }

  /** Pops the next batch in fair order; `earlyOnly`: stop at the first job already due. */
  private take(now: number, earlyOnly: boolean): { job: FairItem; due: boolean }[] {
    let budget = this.budget(now);
    let early = now - this.lastEarlyAt >= this.s.premarkEveryMs ? this.earlyBudget(now) : 0;
    const out: { job: FairItem; due: boolean }[] = [];
    const low = new Set<number>();
    const { lowWater } = this.stocking();
    /** Jobs of each user in this batch (held only once the batch is taken). */
    const taken = new Map<string, number>();
    /** Saturated users passed over in this batch (they keep their place: see setExecutorReport)... */
    const passed: string[] = [];
    /** ...and their jobs waiting for their slots, past which users with nothing out may go. */
    let lent = 0;
    while (out.length < this.s.batchMax) {
      const next = this.queue.peek(now + this.s.premarkMs);
      if (!next) break;
      if (next.dueAt <= now && budget <= 0 && !earlyOnly && this.saturated.has(next.userId)) {
        this.queue.park(next.userId);
        passed.push(next.userId);
        lent += this.stuckOf(next.userId);
        continue;
      }
      if (this.room(next.userId) - (taken.get(next.userId) ?? 0) <= 0) {
        // At its cap (or paused): out of the order until a count shows room (setInFlight).
        this.queue.park(next.userId);
        continue;
      }
      const due = next.dueAt <= now;
      if (due && budget <= 0 && !earlyOnly) this.window.limited(this.clock.now());
      // What saturated users' waiting jobs lend goes to users that have nothing out (whose jobs
      // start at once), never to a saturated one or one with a backlog of its own out.
      const idle = !this.saturated.has(next.userId) && this.window.outstandingOf(next.userId) + (this.heldByUser.get(next.userId) ?? 0) + (taken.get(next.userId) ?? 0) === 0;
      const room = budget + (idle ? lent : 0);
      if (due ? earlyOnly || room <= 0 : early <= 0) break;
      this.queue.pop(now + this.s.premarkMs);
      if (due && budget > 0) budget--;
      else if (due) lent--;
      else {
        early--;
        this.lastEarlyAt = now;
      }
      out.push({ job: next, due });
      taken.set(next.userId, (taken.get(next.userId) ?? 0) + 1);
      if (this.queue.stockOf(next.shard, next.userId) < lowWater && !this.refillAsked.get(next.shard)?.has(next.userId)) {
        const asked = this.refillAsked.get(next.shard) ?? new Set<string>();
        this.refillAsked.set(next.shard, asked.add(next.userId));
        low.add(next.shard);
      }
    }
    for (const u of passed) this.queue.unpark(u, true);
    for (const o of out) this.hold(o);
    for (const shard of low) this.hooks.refill(shard);
    return out;
  }

  private track(shard: number, p: Promise<unknown>): void {
    let set = this.work.get(shard);
    if (!set) this.work.set(shard, (set = new Set()));
    set.add(p);
    void p.finally(() => set!.delete(p)).catch(() => {});
  }

  private async send(batch: { job: FairItem; due: boolean }[]): Promise<void> {
    const byShard = new Map<number, FairItem[]>();
    for (const { job } of batch) {
      const list = byShard.get(job.shard);
      if (list) list.push(job);
      else byShard.set(job.shard, [job]);
    }
    const reqs: MarkRequest[] = [];
    for (const [shard, jobs] of byShard) {
      const epoch = this.epochs.get(shard);
      if (epoch === undefined) this.release(jobs.map((j) => j.id));
      else reqs.push({ shard, epoch, jobs });
    }
    if (reqs.length === 0) return;
    const marking = this.io.mark(reqs).catch((error: unknown) => reqs.map((): MarkOutcome<M> => ({ kind: "failed", error })));
    for (const r of reqs) this.track(r.shard, marking);
    const outcomes = await marking;
    // Every shard's marked rows publish together (a message carries jobs of any shard).
    const rows: M[] = [];
    reqs.forEach((req, i) => {
      const o = outcomes[i]!;
      if (o.kind !== "marked") {
        this.release(req.jobs.map((j) => j.id));
        if (o.kind === "fenced") this.hooks.fenced(req.shard, o.current);
        else this.hooks.markFailed(req.shard, o.error);
        return;
      }
      const marked = new Set(o.rows.map((r) => r.id));
      // Not marked: the row stopped waiting (cancelled) or moved (rescheduled) since it was
      // loaded. It did not leave, so it costs its user nothing.
      const stale = req.jobs.filter((j) => !marked.has(j.id));
      for (const j of stale) this.queue.refund(j.userId);
      this.release(stale.map((j) => j.id));
      rows.push(...o.rows);
      this.noteMarks(req.jobs.filter((j) => marked.has(j.id)));
    });
    this.schedulePublishes(rows);
  }

  /** Capped users' jobs just marked: they count against their caps until a count sent after now. */
  private noteMarks(jobs: FairItem[]): void {
    const at = this.clock.now();
    for (const j of jobs) {
      if (this.hooks.limitOf(j.userId) === Infinity) continue;
      this.marks.push({ at, userId: j.userId });
      this.markedSince.set(j.userId, (this.markedSince.get(j.userId) ?? 0) + 1);
    }
    // Without counts (none sent lately), the oldest marks stop mattering: they are long counted.
    while (this.marks.length > 0 && this.marks[0]!.at < at - MARKS_MEMORY_MS) this.marks.shift();
  }

  /** Counts a popped job against the window (due) or the early budget (not yet due). */
  private hold(it: { job: FairItem; due: boolean }): void {
    this.held.set(it.job.id, { due: it.due, dueAt: it.job.dueAt, userId: it.job.userId });
    this.heldByUser.set(it.job.userId, (this.heldByUser.get(it.job.userId) ?? 0) + 1);
    if (it.due) this.pendingDue++;
    else {
      this.pendingEarly++;
      this.earlyByDue.set(it.job.dueAt, (this.earlyByDue.get(it.job.dueAt) ?? 0) + 1);
    }
  }

  /** Popped jobs that will not be published (not marked), or whose publication ended. */
  private release(ids: bigint[]): void {
    for (const id of ids) {
      const h = this.held.get(id);
      if (!h) continue;
      this.held.delete(id);
      const byUser = this.heldByUser.get(h.userId)! - 1;
      if (byUser > 0) this.heldByUser.set(h.userId, byUser);
      else this.heldByUser.delete(h.userId);
      if (h.due) this.pendingDue--;
      else {
        this.pendingEarly--;
        const n = this.earlyByDue.get(h.dueAt)! - 1;
        if (n > 0) this.earlyByDue.set(h.dueAt, n);
        else this.earlyByDue.delete(h.dueAt);
      }
    }
  }

  /**
   * Publishes marked rows: those already due at once, in one request; the others at the end of
   * their due time's slot (publishSlotMs), together with every other row due in that slot, so a
   * steady stream leaves in one message per slot rather than one per millisecond (each message
   * costs a produce, a fetch, a claim and a commit). A job is published at most one slot after
   * its due time and never before it (by the database's clock as far as this process knows it).
   */
  private schedulePublishes(rows: M[]): void {
    const now = this.now();
    const ready = rows.filter((r) => r.dueAt <= now);
    if (ready.length > 0) {
      const publishing = this.publishGroup(ready, false);
      for (const shard of new Set(ready.map((r) => r.shard))) this.track(shard, publishing);
    }
    for (const r of rows) {
      if (r.dueAt <= now) continue;
      const at = Math.ceil(r.dueAt / this.s.publishSlotMs) * this.s.publishSlotMs;
      let slot = this.slots.get(at);
      if (!slot) {
        const s: Slot<M> = { rows: [], publishing: Promise.resolve() };
        s.publishing = new Promise<void>((go) => this.clock.setTimeout(go, at - now)).then(() => {
          this.slots.delete(at);
          return this.publishGroup(s.rows, true);
        });
        this.slots.set(at, (slot = s));
      }
      slot.rows.push(r);
      this.track(r.shard, slot.publishing);
    }
  }

  /** Publishes one group; `onTime`: at its due time, to the partition with the least unstarted work. */
  private publishGroup(rows: M[], onTime: boolean): Promise<void> {
    return this.io
      .publish(rows, onTime, onTime ? [this.window.leastLoaded(this.lanes.onTime)] : this.lanes.backlog)
      .then(
        (placements) => this.window.published(placements, this.clock.now()),
        (error: unknown) => this.hooks.publishFailed(rows.length, error),
      )
      .finally(() => {
        this.release(rows.map((r) => r.id));
        this.pump();
      });
  }
}

interface Slot<M> {
  rows: M[];
  publishing: Promise<void>;
}

/** A turn costs 1 for a job that runs this long or less (costOf). */
const REFERENCE_RUN_MS = 10;
/** A turn costs at most this many (a job that hangs until a long timeout is not charged its whole timeout). */
const MAX_COST = 10_000;

/** A capped user's marks are kept this long at most without a count that covers them. */
const MARKS_MEMORY_MS = 60_000;

/** A (shard, user) is stocked with at least this many jobs, however many pairs share the cap. */
const MIN_TARGET = 1;

/** Jobs a load takes of a user the shard has not loaded before (see stocking). */
const NEW_USER_LOAD = 1;

/** A shard's stock at or above the low-water mark counts as this many times it (see demandReport). */
const DEEP_STOCK = 10;

/**
 * The due topic's partitions in two lanes. Jobs published at their due time (marked ahead: a
 * job on time, of a user with no backlog here) go to the on-time lane, the least loaded of its
 * partitions; a backlog's jobs, dispatched as the window allows, to the backlog lane. The
 * executors take every partition at once, so a job on time waits behind other jobs on time
 * only, never behind a burst's FIFO: the window (and the fair order) governs the backlog lane,
 * and a small user behind a flood starts within the lane's wait. A quarter of the partitions
 * (at least one) are the on-time lane; with a single partition both lanes share it.
 */
export interface Lanes {
  onTime: number[];
  backlog: number[];
}

export function lanes(partitions: number): Lanes {
  const all = Array.from({ length: Math.max(1, partitions) }, (_, p) => p);
  if (all.length === 1) return { onTime: all, backlog: all };
  const onTime = Math.max(1, Math.floor(all.length / 4));
  return { onTime: all.slice(0, onTime), backlog: all.slice(onTime) };
}

/** How long a reading of the database's clock counts (a clock that steps is followed within it). */
const CLOCK_MEMORY_MS = 10_000;
