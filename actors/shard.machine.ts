/**
 * The shard actor: one per owned shard, the single owner of that shard's scheduling state
 * (fair queue, in-flight count). Database reads and writes run as invoked promises; the
 * machine only decides what happens next.
 *
 *   loading ──done──▶ deciding ──ready & credits──▶ sending ──done──▶ deciding
 *      ▲                 │                             │
 *      │                 └──nothing to do──▶ waiting ──┤ (timer: next execute_at or next poll)
 *      │                                        │      │
 *      └────────── poll due / WAKE ─────────────┘      └─error──▶ retrying ─1s─▶ loading
 *   any state ──STOP──▶ stopped (final)      any I/O ──FencedOutError──▶ fenced (final)
 *
 * Invariants:
 * - jobs are dispatched in the fair queue's order, once due; "due" here means execute_at <= now
 *   + `premarkMs`: the dispatch step marks a job `scheduled` up to that much early so the SQL
 *   is off the critical path, and publishes it at execute_at (src/scheduler/shard-io.ts);
 * - dispatched-but-unfinished jobs (in-flight) never exceed `credits`: a batch is at most the
 *   remaining credit, and the in-flight count is re-read from SQL on every load;
 * - rescue of expired in-flight jobs runs at most every `rescueIntervalMs`, before a load;
 * - every load refreshes the in-flight count, but reads waiting jobs only when the queue is
 *   below `refillBelow` or `fullReloadMs` has passed since the last read (re-reading thousands
 *   of rows already queued was most of the database's work in a backlog); the periodic full
 *   read bounds how long a newly active user can go unseen;
 * - a load reads a backlogged user's rows only after the last one queued (FairQueue
 *   backlogCursors), except the first load and the first after a dispatch error (whose rows
 *   went back to waiting, behind the cursor); in a long backlog this turned ~5 row reads per
 *   dispatched job into ~1;
 * - after STOP or fencing the actor performs no further I/O (a stopped actor's pending
 *   promises are ignored by XState).
 */
import { assign, fromPromise, setup } from "xstate";
import { FairQueue, type BacklogCursor } from "./fair-queue.ts";

export interface DueJob {
  id: bigint;
  userId: string;
  weight: number;
  executeAt: number;
}

export interface ShardSettings {
  lookaheadMs: number;
  pollIntervalMs: number;
  credits: number;
  batchMax: number;
  rescueIntervalMs: number;
  retryDelayMs: number;
  refillBelow: number;
  fullReloadMs: number;
  premarkMs: number;
}

export interface ShardInput {
  shard: number;
  epoch: string;
  settings: ShardSettings;
  now: () => number;
}

interface ShardContext extends ShardInput {
  queue: FairQueue<DueJob>;
  inFlight: number;
  lastLoadAt: number;
  lastFetchAt: number;
  lastRescueAt: number;
  batch: DueJob[];
  dispatched: number;
  lastError: string | null;
  /** False until a load without cursors, and again after a dispatch error (its rows went back). */
  cursorsValid: boolean;
}

/**
 * How long a backlogged user's last queued job must have been due before loads read only after
 * it: covers clock differences between the processes that set execute_at and this one.
 */
export const CURSOR_MARGIN_MS = 1_000;

export interface LoadInput {
  shard: number;
  epoch: string;
  horizon: number;
  /** Rescue expired in-flight jobs first. */
  rescue: boolean;
  /** Read waiting jobs (otherwise only the in-flight count). */
  fetchJobs: boolean;
  /** Backlogged users' last queued job: read only their rows after it (FairQueue.backlogCursors). */
  after: BacklogCursor[];
}

export interface LoadOutput {
  jobs: DueJob[];
  inFlight: number;
  fetched: boolean;
}

export type ShardEvent = { type: "STOP" } | { type: "WAKE" };

export const isFencedOut = (e: unknown) => (e as { name?: string } | null)?.name === "FencedOutError";

export const shardMachine = setup({
  types: {
    context: {} as ShardContext,
    input: {} as ShardInput,
    events: {} as ShardEvent,
  },
  actors: {
    load: fromPromise<LoadOutput, LoadInput>(async () => {
      throw new Error("load not provided");
    }),
    dispatch: fromPromise<number, { shard: number; epoch: string; jobs: DueJob[] }>(async () => {
      throw new Error("dispatch not provided");
    }),
  },
  delays: {
    /** Until the next queued job is due, or the next poll, whichever is first. */
    untilNextWake: ({ context: c }) => {
      const now = c.now();
      const nextPoll = c.lastLoadAt + c.settings.pollIntervalMs;
      const free = c.settings.credits - c.inFlight;
      const nextDue = free > 0 ? (c.queue.nextDueAt() ?? Infinity) - c.settings.premarkMs : Infinity;
      return Math.max(0, Math.min(nextPoll, nextDue) - now);
    },
    retryDelay: ({ context: c }) => c.settings.retryDelayMs,
  },
  guards: {
    canSend: ({ context: c }) => c.settings.credits - c.inFlight > 0 && c.queue.hasReady(c.now() + c.settings.premarkMs),
    pollDue: ({ context: c }) => c.now() - c.lastLoadAt >= c.settings.pollIntervalMs,
    fencedOut: ({ event }) => isFencedOut((event as { error?: unknown }).error),
  },
}).createMachine({
  id: "shard",
  context: ({ input }) => ({
    ...input,
    queue: new FairQueue<DueJob>(),
    inFlight: 0,
    lastLoadAt: -Infinity,
    lastFetchAt: -Infinity,
    lastRescueAt: -Infinity,
    batch: [],
    dispatched: 0,
    lastError: null,
    cursorsValid: false,
  }),
  initial: "loading",
  on: { STOP: ".stopped" },
  states: {
    loading: {
      invoke: {
        src: "load",
        input: ({ context: c }) => ({
          shard: c.shard,
          epoch: c.epoch,
          horizon: c.now() + c.settings.lookaheadMs,
          rescue: c.now() - c.lastRescueAt >= c.settings.rescueIntervalMs,
          fetchJobs: c.queue.size < c.settings.refillBelow || c.now() - c.lastFetchAt >= c.settings.fullReloadMs,
          after: c.cursorsValid ? c.queue.backlogCursors(c.now() - CURSOR_MARGIN_MS) : [],
        }),
        onDone: {
          target: "deciding",
          actions: assign(({ context: c, event }) => {
            for (const job of event.output.jobs) c.queue.push(job);
            const now = c.now();
            return {
              inFlight: event.output.inFlight,
              lastLoadAt: now,
              lastFetchAt: event.output.fetched ? now : c.lastFetchAt,
              cursorsValid: c.cursorsValid || event.output.fetched,
              lastRescueAt: now - c.lastRescueAt >= c.settings.rescueIntervalMs ? now : c.lastRescueAt,
              lastError: null,
            };
          }),
        },
        onError: [
          { guard: "fencedOut", target: "fenced" },
          { target: "retrying", actions: assign({ lastError: ({ event }) => String((event.error as Error)?.message ?? event.error) }) },
        ],
      },
    },
    deciding: {
      always: [
        { guard: "canSend", target: "sending" },
        { guard: "pollDue", target: "loading" },
        { target: "waiting" },
      ],
    },
    sending: {
      entry: assign(({ context: c }) => {
        const now = c.now() + c.settings.premarkMs;
        const n = Math.min(c.settings.batchMax, c.settings.credits - c.inFlight);
        const batch: DueJob[] = [];
        for (let i = 0; i < n; i++) {
          const job = c.queue.pop(now);
          if (!job) break;
          batch.push(job);
        }
        return { batch };
      }),
      invoke: {
        src: "dispatch",
        input: ({ context: c }) => ({ shard: c.shard, epoch: c.epoch, jobs: c.batch }),
        onDone: {
          target: "deciding",
          // Count the whole batch as in flight: rows skipped by the guard (cancelled meanwhile)
          // are corrected by the next load's count.
          actions: assign(({ context: c, event }) => ({ inFlight: c.inFlight + c.batch.length, dispatched: c.dispatched + event.output, batch: [] })),
        },
        onError: [
          { guard: "fencedOut", target: "fenced" },
          // The batch's rows went back to waiting; the next load queues them again.
          { target: "retrying", actions: assign({ batch: [], cursorsValid: false, lastError: ({ event }) => String((event.error as Error)?.message ?? event.error) }) },
        ],
      },
    },
    waiting: {
      after: { untilNextWake: { target: "deciding", reenter: true } },
      on: { WAKE: "loading" },
    },
    retrying: {
      after: { retryDelay: "loading" },
    },
    stopped: { type: "final" },
    fenced: { type: "final" },
  },
});
