/**
 * Weighted fair queuing across users, for one shard. Pure: no I/O, time passed in.
 *
 * Each user has a virtual time that advances by 1 / weight per dispatched job. Among users whose
 * earliest queued job is due, the one with the smallest virtual time goes next; ties are broken
 * by that job's execute_at, then its id. Invariants:
 * - virtual times persist across polls (the queue is long-lived; it is never reset per batch);
 * - a user that becomes ready (first job queued, or first job turns due) starts at no less than
 *   the current virtual clock, so idle time earns no credit and a late arrival is served at once;
 * - a user's own jobs leave in (execute_at, id) order;
 * - an item is queued at most once (by id) until it is popped or removed;
 * - a user's `tail` is the largest item (by execute_at, id) pushed since its queue was last
 *   empty; the loader may read that user's rows after it (see backlogCursors).
 */
export interface FairItem {
  id: bigint;
  userId: string;
  weight: number;
  executeAt: number;
}

/** A backlogged user's last queued job: loads may read that user's rows after it. */
export interface BacklogCursor {
  userId: string;
  executeAt: number;
  id: bigint;
}

interface UserState<T extends FairItem> {
  userId: string;
  vtime: number;
  weight: number;
  items: MinHeap<T>;
  /** The largest item pushed since the user's queue was last empty. */
  tail: T | null;
  /** Where the user sits: nowhere (empty), waiting for its head to be due, or ready. */
  where: "none" | "waiting" | "ready";
}

const byItem = (a: FairItem, b: FairItem) => a.executeAt - b.executeAt || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

export class FairQueue<T extends FairItem> {
  private users = new Map<string, UserState<T>>();
  private ids = new Set<bigint>();
  /** Users whose head job is due, by (vtime, head). */
  private ready = new MinHeap<UserState<T>>((a, b) => a.vtime - b.vtime || byItem(a.items.peek()!, b.items.peek()!));
  /** Users with queued jobs none of which is due yet, by head execute_at. */
  private waiting = new MinHeap<UserState<T>>((a, b) => byItem(a.items.peek()!, b.items.peek()!));
  /** The virtual clock: the virtual time of the last dispatch (never decreases). */
  private clock = 0;

  get size(): number {
    return this.ids.size;
  }

  has(id: bigint): boolean {
    return this.ids.has(id);
  }

  /** Virtual time of a user (for tests and metrics); undefined if never seen. */
  vtimeOf(userId: string): number | undefined {
    return this.users.get(userId)?.vtime;
  }

  /** Adds an item; returns false when an item with that id is already queued. */
  push(item: T): boolean {
    if (this.ids.has(item.id)) return false;
    this.ids.add(item.id);
    let u = this.users.get(item.userId);
    if (!u) {
      u = { userId: item.userId, vtime: this.clock, weight: item.weight, items: new MinHeap<T>(byItem), tail: null, where: "none" };
      this.users.set(item.userId, u);
    }
    u.weight = item.weight;
    const oldHead = u.items.peek();
    u.items.push(item);
    if (!u.tail || byItem(item, u.tail) > 0) u.tail = item;
    if (u.where === "none") {
      u.where = "waiting";
      this.waiting.push(u);
    } else if (oldHead && byItem(item, oldHead) < 0) {
      // The head changed, so the user's position in its heap did too.
      (u.where === "ready" ? this.ready : this.waiting).remove(u);
      (u.where === "ready" ? this.ready : this.waiting).push(u);
    }
    return true;
  }

  /** Moves users whose head is due by `now` from waiting to ready. */
  private promote(now: number): void {
    for (let u = this.waiting.peek(); u && u.items.peek()!.executeAt <= now; u = this.waiting.peek()) {
      this.waiting.pop();
      // No credit for idle time: start at least at the current clock, and at least at the
      // smallest virtual time among users already ready (so a newcomer cannot jump ahead of
      // a backlog it never waited behind).
      const floor = Math.max(this.clock, this.ready.peek()?.vtime ?? -Infinity);
      u.vtime = Math.max(u.vtime, floor);
      u.where = "ready";
      this.ready.push(u);
    }
  }

  /** True when some item is due by `now`. */
  hasReady(now: number): boolean {
    this.promote(now);
    return this.ready.size > 0;
  }

  /** The next item in fair order among those due by `now`, or undefined. */
  pop(now: number): T | undefined {
    this.promote(now);
    const u = this.ready.pop();
    if (!u) return undefined;
    const item = u.items.pop()!;
    this.ids.delete(item.id);
    this.clock = Math.max(this.clock, u.vtime);
    u.vtime += 1 / u.weight;
    this.requeue(u, now);
    return item;
  }

  /** Earliest execute_at among queued items that are not yet due; undefined if none. */
  nextDueAt(): number | undefined {
    return this.waiting.peek()?.items.peek()!.executeAt;
  }

  /** Drops an item (e.g. its row changed underneath); returns whether it was queued. */
  remove(id: bigint, now: number): boolean {
    if (!this.ids.has(id)) return false;
    for (const u of this.users.values()) {
      const item = u.items.find((i) => i.id === id);
      if (!item) continue;
      (u.where === "ready" ? this.ready : this.waiting).remove(u);
      u.items.remove(item);
      this.ids.delete(id);
      this.requeue(u, now);
      return true;
    }
    return false;
  }

  /**
   * For each backlogged user (queued items, the last of which was due by `dueBy`): the last
   * item queued. Every waiting row of such a user up to that item is queued already or was
   * dispatched, and a job created from now on sorts after it (execute_at is never in the past;
   * retries are due later), so a refill may read that user's rows after it instead of
   * re-reading the whole backlog. The caller passes a `dueBy` some margin before now, so that
   * a job created meanwhile in the same millisecond (with a smaller id from another node, or
   * on a clock slightly behind) cannot sort before the cursor. Users whose queued jobs are not
   * all that old get no cursor: a new job may be due before them.
   */
  backlogCursors(dueBy: number): BacklogCursor[] {
    const out: BacklogCursor[] = [];
    for (const u of this.users.values()) {
      if (u.items.size > 0 && u.tail && u.tail.executeAt <= dueBy) out.push({ userId: u.userId, executeAt: u.tail.executeAt, id: u.tail.id });
    }
    return out;
  }

  /** Queued items per user (for the loader's per-user caps). */
  countOf(userId: string): number {
    return this.users.get(userId)?.items.size ?? 0;
  }

  /** Puts a user that just left its heap back, keeping its virtual time if it stays ready. */
  private requeue(u: UserState<T>, now: number): void {
    const head = u.items.peek();
    if (!head) {
      u.where = "none";
      u.tail = null;
      return;
    }
    if (head.executeAt <= now && u.where === "ready") {
      u.where = "ready";
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

  get size(): number {
    return this.a.length;
  }
  peek(): T | undefined {
    return this.a[0];
  }
  find(pred: (x: T) => boolean): T | undefined {
    return this.a.find(pred);
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
