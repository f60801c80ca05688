/**
 * The shard actor: one per owned shard, the single owner of that shard's loading state (which
 * users it has seen, where each user's next rows start, when it last rescued). It loads the
 * shard's waiting jobs that are due within the look-ahead and offers them to the process's
 * dispatcher (actors/dispatcher.ts), which owns the one fair order of every shard of the
 * process. Database reads run as an invoked promise; the machine only decides when to load.
 *
 *   loading ──done──▶ idle ──REFILL when a user runs low, the next due job within the
 *      │                │     look-ahead, or the poll timer──▶ loading
 *      │                └──WAKE (a job was created or is retried)──▶ idle (timer re-armed)
 *      └──error──▶ retrying ──retryDelay──────────────────────────────────▶ loading
 *   any state ──STOP──▶ stopped (final)     loading ──FencedOutError──▶ fenced (final)
 *   any state ──DISPATCH_FAILED──▶ retrying (cursors forgotten)
 *
 * Invariants:
 * - heavy users stay stocked: a load asks, per user, for enough rows to bring the user's queued
 *   jobs from this shard back to the dispatcher's target (`stocking`: SCHEDULER_PER_USER_LOAD,
 *   less when many users share the SCHEDULER_MAX_QUEUED cap), and never more rows than the
 *   cap leaves room for; the dispatcher sends REFILL as soon as a user it serves drops below
 *   the low-water mark, and a refill load runs at once unless every user below
 *   it is exhausted (its last load returned fewer rows than asked: nothing more is due yet);
 * - a load reads a user's rows after the user's cursor, never re-reading what is queued or was
 *   dispatched. A cursor is the last row read that was due at least CURSOR_MARGIN_MS before the
 *   database's clock at that load: every transition into the waiting state sets due_at to the
 *   database's now() or later, so a row that starts waiting later always sorts after it (the
 *   margin covers transactions still open when the load read). Rows the dispatcher popped but
 *   could not mark (DISPATCH_FAILED) are still waiting behind the cursors, so cursors are
 *   forgotten and the next load reads every user from the start;
 * - loads follow the work, not a clock: a load reports the earliest waiting job beyond its
 *   horizon, and the next load runs when that job comes within the look-ahead; writers of
 *   waiting jobs (the API, an executor's retry) notify the shard's due time (WAKE), so a job
 *   created for a second from now is loaded at once. `pollIntervalMs` is only the backstop for a
 *   notification lost while the listener reconnected, so an idle shard costs next to nothing;
 * - rescue of expired in-flight jobs runs at most every `rescueIntervalMs`, inside a load, not
 *   within RESCUE_AFTER_OUTAGE_MS of a failed load, and looks only at deadlines since the previous rescue (less RESCUE_MARGIN_MS, which covers
 *   transactions still open then), so its cost follows the rate, not the history; every
 *   `fullRescueMs`, and first of all, it looks at every deadline;
 * - after STOP or fencing the actor performs no further I/O (a stopped actor's pending promises
 *   are ignored by XState).
 */
import { assign, fromPromise, setup } from "xstate";
import { FencedOutError } from "./errors.ts";
import type { FairItem } from "./fair-queue.ts";

export interface Cursor {
  dueAt: number;
  id: bigint;
}

export interface ShardSettings {
  /** Jobs due within this window are loaded ahead and dispatched at their due time. */
  lookaheadMs: number;
  /** Loads follow notifications and due times; this is the backstop poll of an idle shard. */
  pollIntervalMs: number;
  /** How often the shard's in-flight deadlines are checked (the rescue). */
  rescueIntervalMs: number;
  /** Every this long a rescue looks at every in-flight deadline, not only the recent ones. */
  fullRescueMs: number;
  /** After a failed load or dispatch, the shard tries again after this long. */
  retryDelayMs: number;
  /** Rows per load at most. */
  maxLoad: number;
}

/** How to stock the fair queue now (the dispatcher's `stocking`): per user target, refill mark, room left. */
export interface Stocking {
  target: number;
  lowWater: number;
  room: number;
  /** Rows for a user the shard has not loaded before. */
  newUser: number;
}

export interface LoadUser {
  userId: string;
  /** Rows to read at most (0: none). */
  limit: number;
  after: Cursor | null;
}

export interface LoadInput {
  shard: number;
  epoch: string;
  horizon: number;
  /** Rescue expired in-flight jobs first... */
  rescue: boolean;
  /** ...whose deadline is at or after this (database clock, ms); null: every deadline. */
  rescueSince: number | null;
  /** Users seen before: their limits and cursors. */
  users: LoadUser[];
  /** Rows to read at most for a user not listed. */
  newUserLimit: number;
  maxRows: number;
  /**
   * Users are served from the one after this (wrapping around), so a load capped by maxRows
   * does not always serve the same low ids first: the last user of the previous load's rows.
   */
  startAfterUser: string | null;
}

export interface LoadOutput {
  /** Per user in (dueAt, id) order; users in serving order (from startAfterUser, wrapping). */
  jobs: FairItem[];
  /** The earliest due time of a waiting job beyond the horizon (null: none). */
  nextDue: number | null;
  /** The database's clock when the load read (ms since the epoch). */
  dbNow: number;
  /** The database's clock when the rescue ran (null: no rescue). */
  rescuedAt: number | null;
}

export interface ShardInput {
  shard: number;
  epoch: string;
  settings: ShardSettings;
  now: () => number;
  /** Queued jobs of a user from this shard, as the dispatcher holds them now. */
  stockOf: (userId: string) => number;
  stocking: () => Stocking;
}

interface UserLoad {
  cursor: Cursor | null;
  /** The last load returned fewer rows than it asked for: nothing more is due yet. */
  exhausted: boolean;
}

interface ShardContext extends ShardInput {
  users: Map<string, UserLoad>;
  /** The load under way (or last made), and when it started. */
  request: LoadInput | null;
  lastLoadAt: number;
  lastRescueAt: number;
  lastFullRescueAt: number;
  /** Deadlines before this were looked at by an earlier rescue (database clock). */
  rescueSince: number | null;
  /**
   * A REFILL arrived while loading, or the load met users for the first time (it took only a
   * first helping of each, so it tops them up at once).
   */
  refillPending: boolean;
  /** The earliest waiting job the last load left beyond its horizon (Infinity: none). */
  nextDueAt: number;
  /** The earliest due time a WAKE announced since the last load began (Infinity: none). */
  wakeAt: number;
  /** The last user the previous load served (the next starts after it). */
  startAfterUser: string | null;
  lastError: string | null;
  /** When a load last failed (-Infinity: never). */
  lastFailedAt: number;
}

/**
 * How long before the database's clock a row must have been due for loads to read only after
 * it: covers transactions that set due_at from now() and were still open when the load read.
 */
export const CURSOR_MARGIN_MS = 1_000;

/** A rescue looks this far back before the previous one: claims still open then commit within it. */
export const RESCUE_MARGIN_MS = 10_000;

/**
 * No rescue until this long after the shard's last failed load: while its database was out,
 * runs could not record their outcomes and passed their deadlines; their executors record them
 * once it answers again (retrying every 2 s at most), and a rescue before that would charge each
 * a lost attempt (and dead-letter those on their last).
 */
export const RESCUE_AFTER_OUTAGE_MS = 10_000;

/**
 * Loads triggered by due times come at least a quarter of the look-ahead apart (a steady stream
 * has a job due every millisecond, and each load would otherwise trigger the next at once): jobs
 * due up to three quarters of the look-ahead after a load are still loaded ahead of time.
 * Loads triggered by WAKE come at least WAKE_GAP_MS apart, so a burst of notifications is one load.
 */
export const WAKE_GAP_MS = 20;

export type ShardEvent =
  | { type: "STOP" }
  | { type: "REFILL" }
  /** A job of this shard was made waiting, due at `at` (ms). */
  | { type: "WAKE"; at: number }
  | { type: "DISPATCH_FAILED"; error: string };

export const isFencedOut = (e: unknown) => e instanceof FencedOutError;

const errorText = (e: unknown) => String((e as Error)?.message ?? e);

/**
 * What the next load asks for: per known user, enough to top it up from its cursor; a user
 * without a cursor is read from the start of its rows, which include those already queued, so
 * it asks for the whole target (the dispatcher's queue drops what it holds already), and
 * nothing while its stock is full (a backlog due in the future is not re-read every poll).
 */
export function loadRequest(c: Omit<ShardContext, "request">): LoadInput {
  const now = c.now();
  const { target, room, newUser } = c.stocking();
  const users: LoadUser[] = [];
  for (const [userId, u] of c.users) {
    const stock = c.stockOf(userId);
    const limit = u.cursor ? Math.max(0, target - stock) : stock >= target ? 0 : target;
    users.push({ userId, limit, after: u.cursor });
  }
  return {
    shard: c.shard,
    epoch: c.epoch,
    horizon: now + c.settings.lookaheadMs,
    rescue: now - c.lastRescueAt >= c.settings.rescueIntervalMs && now - c.lastFailedAt >= RESCUE_AFTER_OUTAGE_MS,
    rescueSince: now - c.lastFullRescueAt >= c.settings.fullRescueMs ? null : c.rescueSince,
    users,
    newUserLimit: newUser,
    maxRows: Math.min(c.settings.maxLoad, room),
    startAfterUser: c.startAfterUser,
  };
}

/** The users' loading state after a load returned `out` for `req`. */
export function afterLoad(c: ShardContext, req: LoadInput, out: LoadOutput): Map<string, UserLoad> {
  const byUser = new Map<string, FairItem[]>();
  for (const j of out.jobs) {
    const list = byUser.get(j.userId);
    if (list) list.push(j);
    else byUser.set(j.userId, [j]);
  }
  const asked = new Map(req.users.map((u) => [u.userId, u]));
  const next = new Map<string, UserLoad>();
  const eligibleBy = out.dbNow - CURSOR_MARGIN_MS;
  for (const [userId, rows] of byUser) {
    const prev = asked.get(userId);
    let cursor = prev?.after ?? null;
    for (const r of rows) if (r.dueAt <= eligibleBy) cursor = { dueAt: r.dueAt, id: r.id };
    const limit = prev ? prev.limit : req.newUserLimit;
    next.set(userId, { cursor, exhausted: rows.length < limit && out.jobs.length < req.maxRows });
  }
  // Users that returned nothing: keep them while they have jobs queued (their cursor is still
  // good and a refill may find more); forget them otherwise.
  for (const u of req.users) {
    if (byUser.has(u.userId)) continue;
    if (c.stockOf(u.userId) > 0) next.set(u.userId, { cursor: u.after, exhausted: u.limit > 0 && out.jobs.length < req.maxRows });
  }
  return next;
}

/** When the next load is due: a backstop poll, a rescue, the next waiting job, or a WAKE. */
export function nextLoadAt(c: Omit<ShardContext, "request">): number {
  const { lookaheadMs, pollIntervalMs, rescueIntervalMs } = c.settings;
  // The clock is the database's as the dispatcher estimates it, and the estimate can step (the
  // first reading corrects a skewed process clock): a last load "in the future" happened now.
  const now = c.now();
  const lastLoadAt = Math.min(c.lastLoadAt, now);
  return Math.min(
    lastLoadAt + pollIntervalMs,
    Math.min(c.lastRescueAt, now) + rescueIntervalMs,
    Math.max(c.nextDueAt - lookaheadMs, lastLoadAt + lookaheadMs / 4),
    Math.max(c.wakeAt - lookaheadMs, lastLoadAt + WAKE_GAP_MS),
  );
}

/** Some user is below the low-water mark and might have more rows. */
export function needsRefill(c: ShardContext): boolean {
  const { lowWater, room } = c.stocking();
  if (room <= 0) return false;
  for (const [userId, u] of c.users) if (!u.exhausted && c.stockOf(userId) < lowWater) return true;
  return false;
}

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
  },
  actions: {
    /** Hands loaded jobs to the dispatcher. */
    offer: (_, _params: { shard: number; jobs: FairItem[] }) => {},
  },
  delays: {
    untilNextLoad: ({ context: c }) => Math.max(0, nextLoadAt(c) - c.now()),
    retryDelay: ({ context: c }) => c.settings.retryDelayMs,
  },
  guards: {
    needsRefill: ({ context }) => needsRefill(context),
    refillNow: ({ context }) => context.refillPending && needsRefill(context),
    fencedOut: ({ event }) => isFencedOut((event as { error?: unknown }).error),
  },
}).createMachine({
  id: "shard",
  context: ({ input }) => ({
    ...input,
    users: new Map(),
    request: null,
    lastLoadAt: -Infinity,
    lastRescueAt: -Infinity,
    lastFullRescueAt: -Infinity,
    rescueSince: null,
    refillPending: false,
    nextDueAt: Infinity,
    wakeAt: Infinity,
    startAfterUser: null,
    lastError: null,
    lastFailedAt: -Infinity,
  }),
  initial: "loading",
  on: {
    STOP: ".stopped",
    DISPATCH_FAILED: { target: ".retrying", actions: assign({ users: () => new Map(), lastError: ({ event }) => event.error, lastFailedAt: ({ context }) => context.now() }) },
  },
  states: {
    loading: {
      // Whatever a WAKE before this load announced is read by it, or reported as nextDue.
      entry: assign({ refillPending: false, wakeAt: Infinity, request: ({ context }) => loadRequest(context), lastLoadAt: ({ context }) => context.now() }),
      on: {
        REFILL: { actions: assign({ refillPending: true }) },
        WAKE: { actions: assign({ wakeAt: ({ context, event }) => Math.min(context.wakeAt, event.at) }) },
      },
      invoke: {
        src: "load",
        input: ({ context }) => context.request!,
        onDone: {
          target: "deciding",
          actions: [
            { type: "offer", params: ({ context, event }) => ({ shard: context.shard, jobs: event.output.jobs }) },
            assign(({ context: c, event }) => ({
              refillPending: c.refillPending || event.output.jobs.some((j) => !c.users.has(j.userId)),
              users: afterLoad(c, c.request!, event.output),
              nextDueAt: event.output.nextDue ?? Infinity,
              startAfterUser: event.output.jobs.at(-1)?.userId ?? c.startAfterUser,
              lastRescueAt: c.request!.rescue ? c.lastLoadAt : c.lastRescueAt,
              lastFullRescueAt: c.request!.rescue && c.request!.rescueSince === null ? c.lastLoadAt : c.lastFullRescueAt,
              rescueSince: event.output.rescuedAt !== null ? event.output.rescuedAt - RESCUE_MARGIN_MS : c.rescueSince,
              lastError: null,
            })),
          ],
        },
        onError: [
          { guard: "fencedOut", target: "fenced" },
          { target: "retrying", actions: assign({ lastError: ({ event }) => errorText(event.error), lastFailedAt: ({ context }) => context.now() }) },
        ],
      },
    },
    deciding: {
      always: [{ guard: "refillNow", target: "loading" }, { target: "idle" }],
    },
    idle: {
      after: { untilNextLoad: "loading" },
      on: {
        REFILL: { guard: "needsRefill", target: "loading" },
        // Re-entering re-arms the timer for the earlier wake.
        WAKE: { target: "idle", reenter: true, actions: assign({ wakeAt: ({ context, event }) => Math.min(context.wakeAt, event.at) }) },
      },
    },
    retrying: {
      after: { retryDelay: "loading" },
    },
    stopped: { type: "final" },
    fenced: { type: "final" },
  },
});
