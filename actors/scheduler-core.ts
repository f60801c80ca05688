/**
 * One scheduler process's scheduling core: the dispatcher (the process's fair order and start
 * window) and one shard actor per owned shard, wired together. I/O and time are injected, so
 * the process (src/scheduler/shard-ownership.ts) and the simulation test run the same code.
 *
 *   shard actor ──offer(jobs)──▶ dispatcher ──mark, publish──▶ database, topic
 *        ▲                          │  ▲
 *        └──REFILL, DISPATCH_FAILED─┘  └──observe(committed offsets)── executors' consumer group
 */
import { createActor, fromPromise, type ActorRefFrom, type AnyActorRef } from "xstate";
import { Dispatcher, type Clock, type DispatcherSettings, type DispatchIo, type Marked } from "./dispatcher.ts";
import { shardMachine, type LoadInput, type LoadOutput, type ShardSettings } from "./shard.machine.ts";

export type ShardActor = ActorRefFrom<typeof shardMachine>;

export interface SchedulerIo<M extends Marked> extends DispatchIo<M> {
  load(input: LoadInput): Promise<LoadOutput>;
}

export interface CoreHooks {
  /** A shard's fence moved on (a mark was rejected): ownership should release it. */
  fenced(shard: number): void;
  /** A shard actor reached a final state on its own (fenced) or logged a retry. */
  shardState?(shard: number, state: string, lastError: string | null): void;
  publishFailed?(jobs: number, error: unknown): void;
  /** A user's weight (job_weight), as last read. */
  weightOf(userId: string): number;
  /** A user's cap on jobs dispatched and not finished (absent: none; see DispatcherHooks.limitOf). */
  limitOf?(userId: string): number;
}

export interface CoreSettings {
  shard: ShardSettings;
  dispatch: DispatcherSettings;
}

/** XState's clock interface is the dispatcher's, so one simulated clock can drive both. */
export type CoreClock = Clock;

export class SchedulerCore<M extends Marked> {
  readonly dispatcher: Dispatcher<M>;
  private actors = new Map<number, ShardActor>();

  constructor(
    private readonly io: SchedulerIo<M>,
    private readonly settings: CoreSettings,
    private readonly clock: CoreClock,
    private readonly hooks: CoreHooks,
  ) {
    this.dispatcher = new Dispatcher(
      io,
      {
        fenced: (shard) => hooks.fenced(shard),
        markFailed: (shard, error) => this.actors.get(shard)?.send({ type: "DISPATCH_FAILED", error: String((error as Error)?.message ?? error) }),
        publishFailed: (jobs, error) => hooks.publishFailed?.(jobs, error),
        refill: (shard) => this.actors.get(shard)?.send({ type: "REFILL" }),
        weightOf: (userId) => hooks.weightOf(userId),
        limitOf: (userId) => hooks.limitOf?.(userId) ?? Infinity,
        hasMore: (shard, userId) => {
          const u = this.actors.get(shard)?.getSnapshot().context.users.get(userId);
          return u !== undefined && !u.exhausted;
        },
        knownPairs: () => {
          let n = 0;
          for (const a of this.actors.values()) n += a.getSnapshot().context.users.size;
          return n;
        },
      },
      settings.dispatch,
      clock,
    );
  }

  owned(): number[] {
    return [...this.actors.keys()].sort((a, b) => a - b);
  }

  actorOf(shard: number): ShardActor | undefined {
    return this.actors.get(shard);
  }

  /** Starts dispatching a shard with the epoch its fence holds. */
  addShard(shard: number, epoch: string): void {
    if (this.actors.has(shard)) return;
    this.dispatcher.addShard(shard, epoch);
    const machine = shardMachine.provide({
      actors: {
        load: fromPromise<LoadOutput, LoadInput>(async ({ input }) => {
          const sentAt = this.clock.now();
          const out = await this.io.load(input);
          this.dispatcher.observeDbClock(out.dbNow, sentAt, this.clock.now());
          return out;
        }),
      },
      actions: { offer: (_, params) => this.dispatcher.offer(params.shard, params.jobs) },
    });
    const actor = createActor(machine, {
      clock: this.clock as never,
      input: {
        shard,
        epoch,
        settings: this.settings.shard,
        // The shard actor's horizon and due times are the database's clock.
        now: () => this.dispatcher.now(),
        stockOf: (userId) => this.dispatcher.queue.stockOf(shard, userId),
        stocking: () => this.dispatcher.stocking(),
      },
    });
    actor.subscribe((snap) => {
      const state = String(snap.value);
      if (state === "retrying" || state === "fenced") this.hooks.shardState?.(shard, state, snap.context.lastError);
      if (state === "fenced") this.hooks.fenced(shard);
    });
    this.actors.set(shard, actor);
    actor.start();
  }

  /** Shards whose actor is waiting to retry after an error (e.g. its database is unreachable). */
  retrying(): number[] {
    return [...this.actors].filter(([, a]) => a.getSnapshot().value === "retrying").map(([shard]) => shard);
  }

  /** A job of the shard became waiting, due at `at` (null: every shard owned). */
  wake(shard: number | null, at: number): void {
    if (shard === null) for (const a of this.actors.values()) a.send({ type: "WAKE", at });
    else this.actors.get(shard)?.send({ type: "WAKE", at });
  }

  /** Stops a shard synchronously (no I/O of its actor after this returns); resolves once its dispatches finished. */
  removeShard(shard: number): Promise<void> {
    const actor = this.actors.get(shard);
    if (actor) stopActor(actor);
    this.actors.delete(shard);
    return this.dispatcher.removeShard(shard);
  }

  /** Stops every shard at once (lease lost): synchronous, no await before the last actor stops. */
  removeAll(): Promise<void> {
    return Promise.all(this.owned().map((s) => this.removeShard(s))).then(() => {});
  }

  stop(): Promise<void> {
    const done = this.removeAll();
    this.dispatcher.stop();
    return done;
  }
}

function stopActor(actor: AnyActorRef): void {
  actor.send({ type: "STOP" });
  actor.stop();
}
