/**
 * The executor: a member of the Kafka consumer group on the due topic. For every job of every
 * message it runs a job-run machine (actors/job-run.machine.ts): claim, handler, outcome.
 *
 * Consumption is decoupled from completion. Once a job's claim is durable (scheduled -> running
 * with a deadline) the database owns it: if this process dies, the rescuer re-runs the job after
 * its deadline. So a message's offset may be committed as soon as the claims of its jobs are
 * durable, and fetching never waits for handlers: a batch's messages are taken (each waiting
 * only while its partition may read ahead: see slots below), their claims go out, and the next fetch
 * follows. Handlers and outcomes run beside it. Invariants:
 * - a message's offset is never committed before its jobs' claims are durable: commits cover
 *   the contiguous prefix of such messages per partition (actors/offset-tracker.ts), one request
 *   at a time for every partition that moved, as soon as the last one is answered (at least
 *   T.commitGapMs apart): the schedulers see starts through these commits;
 * - a job whose claim fails (its database is out) is set aside here and claimed once that
 *   database answers again (takeJob), and its message counts as taken: the partition's
 *   offsets move on, so a database out delays only the jobs on it. Should this process die
 *   meanwhile, such a job is still `scheduled` with its deadline: the rescuer puts it back to
 *   waiting unrun (SCHEDULED_DEADLINE), and it is dispatched again;
 * - a duplicate message never runs a job twice: the claim is guarded on (status scheduled,
 *   attempt - 1), so only one copy of a message claims a run;
 * - no job starts before its due time by the database's clock: a message that comes earlier
 *   claims nothing, and its job is back to waiting, dispatched again at its due time (`claim`);
 * - slots bound the runs in flight, claims included, and are shared between users by occupancy
 *   (actors/slots.ts): a job is claimed only once it holds a slot, so a tenant whose endpoint is
 *   slow or hangs holds its share of the slots, not the pool, and another's job is claimed as
 *   soon as a slot is free, not behind the slow tenant's messages;
 * - a job whose target host is limited (actors/target-limits.ts) takes its permits before its
 *   slot and its claim: it waits briefly, or is deferred (back to waiting in the database, unrun,
 *   its attempt kept), so waiting for a limit holds no slot and spends no attempt; the executors
 *   share each limit by leases that never add up to more than it (src/executor/target-leases.ts);
 * - a partition reads ahead of its waiting jobs up to T.readAheadSlots x the slots, so a message behind a
 *   slow tenant's is claimed as soon as its user may take a slot; past that the partition is
 *   held (not fetched) while the others go on: onBatch never waits, so one partition's backlog
 *   never stalls another's fetch, and slow handlers never cost the group membership.
 */
import { context, trace } from "@opentelemetry/api";
import { createActor } from "xstate";
import { jobRunLogic, type RunEvent } from "../../actors/job-run.machine.ts";
import { OffsetTracker } from "../../actors/offset-tracker.ts";
import { FairSlots } from "../../actors/slots.ts";
import { processName } from "../ids.ts";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { deleteSlotReport, writeSlotReport } from "./slot-report.ts";
import { TargetGate, type CalendarSlot, type GateAnswer } from "../../actors/target-limits.ts";
import { dropLeases, loadTargetLimits, renewLeases, reserveCalendar } from "./target-leases.ts";
import type { Decision, RunResult } from "../../actors/outcome.ts";
import { TUNING, type Config } from "../config.ts";
import { isUnavailable, retryRolledBack, type Databases } from "../db/databases.ts";
import { decodeDue, type DueEntry } from "../due-message.ts";
import type { CommitEntry, KafkaBus, PartitionBatch, Publisher, Subscription } from "../kafka.ts";
import { log } from "../log.ts";
import { metrics } from "../metrics.ts";
import { dbSpanOptions, extractContext, failed, messagingSpanOptions, traced, tracer, tracingEnabled } from "../telemetry.ts";
import { Batcher } from "../batcher.ts";
import { deadLetterMessage } from "../dead-letter.ts";
import { ShortCache, UserStore } from "../users/user-store.ts";
import { runJob, type HandlerSettings } from "./handlers.ts";
import { claim, defer, record, REFUSED_EARLY, type Claim, type ClaimRequest, type DeferRequest, type Outcome } from "../jobs/transitions.ts";
import type { ClaimedJob } from "../jobs/job-row.ts";

/** Fixed tuning (src/config.ts): commits go out one at a time, at least commitGapMs apart. */
const T = TUNING.executor;
const runLogic = jobRunLogic<ClaimedJob>();
/** Users shown in executor_user_running_jobs. */
const TOP_USERS = 10;

async function timed<T>(step: string, fn: () => Promise<T>): Promise<T> {
  const t0 = performance.now();
  try {
    return await fn();
  } finally {
    metrics.executorStep.observe({ step }, (performance.now() - t0) / 1000);
  }
}

export class Executor {
  private sub: Subscription | null = null;
  private publisher: Publisher | null = null;
  private readonly slots: FairSlots;
  /** Per partition, jobs taken from it that wait for a slot... */
  private waitingIn = new Map<number, number>();
  /** ...and the partitions not fetched until that drops (see onBatch). */
  private held = new Set<number>();
  /**
   * Jobs a partition may have waiting for a slot before it is held. Generous: what is out at
   * once is bounded by the schedulers' windows; this only bounds memory if they misjudge. A
   * partition held behind a tenant whose calls hang would hold up every other job in it.
   */
  private readonly readAhead: number;
  private readonly offsets = new OffsetTracker();
  private readonly claims: Batcher<number, ClaimRequest, Claim>;
  private readonly records: Batcher<number, Outcome, void>;
  private readonly defers: Batcher<number, DeferRequest, boolean>;
  /** Places on the target calendars (one batch per moment, in the users database). */
  private readonly calendar: Batcher<0, CalendarSlot[], number>;
  /** Target limits: a job takes its target's permits before its slot (actors/target-limits.ts). */
  private readonly gate = new TargetGate({ waitMs: T.targetWaitMs, idleMs: T.targetIdleMs });
  private targetTimers: ReturnType<typeof setInterval>[] = [];
  private renewing: Promise<void> | null = null;
  /** Leases held after the last renewal: with none and no demand, there is nothing to renew or give up. */
  private leased = 0;
  /** Per database, jobs whose claim it failed, taken again once it answers (takeJob). */
  private awaiting = new Map<number, DueEntry[]>();
  /** Per user, jobs waiting for a target limit's permits or being deferred for one. */
  private targetWaits = new Map<string, number>();
  private readonly handler: HandlerSettings;
  private commitTimer: ReturnType<typeof setInterval> | null = null;
  private awaitingTimer: ReturnType<typeof setInterval> | null = null;
  private reportTimer: ReturnType<typeof setInterval> | null = null;
  private pressureTimer: ReturnType<typeof setInterval> | null = null;
  private readonly loopDelay = monitorEventLoopDelay({ resolution: 10 });
  private reporting = false;
  private readonly member = processName();
  private committing: Promise<void> | null = null;
  private commitQueued = false;
  private lastCommitAt = 0;
  /** Per partition, publication-to-durable-claims waits of the messages claimed since its last commit. */
  private waits = new Map<number, { sum: number; n: number }>();
  private running = false;
  private crashed: Error | null = null;

  constructor(
    private readonly config: Config,
    private readonly dbs: Databases,
    private readonly bus: KafkaBus,
    private readonly onFatal: (error: Error) => void = () => {},
  ) {
    this.readAhead = T.readAheadSlots * config.executor.concurrency;
    this.slots = new FairSlots({ capacity: config.executor.concurrency, reserve: config.executor.userReserve, activeMs: T.userActiveMs });
    // Two batched statements can deadlock when a duplicate message puts a job in both, in
    // different orders; PostgreSQL then rolls one back whole, and it is simply run again.
    // A database that does not answer fails its claims at once (src/db/gate.ts): the jobs are set
    // aside (takeJob), and a claim that was issued and lands late runs its jobs all the same.
    this.claims = new Batcher((db, msgs) =>
      dbs.gate.within(
        db,
        TUNING.db.answerWithinMs,
        () => timed("claim", () => retryRolledBack(() => claim(dbs.all[db]!, msgs, config.executor.defaultTimeoutMs, config.executor.runGraceMs, this.member))),
        (late) => this.runLate(msgs as DueEntry[], late),
      ),
    );
    // A flood of deferrals (a limited target's backlog falling due) goes one statement at a
    // time per database, in big batches: it must not take the pool's connections from the claims.
    this.defers = new Batcher((db, msgs) => dbs.gate.within(db, TUNING.db.answerWithinMs, () => timed("defer", () => retryRolledBack(() => defer(dbs.all[db]!, msgs)))), 5_000, true);
    this.calendar = new Batcher((_, reqs) => timed("calendar", () => reserveCalendar(dbs.users, reqs, T.targetWaitMs)), 5_000, true);
    this.records = new Batcher((db, outcomes) => timed("record", () => retryRolledBack(() => record(dbs.all[db]!, outcomes).then(() => outcomes.map(() => undefined)))));
    // A rotated key is used within this; the previous one stays valid far longer (its grace).
    const users = new UserStore(dbs.users);
    const signingKeys = new ShortCache(T.signingKeysTtlMs, (userId) => users.signingKeys(userId));
    this.handler = {
      allowPrivate: config.executor.httpAllowPrivate,
      signingKeys: (userId) => signingKeys.get(userId),
      defaultTimeoutMs: config.executor.defaultTimeoutMs,
    };
  }

  /** Ready while consuming: a member of the group, not stopping, and the client has not given up. */
  ready(): boolean {
    return this.running && this.crashed === null && (this.sub?.member() ?? false);
  }

  async start(): Promise<void> {
    this.publisher = await this.bus.publisher();
    await this.loadLimits();
    this.sub = await this.bus.subscribe(this.config.kafka.groupId, this.config.kafka.topicDue, {
      onBatch: (batch) => this.onBatch(batch),
      onAssigned: (partitions) => {
        const mine = new Set(partitions);
        for (const p of this.offsets.partitions()) if (!mine.has(p)) this.offsets.drop(p);
        // A partition that moved away is another member's to report.
        metrics.consumerLag.reset();
      },
      onCrash: (error) => {
        this.crashed = error;
        log.error("the Kafka consumer gave up; the executor cannot consume any more", { err: error });
        this.onFatal(error);
      },
    });
    // Retries a failed commit, and is a backstop for anything commitSoon missed.
    this.commitTimer = setInterval(() => {
      this.commitSoon();
      this.showSlots();
    }, T.commitRetryMs);
    // The slots' report: the schedulers hold back a user whose jobs wait for a slot (slot-report.ts).
    this.reportTimer = setInterval(() => void this.reportSlots(), T.slotReportMs);
    this.awaitingTimer = setInterval(() => this.retryAwaiting(), T.awaitDatabaseEveryMs);
    // Target limits (read before the first job, below): re-read; leases renewed while a limited
    // target is in use; waiting jobs let go or deferred as time passes.
    this.targetTimers = [
      setInterval(() => void this.loadLimits(), T.targetLimitsEveryMs),
      setInterval(() => void this.renewLeases(), T.targetLeaseEveryMs),
      setInterval(() => this.gate.tick(Date.now()), T.targetTickMs),
    ];
    this.loopDelay.enable();
    this.pressureTimer = setInterval(() => this.steerSlots(), T.pressureEveryMs);
    this.running = true;
  }

  /**
   * Pressure: while the event loop's delay p99 (over the last T.pressureEveryMs) is above
   * T.pressureDelayMs, the process cannot keep up with the calls it runs, and every job waits
   * for it, a quiet user's too. Then users at or above their guard share fewer slots (80 % of
   * those in use, at most; at least 2 x the guard), and get them back 10 % at a time once the
   * delay is under half of it. Only while slots are contended (jobs wait for one) and more than
   * one user is active: otherwise the delay is the work's own (a burst of quick jobs loads the
   * process as much, and fewer slots would only slow it), and a user alone has nobody to make
   * room for.
   */
  private steerSlots(): void {
    const p99 = this.loopDelay.percentile(99) / 1e6;
    this.loopDelay.reset();
    const cap = this.config.executor.concurrency;
    const limit = this.slots.currentLimit;
    if (this.slots.activeUsers < 2) this.slots.setLimit(cap);
    else if (p99 > T.pressureDelayMs && this.slots.waiting > 0) this.slots.setLimit(Math.max(2 * this.config.executor.userReserve, Math.floor(Math.min(limit, this.slots.inUse) * 0.8)));
    else if (p99 < T.pressureDelayMs / 2 && limit < cap) this.slots.setLimit(limit + Math.max(16, Math.floor(limit * 0.1)));
    metrics.slotLimit.set(this.slots.currentLimit);
  }

  /** Writes this executor's slot report (one at a time; a failed one is simply the next's to do). */
  private async reportSlots(): Promise<void> {
    if (this.reporting) return;
    this.reporting = true;
    try {
      // A user whose jobs wait for a target limit (or are being deferred for one) is saturated
      // too: the schedulers hold it back as they do a user waiting for slots.
      const waiting = this.slots.waitingByUser();
      for (const [user, n] of this.targetWaits) waiting.set(user, (waiting.get(user) ?? 0) + n);
      await writeSlotReport(this.dbs.users, this.member, { slots: this.config.executor.concurrency, held: this.slots.inUse, waiting, runMs: this.slots.runTimes() });
    } catch (err) {
      log.debug("slot report failed", { err: err as Error });
    } finally {
      this.reporting = false;
    }
  }

  private async loadLimits(): Promise<void> {
    try {
      this.gate.setLimits(await loadTargetLimits(this.dbs.users), Date.now());
    } catch (err) {
      log.warn("could not read the target limits; the last ones read stay in force", { err: err as Error });
    }
  }

  /**
   * Renews the leases of the limited targets in use (and gives up the others'); one renewal at a
   * time, a failed one is the next's to do: meanwhile the leases run out here before they do in
   * the database, and the jobs wait or are deferred.
   */
  private renewLeases(): Promise<void> {
    if (this.renewing) return this.renewing;
    const demand = this.gate.demand(Date.now());
    if (demand.length === 0 && this.leased === 0) return Promise.resolve();
    this.renewing = renewLeases(this.dbs.users, this.member, demand, T.targetLeaseTtlMs, T.targetLeaseMarginMs)
      .then((leases) => {
        metrics.targetPermits.reset();
        for (const l of leases) {
          this.gate.setLease(l.key, l.bound, l.permits, l.validUntil, Date.now(), l.fair, l.contended);
          metrics.targetPermits.set({ key: l.key, bound: l.bound }, l.permits);
        }
        this.leased = leases.length;
      })
      .catch((err) => log.warn("could not renew the target leases", { err: err as Error }))
      .finally(() => {
        this.gate.renewalEnded(Date.now());
        this.renewing = null;
      });
    return this.renewing;
  }

  /**
   * The permits of the job's limited target (its `keys`): go, or defer it (back to waiting unrun,
   * due later). Resolves when they were taken, or null when the job was deferred.
   */
  private async takeTarget(e: DueEntry, keys: string[]): Promise<number | null> {
    const pending = this.gate.acquire(keys, Date.now());
    // A target new here has no lease yet: ask as soon as this fetch's jobs have asked for
    // permits (so the lease is sized for all of them), not at the next renewal.
    if (this.gate.unleased(keys)) setTimeout(() => void this.renewLeases(), 0);
    const answer: GateAnswer = await pending;
    if (answer.go) return answer.at;
    if (!this.running) throw new Error("executor stopping");
    const delayMs = await this.calendar.submit(0, answer.calendar);
    const deferred = await this.defers.submit(this.dbs.indexOf(e.shard), { id: e.id, shard: e.shard, attempt: e.attempt, delayMs });
    if (deferred) metrics.targetDeferred.inc();
    metrics.jobsProcessed.inc({ outcome: deferred ? "deferred" : "dropped" });
    return null;
  }

  /** The slots' gauges: jobs waiting, active users, the users holding the most, and the noisy ones. */
  private showSlots(): void {
    metrics.slotsWaiting.set(this.slots.waiting);
    metrics.awaitingDatabase.set([...this.awaiting.values()].reduce((n, l) => n + l.length, 0));
    metrics.targetWaiting.set(this.gate.waiting);
    metrics.slotUsers.set(this.slots.activeUsers);
    metrics.userRunning.reset();
    const top = [...this.slots.holders()].sort((a, b) => b[1] - a[1]).slice(0, TOP_USERS);
    for (const [user, n] of top) metrics.userRunning.set({ user }, n);
    const noisy = this.slots.noisy();
    metrics.noisyUsers.set(noisy.length);
    metrics.userExcessSlots.reset();
    for (const u of noisy.sort((a, b) => b.held - b.share - (a.held - a.share)).slice(0, TOP_USERS)) metrics.userExcessSlots.set({ user: u.user }, Math.round(u.held - u.share));
  }

  /** Schedules a commit: after the one under way, at least T.commitGapMs after the last. */
  private commitSoon(): void {
    if (this.commitQueued || !this.sub) return;
    this.commitQueued = true;
    setTimeout(async () => {
      await this.committing;
      this.commitQueued = false;
      await this.commit();
    }, Math.max(0, this.lastCommitAt + T.commitGapMs - Date.now()));
  }

  /**
   * Commits the durable prefix of every partition that moved (one request at a time). Each
   * commit notes the mean wait, in ms, of the messages claimed since the partition's last one:
   * the schedulers steer their windows by it (actors/start-window.ts).
   */
  private commit(): Promise<void> {
    if (this.committing || !this.sub) return this.committing ?? Promise.resolve();
    const next = new Map<number, CommitEntry>();
    for (const p of this.offsets.partitions()) {
      const o = this.offsets.committable(p);
      if (o === null) continue;
      const w = this.waits.get(p);
      next.set(p, { next: o, metadata: w && w.n > 0 ? String(Math.round(w.sum / w.n)) : null });
      this.waits.delete(p);
    }
    if (next.size === 0) return Promise.resolve();
    this.lastCommitAt = Date.now();
    this.committing = timed("commit", () => this.sub!.commit(next))
      .then(() => {
        for (const [p, c] of next) this.offsets.committed(p, c.next);
        this.committing = null;
        // Claims that became durable meanwhile go out next.
        if (this.offsets.partitions().some((p) => this.offsets.committable(p) !== null)) this.commitSoon();
      })
      // A rebalance in progress refuses commits; the retry timer tries again with what is ours.
      .catch((err) => {
        this.committing = null;
        log.debug("offset commit failed; will retry", { err: err as Error });
      });
    return this.committing;
  }

  /** Takes the batch's messages in order; each job's slot and claim follow (not awaited). */
  private async onBatch(batch: PartitionBatch): Promise<string | null> {
    // Lag: messages of the partition not yet taken into processing (high watermark at this fetch
    // minus the next offset to take), updated as each message is taken.
    const lagLabels = { partition: String(batch.partition) };
    const hw = Number(batch.highWatermark);
    let last: string | null = null;
    for (const m of batch.messages) {
      if (!this.running || !batch.isRunning()) break;
      metrics.consumerLag.set(lagLabels, Math.max(0, hw - Number(m.offset)));
      // A partition with readAhead jobs waiting for a slot takes no more: it is held (not
      // fetched) until half of them got one, and onBatch returns (kafkajs fetches again only
      // once every partition's handler returned, so waiting here would stall all).
      if ((this.waitingIn.get(batch.partition) ?? 0) >= this.readAhead) {
        this.held.add(batch.partition);
        metrics.partitionsHeld.set(this.held.size);
        this.sub?.hold(batch.partition);
        break;
      }
      const entries = decodeDue(m.value);
      const offset = Number(m.offset);
      const gen = this.offsets.track(batch.partition, offset);
      last = m.offset;
      if (gen === null) continue; // delivered again after a rebalance; already in processing
      if (!entries || !entries.every((e) => e.shard < this.dbs.shardCount)) {
        // Poison message: nothing can ever process it; skip it so the partition keeps moving.
        log.error("dropping malformed due message", { partition: m.partition, offset: m.offset, value: m.value.slice(0, 200) });
        metrics.jobsProcessed.inc({ outcome: "malformed" });
        this.offsets.done(batch.partition, offset, gen);
        continue;
      }
      // Each job is claimed once it holds a slot; the partition reads on while it may.
      this.waitingIn.set(batch.partition, (this.waitingIn.get(batch.partition) ?? 0) + entries.length);
      const claims = entries.map((e) => this.takeJob(batch.partition, e));
      metrics.consumerLag.set(lagLabels, Math.max(0, hw - offset - 1));
      void Promise.all(claims).then(
        () => {
          const waited = Math.max(0, Date.now() - m.timestamp);
          const w = this.waits.get(batch.partition) ?? { sum: 0, n: 0 };
          w.sum += waited;
          w.n++;
          this.waits.set(batch.partition, w);
          metrics.claimDelay.observe(waited / 1000);
          this.offsets.done(batch.partition, offset, gen);
          this.commitSoon();
        },
        // Only when stopping: the message is not committed, and the next owner consumes it again.
        () => {},
      );
    }
    return last;
  }

  /** A job of the partition stopped waiting for a slot: a held partition is fetched again at half. */
  private leftWaiting(p: number | null): void {
    if (p === null) return;
    const n = this.waitingIn.get(p)! - 1;
    this.waitingIn.set(p, n);
    if (this.held.has(p) && n <= this.readAhead / 2 && this.running) {
      this.held.delete(p);
      metrics.partitionsHeld.set(this.held.size);
      this.sub?.unhold(p);
    }
  }

  /**
   * claimAndRun; but a job whose claim (or deferral) fails, its database out, is set aside until
   * the database answers (retryAwaiting): either way its message counts as taken. Rejects only
   * when the executor stops. `partition` is the one it was taken from (null: tried again).
   */
  private async takeJob(partition: number | null, e: DueEntry): Promise<void> {
    try {
      await this.claimAndRun(partition, e);
    } catch (err) {
      if (!this.running) throw err;
      const db = this.dbs.indexOf(e.shard);
      const list = this.awaiting.get(db);
      if (list) list.push(e);
      else {
        this.awaiting.set(db, [e]);
        log.warn("a database failed its jobs' claims; they are set aside and claimed once it answers", { database: db, err: err as Error });
      }
    }
  }

  /** Jobs set aside for a database are taken again once it answers (src/db/gate.ts probes it). */
  private retryAwaiting(): void {
    for (const [db, list] of this.awaiting) {
      if (this.dbs.gate.isOut(db)) continue;
      this.awaiting.delete(db);
      log.info("a database answers again; the jobs set aside for it are claimed", { database: db, jobs: list.length });
      for (const e of list) void this.takeJob(null, e).catch(() => {});
    }
  }

  /**
   * A claim statement that answered after its callers were told it failed: the jobs it claimed
   * run now (their copies set aside will find them claimed and do nothing). Their target limits'
   * permits were given back when the claim failed, so these runs are not counted against them.
   */
  private runLate(msgs: DueEntry[], claims: Claim[]): void {
    claims.forEach((job, i) => {
      if (job === null || job === REFUSED_EARLY) return;
      const e = msgs[i]!;
      log.warn("a claim answered late; its job runs now", { job: e.id });
      void this.slots.acquire(e.user_id, e.weight ?? 1, Date.now()).then((got) => {
        if (!got) return; // stopping: the rescuer re-runs it after its deadline
        const from = Date.now();
        void this.runOne(e, job, from, from).finally(() => this.slots.release(e.user_id, Date.now()));
      });
    });
  }

  /**
   * Takes a slot for the job, then claims it; resolves once the claim is durable, having started
   * its run (the slot is released when the run ends). A duplicate, cancelled or not yet due job
   * is not claimed and its slot goes back at once. Rejects when the claim fails, or when the
   * executor stops before the job got a slot (it is consumed again by the partition's next owner).
   */
  private async claimAndRun(partition: number | null, e: DueEntry): Promise<void> {
    // Only a job whose target is limited waits for anything before its slot (most jobs go
    // straight on, in the order their messages came).
    const keys = this.gate.keysFor(e.user_id, e.host);
    let at = 0;
    if (keys.length > 0) {
      let granted: number | null;
      this.targetWaits.set(e.user_id, (this.targetWaits.get(e.user_id) ?? 0) + 1);
      try {
        granted = await this.takeTarget(e, keys);
      } catch (err) {
        this.leftWaiting(partition);
        throw err;
      } finally {
        const n = this.targetWaits.get(e.user_id)! - 1;
        if (n === 0) this.targetWaits.delete(e.user_id);
        else this.targetWaits.set(e.user_id, n);
      }
      if (granted === null) return this.leftWaiting(partition);
      at = granted;
    }
    const got = await this.slots.acquire(e.user_id, e.weight ?? 1, Date.now());
    this.leftWaiting(partition);
    const giveBack = () => {
      this.slots.release(e.user_id, Date.now());
      this.gate.giveBack(keys, at, Date.now());
    };
    if (!got) {
      this.gate.giveBack(keys, at, Date.now());
      throw new Error("executor stopping");
    }
    const claimStart = Date.now();
    let job: Claim;
    try {
      job = await this.claims.submit(this.dbs.indexOf(e.shard), e);
    } catch (err) {
      giveBack();
      throw err;
    }
    if (job === null || job === REFUSED_EARLY) {
      if (job === REFUSED_EARLY) metrics.claimsRefusedEarly.inc();
      metrics.jobsProcessed.inc({ outcome: "dropped" });
      giveBack();
      return;
    }
    const ranFrom = Date.now();
    this.gate.started(keys, at, ranFrom);
    void this.runOne(e, job, claimStart, ranFrom).finally(() => {
      this.slots.release(e.user_id, Date.now());
      this.gate.release(keys, Date.now() - ranFrom, Date.now());
    });
  }

  /**
   * One run, from its claim. With tracing on it is a consumer span of the job's trace (child of
   * the dispatch's send), holding the claim statement, the handler's span, the dead-letter send
   * and the outcome statement.
   */
  private async runOne(msg: DueEntry, job: ClaimedJob, claimStart: number, claimEnd: number): Promise<void> {
    metrics.jobsStarted.inc(job.user_id);
    metrics.startLateness.observe(Math.max(0, claimEnd - job.due_at.getTime()) / 1000);
    const topic = this.config.kafka.topicDue;
    // Only a sampled run gets its spans (the sampler decides at the process span, following the
    // job's trace); an unsampled one runs without any.
    const sampled = tracingEnabled()
      ? tracer().startSpan(`process ${topic}`, messagingSpanOptions("process", topic, { "messaging.message.id": msg.id, "job.id": msg.id, "job.shard": msg.shard, "job.attempt": msg.attempt }, claimStart), extractContext(msg.trace))
      : null;
    const span = sampled?.isRecording() ? sampled : null;
    const inRun = span ? trace.setSpan(context.active(), span) : null;
    if (inRun) tracer().startSpan("UPDATE jobs", dbSpanOptions("UPDATE", "jobs", claimStart), inRun).end(claimEnd);
    try {
      const run = () => this.runMachine(job);
      const outcome = await (inRun ? context.with(inRun, run) : run());
      span?.setAttribute("job.outcome", outcome);
      metrics.jobsProcessed.inc({ outcome });
    } catch (e) {
      // The run is claimed: the rescuer re-runs it after its deadline.
      if (span) failed(span, e);
      log.warn("run failed before its outcome was recorded; the rescuer will re-run it", { job_id: msg.id, shard: msg.shard, err: e as Error });
    } finally {
      span?.end();
    }
  }

  /**
   * Runs the job's lifecycle machine from its claim, doing the I/O each state names and sending
   * the result back as an event. Returns the final outcome (the decision's kind).
   */
  private async runMachine(job: ClaimedJob): Promise<string> {
    const backoff = this.config.executor.retry;
    const actor = createActor(runLogic, { input: { backoff } }).start();
    const step = (event: RunEvent<ClaimedJob>) => actor.send(event);
    let ranFrom = 0;
    let ranFor = 0;
    step({ type: "CLAIMED", job });
    for (;;) {
      const c = actor.getSnapshot().context;
      switch (c.step) {
        case "running": {
          ranFrom = performance.now();
          // A handler that throws is a bug or an unexpected failure: retried like a transient one.
          const result = await traced(`job.handle ${c.job!.kind}`, { attributes: { "job.kind": c.job!.kind } }, () => runJob(c.job!, this.handler)).catch(
            (e): RunResult => ({ ok: false, retryable: true, error: `handler error: ${(e as Error)?.message ?? e}`, errorClass: "handler" }),
          );
          ranFor = performance.now() - ranFrom;
          this.slots.noteRun(job.user_id, ranFor);
          step({ type: "RAN", result });
          break;
        }
        case "deadLettering":
          await traced(`send ${this.config.kafka.topicDlq}`, messagingSpanOptions("send", this.config.kafka.topicDlq), () => this.deadLetter(c.job!, (c.decision as { error: string }).error));
          step({ type: "DEAD_LETTERED" });
          break;
        case "recording":
          await traced("UPDATE jobs", dbSpanOptions("UPDATE", "jobs"), () => this.recordOutcome({ job: c.job!, decision: c.decision!, result: c.result!, durationMs: ranFor }));
          this.observeOutcome(c.job!, c.decision!);
          step({ type: "RECORDED" });
          break;
        case "done":
          return c.decision!.kind;
        case "claiming":
        case "dropped":
          throw new Error(`job-run machine in ${c.step} after a claim`);
      }
    }
  }

  /**
   * Records the outcome, retrying while the database is unreachable, past the run's deadline by
   * up to T.recordPastDeadlineMs: the rescuer does not take a run for lost within 10 s of its
   * shard's database coming back (RESCUE_AFTER_OUTAGE_MS), so the outcomes of runs that ended
   * during an outage land first, and no attempt is charged for the outage. Without the retries a
   * database restart would re-run every job that finished during it. Safe to repeat, and late:
   * the record is guarded by status and attempt (a run the rescuer took back is not changed), and
   * its attempt row is written once.
   */
  private async recordOutcome(outcome: Outcome): Promise<void> {
    const giveUpAt = outcome.job.deadline_at.getTime() + T.recordPastDeadlineMs;
    for (let delay: number = T.recordRetryMinMs; ; delay = Math.min(delay * 2, T.recordRetryMaxMs)) {
      try {
        return await this.records.submit(this.dbs.indexOf(outcome.job.shard_id), outcome);
      } catch (e) {
        if (!isUnavailable(e) || Date.now() + delay > giveUpAt || !this.running) throw e;
        await Bun.sleep(delay);
      }
    }
  }

  private observeOutcome(job: ClaimedJob, decision: Decision): void {
    if (decision.kind !== "retry") metrics.jobLatency.observe(Math.max(0, Date.now() - job.due_at.getTime()) / 1000);
    if (decision.kind !== "succeeded") log.warn(`job ${decision.kind === "retry" ? "will retry" : "failed"}`, { job_id: job.id, shard: job.shard_id, attempt: job.attempt, error: decision.error });
  }

  private async deadLetter(job: ClaimedJob, error: string): Promise<void> {
    await this.publisher!.publish(this.config.kafka.topicDlq, [deadLetterMessage(job, error, "failed")]);
    metrics.jobsDeadLettered.inc({ reason: "failed" });
  }

  /**
   * Stops fetching, lets the runs in flight finish (up to `graceMs`), commits what is durable,
   * leaves the group. Runs still going at the end are claimed: the rescuer re-runs them.
   */
  async stop(graceMs = 10_000): Promise<void> {
    this.running = false;
    this.sub?.pause();
    this.slots.close();
    this.gate.close();
    for (const t of this.targetTimers) clearInterval(t);
    const until = Date.now() + graceMs;
    while (this.slots.inUse > 0 && Date.now() < until) await Bun.sleep(20);
    if (this.commitTimer) clearInterval(this.commitTimer);
    if (this.reportTimer) clearInterval(this.reportTimer);
    if (this.awaitingTimer) clearInterval(this.awaitingTimer);
    const setAside = [...this.awaiting.values()].reduce((n, l) => n + l.length, 0);
    if (setAside > 0) log.warn("executor stopped with jobs set aside for a database that is out; the rescuer puts them back to waiting after their deadline", { jobs: setAside });
    if (this.pressureTimer) clearInterval(this.pressureTimer);
    this.loopDelay.disable();
    await deleteSlotReport(this.dbs.users, this.member).catch(() => {});
    await this.renewing;
    await dropLeases(this.dbs.users, this.member).catch(() => {});
    await this.committing;
    await this.commit();
    await this.sub?.stop();
    await this.publisher?.close();
    if (this.slots.inUse > 0) log.warn("executor stopped with runs in flight; the rescuer will re-run them", { in_flight: this.slots.inUse });
  }
}
