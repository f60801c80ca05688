/**
 * Weighted fair queuing across users, for every shard a scheduler process owns: one queue, one
 * virtual clock, so a user's share does not depend on how its jobs hash over shards. Pure: no
 * I/O, time passed in.
 *
 * Each user has a virtual time that advances by 1 / weight per dispatched job. Among users whose
 * earliest queued job is due, the one with the smallest virtual time goes next; ties are broken
 * by that job's due time, then its id. Invariants:
 * - virtual times persist across loads (the queue is long-lived and refilled, never rebuilt);
 * - a user that becomes ready (first job queued, or first job turns due) starts at no less than
 *   the current virtual clock and the smallest virtual time among ready users, so idle time
 *   earns no credit and a late arrival is served at once without jumping a backlog;
 * - a user's own jobs leave in (dueAt, id) order, whatever shard they come from;
 * - an item is queued at most once (by id) until it is popped or its shard is dropped;
 * - weights are the user's, set at any time (setWeight), and always within
 *   [MIN_WEIGHT, MAX_WEIGHT]: a value outside (or not a number) is clamped or replaced by the
 *   default, so 1 / weight is finite and the clock can never jump to Infinity.
 */
export const MIN_WEIGHT = 0.01;
export const MAX_WEIGHT = 1000;

/** A weight the queue can use: finite, within [MIN_WEIGHT, MAX_WEIGHT]; `fallback` otherwise. */
export function sanitizeWeight(w: unknown, fallback = 1): number {
  if (typeof w !== "number" || !Number.isFinite(w) || w <= 0) return fallback;
  return Math.min(MAX_WEIGHT, Math.max(MIN_WEIGHT, w));
}

export interface FairItem {
  id: bigint;
  userId: string;
  shard: number;
  /** When the job may start (ms since the epoch). */
  dueAt: number;
}

interface UserState<T extends FairItem> {
  userId: string;
  vtime: number;
  items: MinHeap<T>;
  /** Where the user sits: nowhere (empty), waiting for its head to be due, or ready. */
  where: "none" | "waiting" | "ready";
}

const byItem = (a: FairItem, b: FairItem) => a.dueAt - b.dueAt || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

export class FairQueue<T extends FairItem> {
  private users = new Map<string, UserState<T>>();
  private ids = new Set<bigint>();
  private weights = new Map<string, number>();
  /** Queued items per shard and user (the loaders' stock). */
  private stock = new Map<number, Map<string, number>>();
  /** Users whose head job is due, by (vtime, head). */
  private ready = new MinHeap<UserState<T>>((a, b) => a.vtime - b.vtime || byItem(a.items.peek()!, b.items.peek()!));
  /** Users with queued jobs none of which is due yet, by head due time. */
  private waiting = new MinHeap<UserState<T>>((a, b) => byItem(a.items.peek()!, b.items.peek()!));
  /** The virtual clock: the virtual time of the last dispatch (never decreases). */
  private clock = 0;

  constructor(private readonly defaultWeight = 1) {}

  get size(): number {
    return this.ids.size;
  }

  /** Sets a user's weight; it applies from the user's next dispatch on. */
  setWeight(userId: string, weight: number): void {
    this.weights.set(userId, sanitizeWeight(weight, this.defaultWeight));
  }

  weightOf(userId: string): number {
    return this.weights.get(userId) ?? this.defaultWeight;
  }

  /** Adds an item; returns false when an item with that id is already queued. */
  push(item: T): boolean {
    if (this.ids.has(item.id)) return false;
    this.ids.add(item.id);
    this.addStock(item, 1);
    let u = this.users.get(item.userId);
    if (!u) {
      u = { userId: item.userId, vtime: this.clock, items: new MinHeap<T>(byItem), where: "none" };
      this.users.set(item.userId, u);
    }
    const oldHead = u.items.peek();
    u.items.push(item);
    if (u.where === "none") {
      u.where = "waiting";
      this.waiting.push(u);
    } else if (oldHead && byItem(item, oldHead) < 0) {
      // The head changed, so the user's position in its heap did too.
      const heap = u.where === "ready" ? this.ready : this.waiting;
      heap.remove(u);
      heap.push(u);
    }
    return true;
  }

  /** Moves users whose head is due by `now` from waiting to ready. */
  private promote(now: number): void {
    for (let u = this.waiting.peek(); u && u.items.peek()!.dueAt <= now; u = this.waiting.peek()) {
      this.waiting.pop();
      const floor = Math.max(this.clock, this.ready.peek()?.vtime ?? -Infinity);
      u.vtime = Math.max(u.vtime, floor);
      u.where = "ready";
      this.ready.push(u);
    }
  }

  /** The next item in fair order among those due by `now`, without taking it. */
  peek(now: number): T | undefined {
    this.promote(now);
    return this.ready.peek()?.items.peek();
  }

  /** Takes the next item in fair order among those due by `now`, or undefined. */
  pop(now: number): T | undefined {
    this.promote(now);
    const u = this.ready.pop();
    if (!u) return undefined;
    const item = u.items.pop()!;
    this.ids.delete(item.id);
    this.addStock(item, -1);
    this.clock = Math.max(this.clock, u.vtime);
    u.vtime += 1 / this.weightOf(u.userId);
    this.requeue(u, now);
    return item;
  }

  /** Earliest due time among queued items that are not yet due; undefined if none. */
  nextDueAt(): number | undefined {
    return this.waiting.peek()?.items.peek()!.dueAt;
  }

  /** Per shard, the queued items due by `now` and the earliest due time among them. O(items). */
  dueByShard(now: number): Map<number, { count: number; oldest: number }> {
    const out = new Map<number, { count: number; oldest: number }>();
    for (const shard of this.stock.keys()) out.set(shard, { count: 0, oldest: now });
    for (const u of this.users.values()) {
      for (const i of u.items.toArray()) {
        if (i.dueAt > now) continue;
        const s = out.get(i.shard)!;
        s.count++;
        if (i.dueAt < s.oldest) s.oldest = i.dueAt;
      }
    }
    return out;
  }

  /** Queued items of `userId` from `shard`. */
  stockOf(shard: number, userId: string): number {
    return this.stock.get(shard)?.get(userId) ?? 0;
  }

  /** Drops every item of a shard (its owner changed, or its dispatch failed); returns them. */
  removeShard(shard: number, now: number): T[] {
    const removed: T[] = [];
    if (!this.stock.has(shard)) return removed;
    for (const u of [...this.users.values()]) {
      const mine = u.items.toArray().filter((i) => i.shard === shard);
      if (mine.length === 0) continue;
      if (u.where !== "none") (u.where === "ready" ? this.ready : this.waiting).remove(u);
      const wasReady = u.where === "ready";
      u.items = MinHeap.from(u.items.toArray().filter((i) => i.shard !== shard), byItem);
      for (const i of mine) this.ids.delete(i.id);
      removed.push(...mine);
      u.where = wasReady ? "ready" : "waiting";
      this.requeue(u, now);
    }
    this.stock.delete(shard);
    return removed;
  }

  private addStock(item: FairItem, by: number): void {
    let m = this.stock.get(item.shard);
    if (!m) this.stock.set(item.shard, (m = new Map()));
    const n = (m.get(item.userId) ?? 0) + by;
    if (n > 0) m.set(item.userId, n);
    else m.delete(item.userId);
  }

  /** Puts a user that just left its heap back, keeping its virtual time if it stays ready. */
  private requeue(u: UserState<T>, now: number): void {
    const head = u.items.peek();
    if (!head) {
      u.where = "none";
      // A user with no lead over the clock loses nothing by being forgotten (it would come
      // back at the clock); one with a lead keeps it, so emptying between loads earns nothing.
      if (u.vtime <= this.clock) this.users.delete(u.userId);
      return;
    }
    if (head.dueAt <= now && u.where === "ready") {
      this.ready.push(u);
    } else {
      u.where = "waiting";
      this.waiting.push(u);
    }
  }
}

/** A binary min-heap with removal by identity. */
export class MinHeap<T> {
  private a: T[] = [];
  constructor(private readonly less: (x: T, y: T) => number) {}

  static from<T>(items: T[], less: (x: T, y: T) => number): MinHeap<T> {
    const h = new MinHeap(less);
    for (const x of items) h.push(x);
    return h;
  }

  get size(): number {
    return this.a.length;
  }
  peek(): T | undefined {
    return this.a[0];
  }
  toArray(): T[] {
    return [...this.a];
  }
  push(x: T): void {
    this.a.push(x);
    this.up(this.a.length - 1);
  }
  pop(): T | undefined {
    const top = this.a[0];
    const last = this.a.pop();
    if (this.a.length > 0 && last !== undefined) {
      this.a[0] = last;
      this.down(0);
    }
    return top;
  }
  remove(x: T): boolean {
    const i = this.a.indexOf(x);
    if (i < 0) return false;
    const last = this.a.pop()!;
    if (i < this.a.length) {
      this.a[i] = last;
      this.down(i);
      this.up(i);
    }
    return true;
  }
  private up(i: number): void {
    const a = this.a;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (this.less(a[i]!, a[p]!) >= 0) break;
      [a[i], a[p]] = [a[p]!, a[i]!];
      i = p;
    }
  }
  private down(i: number): void {
    const a = this.a;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < a.length && this.less(a[l]!, a[m]!) < 0) m = l;
      if (r < a.length && this.less(a[r]!, a[m]!) < 0) m = r;
      if (m === i) return;
      [a[i], a[m]] = [a[m]!, a[i]!];
      i = m;
    }
  }
}
