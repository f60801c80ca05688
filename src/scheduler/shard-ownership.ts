/**
 * Shard ownership through etcd, and the shard actors it starts and stops.
 *
 * Keys (under ETCD_PREFIX):
 *   members/<member-id>  -> "" (attached to the member's lease)
 *   shards/<shard>       -> <member-id> (attached to the owner's lease; created only if absent)
 *
 * A member re-plans (src/scheduler/ownership-plan.ts) on every change under the prefix and once a second:
 * it releases surplus shards (stop the actor first, then delete the key if still its own) and
 * claims free ones (a create-if-absent transaction; the winner bumps the shard's SQL fence and
 * hands the shard to the scheduling core with that epoch). Lease loss stops every shard
 * synchronously, before anything else runs; the member then re-registers with a fresh lease and
 * claims again from scratch.
 */
import type { Etcd3, Watcher } from "etcd3";
import { planOwnership } from "./ownership-plan.ts";
import { SchedulerCore } from "../../actors/scheduler-core.ts";
import type { Commit } from "../../actors/start-window.ts";
import { TUNING, type Config } from "../config.ts";
import type { Databases } from "../db/databases.ts";
import { etcdClient, grantGuardedLease, type GuardedLease } from "../etcd.ts";
import type { KafkaBus } from "../kafka.ts";
import { log } from "../log.ts";
import { metrics } from "../metrics.ts";
import { schedulerIo, type DueRow, type Publishers } from "./dispatch-io.ts";
import { DUE_CHANNEL, GONE_CHANNEL, parseDuePayload, parseGonePayload } from "../db/due-notify.ts";
import { acquireFence, releaseFence } from "../db/fence.ts";
import { takeBack } from "../jobs/transitions.ts";
import { WeightBook } from "./weights.ts";
import { DemandExchange } from "./demand-exchange.ts";
import { countInFlight } from "./in-flight.ts";
import { processName } from "../ids.ts";
import { lostExecutors, readSlotReports } from "../executor/slot-report.ts";
import { rescueShard } from "./rescuer.ts";

export interface OwnershipOptions {
  memberId?: string;
  /** Re-plan at least this often even without etcd events. */
  replanIntervalMs?: number;
}


const systemClock = {
  now: () => Date.now(),
  setTimeout: (fn: () => void, ms: number) => setTimeout(fn, ms),
  clearTimeout: (id: unknown) => clearTimeout(id as ReturnType<typeof setTimeout>),
};

/** A rescue's `since` past every deadline: only the lost executors' runs. */
const ONLY_LOST_RUNS = new Date("9999-12-31T00:00:00Z");

export class ShardOwnership {
  readonly memberId: string;
  readonly core: SchedulerCore<DueRow>;
  private readonly client: Etcd3;
  private readonly prefix: string;
  private readonly weights: WeightBook;
  private lease: GuardedLease | null = null;
  private watcher: Watcher | null = null;
  private epochs = new Map<number, string>();
  private timer: ReturnType<typeof setInterval> | null = null;
  private planning: Promise<void> | null = null;
  private replanRequested = false;
  private stopped = false;
  private registered = false;
  private replanFailing = false;
  private observing: Promise<void> | null = null;
  private sharing: Promise<void> | null = null;
  private counting: Promise<void> | null = null;
  /** A demand or slot report older than this (database clock) is from a process that stopped. */
  private readonly reportTtlMs: number;
  private rescuingLost: Promise<void> | null = null;
  private readonly exchange: DemandExchange;
  private listeners: { unlisten(): Promise<void> }[] = [];

  constructor(
    private readonly config: Config,
    private readonly dbs: Databases,
    private readonly bus: KafkaBus,
    private readonly publishers: Publishers,
    private readonly opts: OwnershipOptions = {},
  ) {
    this.memberId = opts.memberId ?? processName();
    this.client = etcdClient(config.etcd);
    this.prefix = config.etcd.prefix.replace(/\/$/, "");
    const s = config.scheduler;
    metrics.shardsTotal.set(config.shardCount);
    // The fair order reads weights from the book at each dispatch (weightOf below).
    this.weights = new WeightBook(dbs.users, config.users.defaultWeight, undefined, config.users.defaultMaxRunning);
    // A report older than a few intervals is a process that stopped (or cannot reach the database).
    this.reportTtlMs = Math.max(4 * s.shareIntervalMs, 1_000);
    this.exchange = new DemandExchange(dbs.users, this.reportTtlMs);
    this.core = new SchedulerCore(
      schedulerIo(config, dbs, publishers, { usersSeen: (ids) => this.weights.seen(ids), weightOf: (id) => this.weights.weightOf(id) }),
      {
        shard: s,
        dispatch: { ...s, defaultWeight: config.users.defaultWeight, partitions: config.kafka.partitions },
      },
      systemClock,
      {
        fenced: (shard) => {
          log.warn("shard fenced out; releasing it", { shard, epoch: this.epochs.get(shard) });
          void this.stopShard(shard, true);
        },
        shardState: (shard, state, error) => {
          if (state === "retrying") log.warn("shard actor retrying", { shard, epoch: this.epochs.get(shard), error });
        },
        publishFailed: (jobs, err) => log.warn("publish failed; jobs go back to waiting", { count: jobs, err: err as Error }),
        weightOf: (userId) => this.weights.weightOf(userId),
        limitOf: (userId) => this.weights.limitOf(userId),
      },
    );
  }

  /** Shards this member dispatches for right now. */
  owned(): number[] {
    return this.core.owned();
  }

  /**
   * Registered with a live lease, the last re-plan went through (etcd and the fences'
   * databases answered) and no owned shard is retrying after a database error.
   */
  ready(): boolean {
    return this.registered && !this.stopped && !!this.lease && !this.lease.isLost() && !this.replanFailing && this.core.retrying().length === 0;
  }

  async start(): Promise<void> {
    this.watcher = await this.client.watch().prefix(`${this.prefix}/`).create();
    this.watcher.on("put", () => this.requestReplan());
    this.watcher.on("delete", () => this.requestReplan());
    this.watcher.on("error", (err) => log.warn("etcd watch error", { err }));
    this.weights.start(this.config.scheduler.weightRefreshMs);
    // New and retried jobs wake their shard's actor (src/db/due-notify.ts); postgres.js
    // listens on a connection of its own and listens again after a reconnect.
    for (const sql of this.dbs.all) {
      this.listeners.push(
        await sql.listen(DUE_CHANNEL, (payload) => {
          for (const { shard, at } of parseDuePayload(payload)) this.core.wake(shard, at);
        }),
      );
      // Cancelled and rescheduled jobs leave the fair order at once (their owner is whoever holds them).
      this.listeners.push(
        await sql.listen(GONE_CHANNEL, (payload) => {
          const { ids, users } = parseGonePayload(payload);
          for (const u of users) this.core.dispatcher.forgetUser(u);
          if (ids.length > 0) this.core.dispatcher.forget(ids);
        }),
      );
    }
    this.observing = this.observeStarts();
    this.sharing = this.shareDemand();
    this.counting = this.countCapped();
    this.rescuingLost = this.rescueLost();
    await this.register();
    this.timer = setInterval(() => this.requestReplan(), this.opts.replanIntervalMs ?? this.config.etcd.replanIntervalMs);
    await this.replan();
  }

  /**
   * Reads the executors' committed offsets: the dispatcher learns which of its jobs started
   * (its window frees up) and how fast the executors start them.
   */
  private async observeStarts(): Promise<void> {
    const { groupId, topicDue } = this.config.kafka;
    let reader: Awaited<ReturnType<KafkaBus["offsetReader"]>> | null = null;
    let failing = false;
    let backlogAt = 0;
    while (!this.stopped) {
      const t0 = Date.now();
      const d = this.core.dispatcher;
      try {
        reader ??= await this.bus.offsetReader(groupId, topicDue);
        const commits = new Map<number, Commit>();
        for (const [p, c] of await reader.read()) commits.set(p, { next: c.next, waitMs: c.metadata !== null && /^\d+$/.test(c.metadata) ? Number(c.metadata) : null });
        d.observe(commits);
        for (const ms of d.window.lastDelays) metrics.startDelay.observe(ms / 1000);
        metrics.inFlightWindow.set(d.windowSize(Date.now()));
        metrics.inFlightJobs.set(d.inFlight);
        const parts = d.parts();
        metrics.inFlightParts.set({ part: "outstanding" }, parts.outstanding);
        metrics.inFlightParts.set({ part: "pending_due" }, parts.pendingDue);
        metrics.inFlightParts.set({ part: "pending_early" }, parts.pendingEarly);
        if (t0 - backlogAt >= 1_000) {
          backlogAt = t0;
          this.reportBacklog(t0);
        }
        if (failing) log.info("reading the executors' offsets again");
        failing = false;
      } catch (err) {
        if (!failing) log.warn("cannot read the executors' offsets; the window stays as it is", { err: err as Error });
        failing = true;
        await reader?.close().catch(() => {});
        reader = null;
        await Bun.sleep(this.config.scheduler.retryDelayMs);
      }
      // Fast while the window holds dispatching back (then it must follow every start); a
      // few times a second otherwise (it only keeps the rate and the wait current).
      const gap = d.window.isLimited(Date.now()) ? this.config.scheduler.startPollMs : d.inFlight > 0 ? TUNING.scheduler.offsetsPollMs : TUNING.scheduler.offsetsIdlePollMs;
      await Bun.sleep(Math.max(0, t0 + gap - Date.now()));
    }
    await reader?.close().catch(() => {});
  }

  /**
   * Exchanges demand reports with the other scheduler processes (actors/cluster-share.ts): this
   * process's window and its users' weights follow its part of the cluster's weighted demand.
   */
  private async shareDemand(): Promise<void> {
    const every = this.config.scheduler.shareIntervalMs;
    let failing = false;
    let sweptAt = 0;
    while (!this.stopped) {
      const t0 = Date.now();
      const d = this.core.dispatcher;
      const mine = d.demandReport(this.memberId, every);
      const [{ others, error }, slots] = await Promise.all([this.exchange.exchange(mine), readSlotReports(this.dbs.users, this.reportTtlMs).catch(() => null)]);
      if (this.stopped) break;
      const share = d.setPeers(mine, others);
      // Users whose jobs wait for an executor slot: held back here until none waits (no report:
      // as if none did, the executors' slots still share fairly).
      d.setExecutorReport(slots?.waiting ?? new Map(), slots?.runMs ?? new Map());
      metrics.executorSlots.set(slots?.slots ?? 0);
      metrics.saturatedUsers.set(slots?.waiting.size ?? 0);
      metrics.clusterShare.set(share?.share ?? 1);
      metrics.clusterPeers.set(share?.peers ?? 0);
      metrics.clusterRate.set(share?.rate ?? mine.rate);
      if (error) {
        metrics.demandExchangeFailures.inc();
        if (!failing) log.warn("cannot exchange demand with the other schedulers; ordering with the last reports, then alone", { err: error as Error });
      } else if (failing) log.info("exchanging demand with the other schedulers again");
      failing = error !== null;
      if (t0 - sweptAt > 60_000) {
        sweptAt = t0;
        void this.exchange.sweep().catch(() => {});
      }
      await Bun.sleep(Math.max(0, t0 + every - Date.now()));
    }
  }

  /**
   * The runs of executors that stopped reporting go back at once, not after their deadlines
   * (a run's timeout and JOB_RUN_GRACE: 40 s by default). An executor is lost once its last slot
   * report is older than its Kafka session (the group hands its partitions on then too), at
   * least 3 s, while this process read the reports without a gap for as long; each owned shard
   * is rescued once per lost executor. A live executor whose reports
   * stall that long loses its runs too: they run again, and its late outcomes are refused.
   */
  private async rescueLost(): Promise<void> {
    const T = TUNING.scheduler;
    const afterMs = Math.max(T.lostExecutorMinMs, this.config.kafka.sessionTimeoutMs);
    const handled = new Map<string, Set<number>>();
    // Since when the reports could be read without a gap: an executor cannot report while the
    // users database is out either, so right after an outage every report is old. Only a report
    // that stayed old while the reads went on, for afterMs, means its executor is gone.
    let readingSince: number | null = null;
    while (!this.stopped) {
      const t0 = Date.now();
      try {
        let lost: string[];
        try {
          lost = await lostExecutors(this.dbs.users, afterMs, T.lostExecutorForgetMs);
        } catch (err) {
          readingSince = null;
          throw err;
        }
        readingSince = Date.now() - t0 > T.lostExecutorsEveryMs ? Date.now() : (readingSince ?? t0);
        if (Date.now() - readingSince < afterMs) lost = [];
        for (const m of [...handled.keys()]) if (!lost.includes(m)) handled.delete(m);
        const work = new Map<number, string[]>();
        for (const m of lost) {
          const done = handled.get(m) ?? new Set<number>();
          handled.set(m, done);
          for (const shard of this.owned()) if (!done.has(shard)) work.set(shard, [...(work.get(shard) ?? []), m]);
        }
        await Promise.all(
          [...work].map(async ([shard, members]) => {
            const epoch = this.epochs.get(shard);
            if (epoch === undefined) return;
            await rescueShard(this.config, this.dbs.forShard(shard), this.publishers.bulk, shard, epoch, ONLY_LOST_RUNS, members);
            for (const m of members) handled.get(m)?.add(shard);
          }),
        );
      } catch (err) {
        log.debug("rescuing a lost executor's runs failed; will retry", { err: err as Error });
      }
      await Bun.sleep(Math.max(0, t0 + T.lostExecutorsEveryMs - Date.now()));
    }
  }

  /**
   * Counts capped users' jobs in flight cluster-wide every SCHEDULER_CAP_INTERVAL (only while
   * some user with jobs queued here has a cap or is paused): the dispatcher unparks a user as soon
   * as a count shows it room. A failed count keeps the last one: caps stay conservative (the
   * marks since it still count).
   */
  private async countCapped(): Promise<void> {
    const every = this.config.scheduler.capIntervalMs;
    let failing = false;
    while (!this.stopped) {
      const t0 = Date.now();
      const d = this.core.dispatcher;
      const users = d.cappedUsers();
      if (users.length === 0) d.reviewParked();
      else {
        try {
          const counts = await countInFlight(this.dbs, users);
          if (this.stopped) break;
          d.setInFlight(counts, t0);
          if (failing) log.info("counting capped users' jobs in flight again");
          failing = false;
        } catch (err) {
          if (!failing) log.warn("cannot count capped users' jobs in flight; they wait until a count succeeds", { err: err as Error });
          failing = true;
        }
      }
      const parked = d.parkedCounts();
      metrics.parkedUsers.set({ reason: "paused" }, parked.paused);
      metrics.parkedUsers.set({ reason: "cap" }, parked.capped);
      metrics.parkedJobs.set(parked.jobs);
      await Bun.sleep(Math.max(0, t0 + every - Date.now()));
    }
  }

  /** Due and undispatched jobs per owned shard, and the age of the oldest, from the fair queue. */
  private reportBacklog(now: number): void {
    const q = this.core.dispatcher.queue;
    metrics.queuedJobs.set(q.size);
    metrics.queuedUsers.set(q.userCount);
    metrics.dbClockOffset.set((this.core.dispatcher.now() - now) / 1000);
    const due = q.dueByShard(this.core.dispatcher.now());
    metrics.dueBacklog.reset();
    metrics.dueOldest.reset();
    for (const shard of this.owned()) {
      const s = due.get(shard) ?? { count: 0, oldest: now };
      metrics.dueBacklog.set({ shard: String(shard) }, s.count);
      metrics.dueOldest.set({ shard: String(shard) }, (now - s.oldest) / 1000);
    }
  }

  private async register(): Promise<void> {
    this.lease = await grantGuardedLease(this.client, this.config.etcd.leaseTtlSeconds, (reason) => this.onLeaseLost(reason));
    await this.lease.lease.put(`${this.prefix}/members/${this.memberId}`).value("");
    this.registered = true;
    log.info("scheduler member registered", { member: this.memberId, lease: this.lease.id });
  }

  /** Runs synchronously from the lease watchdog: every shard stops before anything else runs. */
  private onLeaseLost(reason: string): void {
    this.registered = false;
    const shards = this.owned();
    void this.core.removeAll();
    this.epochs.clear();
    metrics.shardsOwned.set(0);
    metrics.leaseLosses.inc();
    metrics.shardsGivenUp.inc(shards.length);
    log.warn("lease lost: gave up all shards", { member: this.memberId, shards, reason });
    this.lease = null;
    this.requestReplan();
  }

  private requestReplan(): void {
    if (this.stopped) return;
    if (this.planning) {
      this.replanRequested = true;
      return;
    }
    this.planning = this.replan()
      .then(() => {
        this.replanFailing = false;
      })
      .catch((e) => {
        this.replanFailing = true;
        log.warn("shard re-plan failed; will retry", { err: e as Error });
      })
      .finally(() => {
        this.planning = null;
        if (this.replanRequested) {
          this.replanRequested = false;
          this.requestReplan();
        }
      });
  }

  private async replan(): Promise<void> {
    if (this.stopped) return;
    if (!this.lease) await this.register();
    const lease = this.lease!;
    const [members, owners] = await Promise.all([
      this.client.getAll().prefix(`${this.prefix}/members/`).keys(),
      this.client.getAll().prefix(`${this.prefix}/shards/`).strings(),
    ]);
    const ownerMap = new Map<number, string>();
    for (const [key, owner] of Object.entries(owners)) ownerMap.set(Number(key.slice(key.lastIndexOf("/") + 1)), owner);
    // Drop shards etcd no longer shows as ours (e.g. a key deleted by an operator).
    for (const shard of this.owned()) if (ownerMap.get(shard) !== this.memberId) await this.stopShard(shard, false);

    const plan = planOwnership({
      me: this.memberId,
      members: members.map((k) => k.slice(k.lastIndexOf("/") + 1)),
      shardCount: this.config.shardCount,
      owners: ownerMap,
    });
    // Releases one at a time (released in parallel, a join published some jobs twice: the
    // ownership test in test/scheduler.test.ts); claims all at once: one by one, a survivor took a dead member's
    // shards ~0.5-1.3 s apart on a busy machine (each is an etcd transaction, a fence bump and a
    // take-back), and the last ones' jobs waited for all of it.
    for (const shard of plan.release) await this.stopShard(shard, true);
    if (this.stopped || lease.isLost()) return;
    const claims = await Promise.allSettled(plan.claim.map((shard) => this.claim(shard, lease)));
    const failed = claims.find((c) => c.status === "rejected");
    if (failed) throw failed.reason;
  }

  private shardKey(shard: number): string {
    return `${this.prefix}/shards/${shard}`;
  }

  private async claim(shard: number, lease: GuardedLease): Promise<void> {
    const key = this.shardKey(shard);
    const won = await this.client
      .if(key, "Create", "==", 0)
      .then(this.client.put(key).value(this.memberId).lease(lease.id))
      .commit();
    if (!won.succeeded) return;
    const sql = this.dbs.forShard(shard);
    let epoch: string;
    try {
      const fence = await acquireFence(sql, shard, this.memberId);
      epoch = fence.epoch;
      // The previous owner may have died between marking rows and publishing them.
      if (fence.abandoned !== null) {
        const count = await takeBack(sql, shard, epoch, fence.abandoned);
        metrics.takenBack.inc({ shard: String(shard) }, count);
        if (count > 0) log.warn("took back jobs an earlier owner marked and never saw claimed", { shard, epoch, abandoned: fence.abandoned, count });
      }
    } catch (e) {
      await this.deleteIfMine(shard);
      throw e;
    }
    if (lease.isLost() || this.stopped) return;
    this.epochs.set(shard, epoch);
    this.core.addShard(shard, epoch);
    metrics.shardsOwned.set(this.owned().length);
    log.info("shard acquired", { shard, epoch, member: this.memberId });
  }

  /** Stops the shard at once; waits for its dispatches under way; then hands the key back. */
  private async stopShard(shard: number, deleteKey: boolean): Promise<void> {
    const epoch = this.epochs.get(shard);
    if (epoch !== undefined) {
      this.epochs.delete(shard);
      const draining = this.core.removeShard(shard);
      metrics.shardsOwned.set(this.owned().length);
      // Let a dispatch already under way finish (mark + publish) before handing the shard on.
      await draining;
      // Drained: every row marked under this epoch was published or put back (one whose revert
      // failed waits for its deadline), so the next owner need not take any back.
      await releaseFence(this.dbs.forShard(shard), shard, epoch).catch((err) => log.warn("could not record the shard's orderly release", { shard, err: err as Error }));
      metrics.shardsGivenUp.inc();
      log.info("shard released", { shard, epoch, member: this.memberId });
    }
    if (deleteKey) await this.deleteIfMine(shard);
  }

  private async deleteIfMine(shard: number): Promise<void> {
    const key = this.shardKey(shard);
    await this.client.if(key, "Value", "==", this.memberId).then(this.client.delete().key(key)).commit();
  }

  /** Stops every shard, then revokes the lease (deleting the member and shard keys at once). */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.weights.stop();
    // Every shard stops before the first await; keys go with the lease below.
    const draining = Promise.all(this.owned().map((shard) => this.stopShard(shard, false)));
    this.core.dispatcher.stop();
    await draining;
    await Promise.all(this.listeners.map((l) => l.unlisten().catch(() => {})));
    await this.observing;
    await this.sharing;
    await this.counting;
    await this.rescuingLost;
    await this.exchange.leave(this.memberId).catch(() => {});
    await this.planning?.catch(() => {});
    await this.watcher?.cancel().catch(() => {});
    await this.lease?.revoke();
    this.client.close();
  }
}
