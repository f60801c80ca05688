/**
 * Weighted fair queuing across users, for every shard a scheduler process owns: one queue, one
 * virtual clock, so a user's share does not depend on how its jobs hash over shards. Pure: no
 * I/O, time passed in.
 *
 * Each user has a virtual time that advances by cost / weight per dispatched job (cost: 1 for a
 * job of the reference size, more for one that holds an executor slot longer: costFn). Among users whose
 * earliest queued job is due, the one with the smallest virtual time goes next; ties are broken
 * by that job's due time, then its id. Invariants:
 * - virtual times persist across loads (the queue is long-lived and refilled, never rebuilt);
 * - a user that becomes ready (first job queued, or first job turns due) starts at no less than
 *   the current virtual clock and the smallest virtual time among ready users, so idle time
 *   earns no credit and a late arrival is served at once without jumping a backlog;
 * - a user's own due jobs leave in (priority, dueAt, id) order, whatever shard they come from
 *   (priority decides which of a user's due jobs, never which user);
 * - a parked user (at its concurrency cap, or paused: the caller decides) is out of the order
 *   until unparked: its jobs stay queued, it does not advance the clock, and it comes back like
 *   a user that just became ready (no credit for the time parked);
 * - an item is queued at most once (by id); a copy with another due time replaces it (the row
 *   was rescheduled: the later load read the newer row), and `remove` takes it out at once
 *   (cancelled), so a stale copy never leaves in its place;
 * - every operation on one item is O(log n) (heaps keep each entry's position);
 * - weights come from `weightOf` at each dispatch (the caller owns them, so the queue holds no
 *   state for users without jobs) and are used within [MIN_WEIGHT, MAX_WEIGHT]: a value outside
 *   (or not a number) is clamped or replaced by the default, so 1 / weight is finite and the
 *   clock can never jump to Infinity;
 * - a user with no queued jobs is forgotten once the clock has caught up with its virtual time
 *   (`prune`), so memory follows the users with work, not every user ever seen.
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
  /** When the job may start (ms since the epoch, the database's clock). */
  dueAt: number;
  /** Inside one user, which due job goes first: 0 high, 1 normal (absent), 2 low. */
  priority?: number;
}

interface Node<T> {
  item: T;
  pos: number;
  /** In the user's `due` heap (else in `later`). */
  due: boolean;
}

interface UserState<T extends FairItem> {
  userId: string;
  vtime: number;
  /** Items not yet seen due, by (dueAt, id)... */
  later: MinHeap<Node<T>>;
  /** ...and those seen due (moved over by `ripen`), by (priority, dueAt, id). */
  due: MinHeap<Node<T>>;
  /**
   * Where the user sits: nowhere (empty), waiting for its first item to be due, ready, or parked
   * (out of the order, whatever its items).
   */
  where: "none" | "waiting" | "ready" | "parked";
  /** Position in the heap named by `where`. */
  pos: number;
}

const NORMAL = 1;
const byItem = (a: FairItem, b: FairItem) => a.dueAt - b.dueAt || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
const byPriority = (a: FairItem, b: FairItem) => (a.priority ?? NORMAL) - (b.priority ?? NORMAL) || byItem(a, b);
const byNode = <T extends FairItem>(a: Node<T>, b: Node<T>) => byItem(a.item, b.item);
const byNodePriority = <T extends FairItem>(a: Node<T>, b: Node<T>) => byPriority(a.item, b.item);
/** The user's next item: its first due one by priority, else its earliest. */
const head = <T extends FairItem>(u: UserState<T>) => (u.due.peek() ?? u.later.peek()!).item;
/** The user's earliest item. */
const earliest = <T extends FairItem>(u: UserState<T>): T | undefined => {
  const a = u.due.peek()?.item;
  const b = u.later.peek()?.item;
  return !a ? b : !b ? a : a.dueAt <= b.dueAt ? a : b;
};
const size = <T extends FairItem>(u: UserState<T>) => u.due.size + u.later.size;
const nodePos = { get: (n: { pos: number }) => n.pos, set: (n: { pos: number }, i: number) => (n.pos = i) };

export class FairQueue<T extends FairItem> {
  private users = new Map<string, UserState<T>>();
  private nodes = new Map<bigint, Node<T>>();
  /** Queued items per shard and user (the loaders' stock). */
  private stock = new Map<number, Map<string, number>>();
  private pairs = 0;
  /** Users whose head job is due, by (vtime, head). */
  private ready = new MinHeap<UserState<T>>((a, b) => a.vtime - b.vtime || byItem(head(a), head(b)), nodePos);
  /** Users with queued jobs none of which is due yet (or just unparked), by earliest due time. */
  private waiting = new MinHeap<UserState<T>>((a, b) => byItem(earliest(a)!, earliest(b)!), nodePos);
  /** Parked users (see `park`). */
  private parked = new Set<UserState<T>>();
  /** The virtual clock: the virtual time of the last dispatch (never decreases). */
  private clock = 0;

  constructor(
    private readonly weightFn: (userId: string) => number = () => 1,
    private readonly defaultWeight = 1,
    /** What one of the user's turns costs, in turns (1: a job of the reference size; see Dispatcher.costOf). */
    private readonly costFn: (userId: string) => number = () => 1,
  ) {}

  get size(): number {
    return this.nodes.size;
  }

  /** (shard, user) pairs with queued items: what the loaders keep stocked. */
  get stockedPairs(): number {
    return this.pairs;
  }

  /** Users the queue holds state for (with jobs, or with a lead over the clock). */
  get userCount(): number {
    return this.users.size;
  }

  weightOf(userId: string): number {
    return sanitizeWeight(this.weightFn(userId), this.defaultWeight);
  }

  /**
   * Adds an item; returns false when the same item (id and due time) is already queued. A copy
   * with another due time replaces the queued one.
   */
  push(item: T): boolean {
    const old = this.nodes.get(item.id);
    if (old) {
      if (old.item.dueAt === item.dueAt) return false;
      this.remove(item.id);
    }
    const node: Node<T> = { item, pos: -1, due: false };
    this.nodes.set(item.id, node);
    this.addStock(item, 1);
    let u = this.users.get(item.userId);
    if (!u) {
      u = { userId: item.userId, vtime: this.clock, later: new MinHeap<Node<T>>(byNode, nodePos), due: new MinHeap<Node<T>>(byNodePriority, nodePos), where: "none", pos: -1 };
      this.users.set(item.userId, u);
    }
    const oldHead = u.where === "none" ? undefined : head(u);
    u.later.push(node);
    if (u.where === "none") {
      u.where = "waiting";
      this.waiting.push(u);
    } else if (oldHead && head(u) !== oldHead) {
      // The head changed, so the user's position in its heap did too.
      this.reposition(u);
    }
    return true;
  }

  /** Takes an item out (its job was cancelled or moved); returns it, or undefined if not queued. */
  remove(id: bigint): T | undefined {
    const node = this.nodes.get(id);
    if (!node) return undefined;
    const u = this.users.get(node.item.userId)!;
    const wasHead = head(u) === node.item;
    (node.due ? u.due : u.later).remove(node);
    this.nodes.delete(id);
    this.addStock(node.item, -1);
    if (size(u) === 0) {
      this.leave(u);
      u.where = "none";
      this.forgetIfIdle(u);
    } else if (wasHead) {
      // A new head: the user's position follows it (a ready user left with nothing due goes
      // back to waiting at the next promote).
      this.reposition(u);
    }
    return node.item;
  }

  /** Takes out every queued item of a user (all its jobs were cancelled); returns how many. */
  removeUser(userId: string): number {
    const u = this.users.get(userId);
    if (!u) return 0;
    const ids = [...u.due.toArray(), ...u.later.toArray()].map((n) => n.item.id);
    for (const id of ids) this.remove(id);
    return ids.length;
  }

  /**
   * Gives back what a dispatch cost the user (1 / weight of virtual time): the job popped did not
   * leave (its row had been cancelled or moved), so it must not count against the user's share.
   */
  refund(userId: string): void {
    const u = this.users.get(userId);
    if (!u) return;
    u.vtime -= this.costFn(userId) / this.weightOf(userId);
    this.reposition(u);
  }

  /**
   * Takes a user out of the order (it may not dispatch now: at its cap, or paused); its items
   * stay queued. No-op for a user without items or already parked.
   */
  park(userId: string): void {
    const u = this.users.get(userId);
    if (!u || u.where === "none" || u.where === "parked") return;
    this.leave(u);
    u.where = "parked";
    this.parked.add(u);
  }

  /**
   * Puts a parked user back: it waits for its next due item like any other (see `promote`), so
   * it earns no credit for the time parked. `skipped`: it was parked only to be passed over for
   * one batch (it could not go, others could) and keeps its place: back among the ready users at
   * its own virtual time if it has a due item.
   */
  unpark(userId: string, skipped = false): void {
    const u = this.users.get(userId);
    if (!u || u.where !== "parked") return;
    this.parked.delete(u);
    if (skipped && u.due.size > 0) {
      u.where = "ready";
      this.ready.push(u);
      return;
    }
    u.where = "waiting";
    this.waiting.push(u);
  }

  /** Jobs queued of a user (any shard, due or not). */
  queuedOf(userId: string): number {
    const u = this.users.get(userId);
    return u ? size(u) : 0;
  }

  /** Users with queued jobs (ready, waiting or parked). */
  *userIds(): Iterable<string> {
    for (const u of this.users.values()) if (u.where !== "none") yield u.userId;
  }

  /** Users parked now. */
  parkedUsers(): string[] {
    return [...this.parked].map((u) => u.userId);
  }

  /** Moves a user's items that are due by `now` to its priority order. */
  private ripen(u: UserState<T>, now: number): void {
    for (let n = u.later.peek(); n && n.item.dueAt <= now; n = u.later.peek()) {
      u.later.pop();
      n.due = true;
      u.due.push(n);
    }
  }

  /** Moves users whose head is due by `now` from waiting to ready. */
  private promote(now: number): void {
    for (let u = this.waiting.peek(); u && earliest(u)!.dueAt <= now; u = this.waiting.peek()) {
      this.waiting.pop();
      const floor = Math.max(this.clock, this.ready.peek()?.vtime ?? -Infinity);
      u.vtime = Math.max(u.vtime, floor);
      u.where = "ready";
      this.ripen(u, now);
      this.ready.push(u);
    }
    for (let u = this.ready.peek(); u; u = this.ready.peek()) {
      // The first ready user's items that came due since it became ready join its priority
      // order (its position is by virtual time first, so only a tie can move it).
      const before = head(u);
      this.ripen(u, now);
      if (u.due.size === 0) {
        // Its due items were removed: it waits again.
        this.ready.pop();
        u.where = "waiting";
        this.waiting.push(u);
        continue;
      }
      if (head(u) === before) break;
      this.ready.update(u);
      if (this.ready.peek() === u) break;
    }
  }

  /** The next item in fair order among those due by `now`, without taking it. */
  peek(now: number): T | undefined {
    this.promote(now);
    const u = this.ready.peek();
    return u ? head(u) : undefined;
  }

  /** Takes the next item in fair order among those due by `now`, or undefined. */
  pop(now: number): T | undefined {
    this.promote(now);
    const u = this.ready.pop();
    if (!u) return undefined;
    const item = u.due.pop()!.item;
    this.nodes.delete(item.id);
    this.addStock(item, -1);
    this.clock = Math.max(this.clock, u.vtime);
    u.vtime += this.costFn(u.userId) / this.weightOf(u.userId);
    this.requeue(u, now);
    return item;
  }

  /** Earliest due time among queued items that are not yet due; undefined if none. */
  nextDueAt(): number | undefined {
    return this.waiting.peek() && earliest(this.waiting.peek()!)!.dueAt;
  }

  /**
   * Users with due work (their earliest queued job is due by `now`) and their demand here: the
   * sum over shards of `perShard(jobs queued from that shard)`. O(shards x users).
   */
  demand(now: number, perShard: (shard: number, userId: string, queued: number) => number = (_s, _u, n) => n): Map<string, number> {
    this.promote(now);
    const out = new Map<string, number>();
    for (const u of this.ready.toArray()) out.set(u.userId, 0);
    for (const [shard, users] of this.stock) {
      for (const [userId, n] of users) {
        const d = out.get(userId);
        if (d !== undefined) out.set(userId, d + perShard(shard, userId, n));
      }
    }
    return out;
  }

  /** Per shard, the queued items due by `now` and the earliest due time among them. O(items). */
  dueByShard(now: number): Map<number, { count: number; oldest: number }> {
    const out = new Map<number, { count: number; oldest: number }>();
    for (const shard of this.stock.keys()) out.set(shard, { count: 0, oldest: now });
    for (const { item: i } of this.nodes.values()) {
      if (i.dueAt > now) continue;
      const s = out.get(i.shard)!;
      s.count++;
      if (i.dueAt < s.oldest) s.oldest = i.dueAt;
    }
    return out;
  }

  /** Queued items of `userId` from `shard`. */
  stockOf(shard: number, userId: string): number {
    return this.stock.get(shard)?.get(userId) ?? 0;
  }

  /** Drops every item of a shard (its owner changed, or its dispatch failed); returns them. */
  removeShard(shard: number): T[] {
    const removed: T[] = [];
    if (!this.stock.has(shard)) return removed;
    for (const { item } of [...this.nodes.values()]) if (item.shard === shard) removed.push(this.remove(item.id)!);
    this.stock.delete(shard); // empty now: every count went to 0 with its item
    return removed;
  }

  /**
   * Forgets users with no jobs whose lead the clock has caught up with (they would restart at
   * it). With nothing queued at all the order starts afresh (as weighted fair queuing does when
   * the system goes idle): a lead is over users with work, and there are none.
   */
  prune(): void {
    if (this.nodes.size === 0) {
      for (const u of this.users.values()) this.clock = Math.max(this.clock, u.vtime);
      this.users.clear();
      return;
    }
    for (const u of this.users.values()) if (u.where === "none") this.forgetIfIdle(u);
  }

  private forgetIfIdle(u: UserState<T>): void {
    // A user with no lead over the clock loses nothing by being forgotten (it would come back
    // at the clock); one with a lead keeps it, so emptying between loads earns nothing.
    if (u.where === "none" && u.vtime <= this.clock) this.users.delete(u.userId);
  }

  /** Takes the user out of whatever holds it (its heap, or the parked set). */
  private leave(u: UserState<T>): void {
    if (u.where === "ready") this.ready.remove(u);
    else if (u.where === "waiting") this.waiting.remove(u);
    else if (u.where === "parked") this.parked.delete(u);
  }

  /** Restores the user's position after its key (virtual time or head) changed. */
  private reposition(u: UserState<T>): void {
    if (u.where === "ready") this.ready.update(u);
    else if (u.where === "waiting") this.waiting.update(u);
  }

  private addStock(item: FairItem, by: number): void {
    let m = this.stock.get(item.shard);
    if (!m) this.stock.set(item.shard, (m = new Map()));
    const was = m.get(item.userId) ?? 0;
    const n = was + by;
    if (n > 0) m.set(item.userId, n);
    else m.delete(item.userId);
    this.pairs += (n > 0 ? 1 : 0) - (was > 0 ? 1 : 0);
  }

  /** Puts a user that just left its heap back, keeping its virtual time if it stays ready. */
  private requeue(u: UserState<T>, now: number): void {
    if (size(u) === 0) {
      u.where = "none";
      this.forgetIfIdle(u);
      return;
    }
    this.ripen(u, now);
    if (u.due.size > 0) {
      this.ready.push(u);
    } else {
      u.where = "waiting";
      this.waiting.push(u);
    }
  }
}

/**
 * A binary min-heap. With `pos` (where each entry keeps its own index), `remove` and `update`
 * are O(log n); without it `remove` searches (O(n)).
 */
export class MinHeap<T> {
  private a: T[] = [];
  constructor(
    private readonly less: (x: T, y: T) => number,
    private readonly pos?: { get(x: T): number; set(x: T, i: number): void },
  ) {}

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
    this.place(this.a.length - 1);
    this.up(this.a.length - 1);
  }
  pop(): T | undefined {
    const top = this.a[0];
    if (top === undefined) return undefined;
    this.removeAt(0);
    return top;
  }
  remove(x: T): boolean {
    const i = this.pos ? this.pos.get(x) : this.a.indexOf(x);
    if (i < 0 || i >= this.a.length || this.a[i] !== x) return false;
    this.removeAt(i);
    return true;
  }
  /** Restores the order after x's key changed (needs `pos`). */
  update(x: T): void {
    const i = this.pos!.get(x);
    this.down(i);
    this.up(i);
  }
  private removeAt(i: number): void {
    const x = this.a[i]!;
    const last = this.a.pop()!;
    if (i < this.a.length) {
      this.a[i] = last;
      this.place(i);
      this.down(i);
      this.up(i);
    }
    this.pos?.set(x, -1);
  }
  private place(i: number): void {
    this.pos?.set(this.a[i]!, i);
  }
  private swap(i: number, j: number): void {
    const a = this.a;
    [a[i], a[j]] = [a[j]!, a[i]!];
    this.place(i);
    this.place(j);
  }
  private up(i: number): void {
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (this.less(this.a[i]!, this.a[p]!) >= 0) break;
      this.swap(i, p);
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
      this.swap(i, m);
      i = m;
    }
  }
}
