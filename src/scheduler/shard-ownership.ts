/**
 * Shard ownership through etcd, and the shard actors it starts and stops.
 *
 * Keys (under ETCD_PREFIX):
 *   members/<member-id>  -> "" (attached to the member's lease)
 *   shards/<shard>       -> <member-id> (attached to the owner's lease; created only if absent)
 *
 * A member re-plans (actors/ownership.ts) on every change under the prefix and once a second:
 * it releases surplus shards (stop the actor first, then delete the key if still its own) and
 * claims free ones (a create-if-absent transaction; the winner bumps the shard's SQL fence and
 * starts an actor with that epoch). Lease loss stops every actor synchronously, before anything
 * else runs; the member then re-registers with a fresh lease and claims again from scratch.
 */
import { hostname } from "node:os";
import type { Etcd3, Watcher } from "etcd3";
import { createActor, fromPromise, type ActorRefFrom } from "xstate";
import { planOwnership } from "../../actors/ownership.ts";
import { shardMachine, type DueJob, type LoadInput, type LoadOutput, type ShardSettings } from "../../actors/shard.machine.ts";
import type { Config } from "../config.ts";
import type { Databases } from "../db/databases.ts";
import { etcdClient, grantGuardedLease, type GuardedLease } from "../etcd.ts";
import type { Publisher } from "../kafka.ts";
import { log } from "../log.ts";
import { metrics } from "../metrics.ts";
import { acquireFence, ShardIo, shardIoSettings } from "./shard-io.ts";

type ShardActor = ActorRefFrom<typeof shardMachine>;

export interface OwnershipOptions {
  memberId?: string;
  /** Re-plan at least this often even without etcd events. */
  replanIntervalMs?: number;
}

export class ShardOwnership {
  readonly memberId: string;
  private readonly client: Etcd3;
  private readonly prefix: string;
  private lease: GuardedLease | null = null;
  private watcher: Watcher | null = null;
  private actors = new Map<number, { actor: ShardActor; epoch: string; io: ShardIo }>();
  private timer: ReturnType<typeof setInterval> | null = null;
  private planning: Promise<void> | null = null;
  private replanRequested = false;
  private stopped = false;
  private registered = false;

  constructor(
    private readonly config: Config,
    private readonly dbs: Databases,
    private readonly publisher: Publisher,
    private readonly opts: OwnershipOptions = {},
  ) {
    this.memberId = opts.memberId ?? `${hostname()}-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
    this.client = etcdClient(config.etcd);
    this.prefix = config.etcd.prefix.replace(/\/$/, "");
  }

  /** Shards this member runs an actor for right now. */
  owned(): number[] {
    return [...this.actors.keys()].sort((a, b) => a - b);
  }

  epochOf(shard: number): string | undefined {
    return this.actors.get(shard)?.epoch;
  }

  ready(): boolean {
    return this.registered && !this.stopped && !!this.lease && !this.lease.isLost();
  }

  async start(): Promise<void> {
    this.watcher = await this.client.watch().prefix(`${this.prefix}/`).create();
    this.watcher.on("put", () => this.requestReplan());
    this.watcher.on("delete", () => this.requestReplan());
    this.watcher.on("error", (err) => log.warn("etcd watch error", { err }));
    await this.register();
    this.timer = setInterval(() => this.requestReplan(), this.opts.replanIntervalMs ?? 1_000);
    await this.replan();
  }

  private async register(): Promise<void> {
    this.lease = await grantGuardedLease(this.client, this.config.etcd.leaseTtlSeconds, (reason) => this.onLeaseLost(reason));
    await this.lease.lease.put(`${this.prefix}/members/${this.memberId}`).value("");
    this.registered = true;
    log.info("scheduler member registered", { member: this.memberId, lease: this.lease.id });
  }

  /** Runs synchronously from the lease watchdog: no await before every actor is stopped. */
  private onLeaseLost(reason: string): void {
    this.registered = false;
    const shards = this.owned();
    for (const { actor } of this.actors.values()) actor.send({ type: "STOP" });
    this.actors.clear();
    metrics.shardsOwned.set(0);
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
      .catch((e) => log.warn("shard re-plan failed; will retry", { err: e as Error }))
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
    // Drop actors for shards etcd no longer shows as ours (e.g. a key deleted by an operator).
    for (const shard of this.owned()) if (ownerMap.get(shard) !== this.memberId) await this.stopActor(shard, false);

    const plan = planOwnership({
      me: this.memberId,
      members: members.map((k) => k.slice(k.lastIndexOf("/") + 1)),
      shardCount: this.config.shardCount,
      owners: ownerMap,
    });
    for (const shard of plan.release) await this.stopActor(shard, true);
    for (const shard of plan.claim) {
      if (this.stopped || lease.isLost()) return;
      await this.claim(shard, lease);
    }
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
    let epoch: string;
    try {
      epoch = await acquireFence(this.dbs.forShard(shard), shard, this.memberId);
    } catch (e) {
      await this.deleteIfMine(shard);
      throw e;
    }
    if (lease.isLost() || this.stopped) return;
    this.startActor(shard, epoch);
  }

  private startActor(shard: number, epoch: string): void {
    const io = new ShardIo(this.dbs.forShard(shard), this.publisher, shardIoSettings(this.config));
    const s = this.config.scheduler;
    const settings: ShardSettings = {
      lookaheadMs: s.lookaheadMs,
      pollIntervalMs: s.pollIntervalMs,
      credits: s.credits,
      batchMax: s.batchMax,
      rescueIntervalMs: s.rescueIntervalMs,
      retryDelayMs: 1_000,
      refillBelow: Math.max(1, Math.floor(s.maxLoad / 2)),
      fullReloadMs: 4 * s.pollIntervalMs,
      premarkMs: s.premarkMs,
    };
    const machine = shardMachine.provide({
      actors: {
        load: fromPromiseLoad(io),
        dispatch: fromPromiseDispatch(io),
      },
    });
    const actor = createActor(machine, { input: { shard, epoch, settings, now: Date.now } });
    actor.subscribe({
      next: (snap) => {
        if (snap.value === "retrying") log.warn("shard actor retrying", { shard, epoch, error: snap.context.lastError });
        if (snap.value === "fenced") {
          log.warn("shard actor fenced out; releasing the shard", { shard, epoch });
          if (this.actors.get(shard)?.actor === actor) void this.stopActor(shard, true);
        }
      },
      error: (err) => log.error("shard actor crashed", { shard, err: err as Error }),
    });
    this.actors.set(shard, { actor, epoch, io });
    actor.start();
    metrics.shardsOwned.set(this.actors.size);
    log.info("shard acquired", { shard, epoch, member: this.memberId });
  }

  private async stopActor(shard: number, deleteKey: boolean): Promise<void> {
    const entry = this.actors.get(shard);
    if (entry) {
      entry.actor.send({ type: "STOP" });
      entry.actor.stop();
      this.actors.delete(shard);
      metrics.shardsOwned.set(this.actors.size);
      // Let a dispatch already under way finish (mark + publish) before handing the shard on.
      await entry.io.drain();
      log.info("shard released", { shard, epoch: entry.epoch, member: this.memberId });
    }
    if (deleteKey) await this.deleteIfMine(shard);
  }

  private async deleteIfMine(shard: number): Promise<void> {
    const key = this.shardKey(shard);
    await this.client.if(key, "Value", "==", this.memberId).then(this.client.delete().key(key)).commit();
  }

  /** Stops every actor, then revokes the lease (deleting the member and shard keys at once). */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    // Every actor stops before the first await; keys go with the lease below.
    await Promise.all(this.owned().map((shard) => this.stopActor(shard, false)));
    await this.planning?.catch(() => {});
    await this.watcher?.cancel().catch(() => {});
    await this.lease?.revoke();
    this.client.close();
  }
}

function fromPromiseLoad(io: ShardIo) {
  return fromPromise<LoadOutput, LoadInput>(async ({ input }) => {
    let after = input.after;
    if (input.rescue) {
      const rescued = await io.rescue(input.shard, input.epoch);
      if (rescued > 0) {
        log.warn("rescued in-flight jobs past their deadline", { shard: input.shard, count: rescued });
        // Rescued rows wait again with their old execute_at, which may sort behind a cursor.
        after = [];
      }
    }
    const [jobs, inFlight] = await Promise.all([input.fetchJobs ? io.loadDue(input.shard, new Date(input.horizon), after) : [], io.inFlight(input.shard)]);
    return { jobs, inFlight, fetched: input.fetchJobs };
  });
}

function fromPromiseDispatch(io: ShardIo) {
  return fromPromise<number, { shard: number; epoch: string; jobs: DueJob[] }>(({ input }) => io.dispatch(input.shard, input.epoch, input.jobs));
}
