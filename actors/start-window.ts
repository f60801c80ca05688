/**
 * How much dispatched-but-unstarted work a scheduler process may have out: a window bounded in
 * time, not by a count. Pure: no I/O, time passed in.
 *
 * The scheduler knows where each of its due messages landed (partition, offset, jobs in it) and
 * reads the executors' consumer-group commits. A commit covers a message only once every job in
 * it was claimed (started), and carries the executor's measure of how long the messages it
 * covers waited: from publication to durable claims. So the scheduler knows, exactly and
 * without a query that grows with the backlog:
 * - `outstanding`: its jobs published and not yet started;
 * - the start rate (jobs seen started per second);
 * - the wait in front of the executors, the delay a newly published job will see.
 *
 * The window is `rate x span`, within [minJobs, maxJobs], where `rate` is the highest start
 * rate seen over the last `rateMemoryMs` (each sample over `rateSpanMs`) and `span` starts at
 * `targetDelayMs` and is steered by the executors' wait, like the delay-based congestion
 * controls (TCP Vegas, LEDBAT): after each observation that started something, span is
 * multiplied by (target / wait)^GAIN (at most +3 % or -10 % per observation; +10 % while the
 * wait is under half the target), but grows only while the window held dispatching back
 * (otherwise the wait says nothing about a larger window). Why both:
 * - the rate term follows the executors' capacity at once (a burst after an idle spell starts
 *   at minJobs and grows within a few observations, and a drop in capacity shrinks it);
 * - the span term removes what the rate term cannot know: the time between a start and its
 *   observation (a commit, then an offset read), a rate sample's noise, the fetch and claim.
 *   It moves slowly (a few percent per observation), so the delayed feedback does not
 *   oscillate, and it cannot let the window collapse: a window too small for the pipeline
 *   leaves the executors idle, their wait falls below the target and span grows.
 * Under a backlog the wait settles at `targetDelayMs`: a job published now starts within about
 * that, whatever the executors' capacity.
 */
export interface WindowSettings {
  targetDelayMs: number;
  minJobs: number;
  maxJobs: number;
  /** Span of one start-rate sample, and how long the reported rate keeps its best sample. */
  rateSpanMs: number;
  rateMemoryMs: number;
}

interface Sent {
  offset: number;
  jobs: number;
  at: number;
  /** Its jobs per user. */
  users: Map<string, number>;
}

export interface Placement {
  partition: number;
  /** Kafka offset of the message (an int64; exact as a number below 2^53). */
  offset: number;
  jobs: number;
  /** The owner of each of its jobs. */
  users: string[];
}

/** A partition's committed offset (the next to consume) and the wait the executor measured. */
export interface Commit {
  next: number;
  /** Publication to durable claims, ms, of the messages the last commit covered (null: unknown). */
  waitMs: number | null;
}

/**
 * How strongly one observation steers the span: (target / wait)^GAIN, within [SHRINK, GROW];
 * while the wait is under half the target the executors are starved and the span grows by
 * SLOW_START per observation (doubling in about seven), as a congestion window does at first.
 */
const GAIN = 0.1;
const GROW = 1.03;
const SHRINK = 0.9;
const SLOW_START = 1.1;
/** The span stays within [target / SPAN_RANGE, target x SPAN_RANGE]. */
const SPAN_RANGE = 8;
/** The window counts as holding dispatching back for this long after it last did. */
const LIMITED_FOR_MS = 1_000;

export class StartWindow {
  private sent = new Map<number, Sent[]>();
  private heads = new Map<number, number>();
  /** Published and not yet seen started, per partition. */
  private pending = new Map<number, number>();
  private outstandingJobs = 0;
  /** Of those, per user. */
  private byUser = new Map<string, number>();
  private startedTotal = 0;
  /** (time, cumulative starts) at each observation, newest last. */
  private history: { at: number; started: number }[] = [];
  private span: number;
  private limitedAt = -Infinity;
  /** The executors' wait seen at the last observation that started something (ms). */
  lastWaitMs: number | null = null;
  /** Publish-to-observed-start times of the messages seen started by the last observation. */
  lastDelays: number[] = [];

  constructor(private readonly s: WindowSettings) {
    this.span = s.targetDelayMs;
  }

  /** Jobs published and not yet seen started. */
  get outstanding(): number {
    return this.outstandingJobs;
  }

  get started(): number {
    return this.startedTotal;
  }

  /** The window: jobs that may be dispatched and not yet started. */
  size(now: number): number {
    return Math.min(this.s.maxJobs, Math.max(this.s.minJobs, Math.ceil((this.rate(now) * this.span) / 1000)));
  }

  /** The time the window covers at the start rate (ms). */
  get spanMs(): number {
    return this.span;
  }

  /** Dispatching was held back by the window just now (the window may grow). */
  limited(now: number): void {
    this.limitedAt = now;
  }

  /** Whether the window held dispatching back within the last second (it matters then). */
  isLimited(now: number): boolean {
    return now - this.limitedAt <= LIMITED_FOR_MS;
  }

  /** A user's jobs published and not yet seen started. */
  outstandingOf(userId: string): number {
    return this.byUser.get(userId) ?? 0;
  }

  /** Records messages as published at `at` (in acknowledgement order). */
  published(placements: Placement[], at: number): void {
    for (const p of placements) {
      let list = this.sent.get(p.partition);
      if (!list) this.sent.set(p.partition, (list = []));
      const users = new Map<string, number>();
      for (const u of p.users) users.set(u, (users.get(u) ?? 0) + 1);
      for (const [u, n] of users) this.byUser.set(u, (this.byUser.get(u) ?? 0) + n);
      list.push({ offset: p.offset, jobs: p.jobs, at, users });
      this.outstandingJobs += p.jobs;
      this.pending.set(p.partition, (this.pending.get(p.partition) ?? 0) + p.jobs);
    }
  }

  /** Of `candidates`, the partition with the least of our work not yet started: a job that must start now goes where it waits least. */
  leastLoaded(candidates: number[]): number {
    let best = candidates[0]!;
    for (const p of candidates) if ((this.pending.get(p) ?? 0) < (this.pending.get(best) ?? 0)) best = p;
    return best;
  }

  /**
   * Applies the group's commits: every message of ours below a partition's committed offset has
   * started. Steers the window by the executors' wait. Returns the jobs newly seen started.
   */
  observe(committed: Map<number, Commit>, now: number): number {
    let started = 0;
    let waited = 0;
    let weight = 0;
    this.lastDelays = [];
    for (const [partition, c] of committed) {
      const list = this.sent.get(partition);
      if (!list) continue;
      let head = this.heads.get(partition) ?? 0;
      let here = 0;
      while (head < list.length && list[head]!.offset < c.next) {
        here += list[head]!.jobs;
        for (const [u, n] of list[head]!.users) {
          const left = this.byUser.get(u)! - n;
          if (left > 0) this.byUser.set(u, left);
          else this.byUser.delete(u);
        }
        this.lastDelays.push(now - list[head]!.at);
        head++;
      }
      if (here > 0) this.pending.set(partition, this.pending.get(partition)! - here);
      if (here > 0 && c.waitMs !== null) {
        waited += c.waitMs * here;
        weight += here;
      }
      started += here;
      // Compact now and then rather than shifting on every observation.
      if (head > 1024 && head * 2 > list.length) {
        list.splice(0, head);
        head = 0;
      }
      this.heads.set(partition, head);
    }
    this.outstandingJobs -= started;
    this.startedTotal += started;
    this.history.push({ at: now, started: this.startedTotal });
    const keep = now - this.s.rateMemoryMs - this.s.rateSpanMs;
    while (this.history.length > 2 && this.history[0]!.at < keep) this.history.shift();
    if (weight > 0) this.steer(waited / weight, now);
    return started;
  }

  private steer(waitMs: number, now: number): void {
    this.lastWaitMs = waitMs;
    const ratio = this.s.targetDelayMs / Math.max(1, waitMs);
    if (ratio > 1 && !this.isLimited(now)) return;
    const t = this.s.targetDelayMs;
    const step = ratio > 2 ? SLOW_START : Math.min(GROW, Math.max(SHRINK, ratio ** GAIN));
    this.span = Math.min(t * SPAN_RANGE, Math.max(t / SPAN_RANGE, this.span * step));
  }

  /**
   * The mean start rate (jobs/s) over the memory: what this process adds to the cluster's rate
   * (a sum of each process's best sample would overstate it, each one's noise on top).
   */
  meanRate(now: number): number {
    const h = this.history;
    let i = 0;
    while (i < h.length - 1 && h[i]!.at < now - this.s.rateMemoryMs) i++;
    const first = h[Math.max(0, i - 1)];
    const last = h[h.length - 1];
    if (!first || !last || last.at <= first.at) return 0;
    return ((last.started - first.started) * 1000) / (last.at - first.at);
  }

  /**
   * The highest start rate (jobs/s) among samples ending within the memory. A sample runs from
   * one observation to the first at least rateSpanMs later, so every start observed is counted
   * by the sample that begins just before it, however irregular the observations.
   */
  rate(now: number): number {
    const h = this.history;
    let best = 0;
    let i = 0;
    for (let j = 0; j < h.length; j++) {
      i = Math.max(i, j + 1);
      while (i < h.length && h[i]!.at - h[j]!.at < this.s.rateSpanMs) i++;
      if (i >= h.length) break;
      if (h[i]!.at < now - this.s.rateMemoryMs) continue;
      best = Math.max(best, ((h[i]!.started - h[j]!.started) * 1000) / (h[i]!.at - h[j]!.at));
    }
    return best;
  }
}
