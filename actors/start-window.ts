/**
 * How much dispatched-but-unstarted work a scheduler process may have out: a window bounded in
 * time, not by a count. Pure: no I/O, time passed in.
 *
 * The scheduler knows where each of its due messages landed (partition, offset, jobs in it) and
 * reads the executors' consumer-group commits, which cover a message only once every job in it
 * was claimed (started). So it knows, exactly and without a query that grows with the backlog:
 * - `outstanding`: its jobs published and not yet started;
 * - the start rate: jobs seen started per second.
 * The window is `rate x (lead + targetDelay)`, where `rate` is the highest start rate seen over
 * the last `rateMemoryMs` (each sample over `rateSpanMs`) and `lead` the time the dispatcher
 * itself measures from taking a due job to its publication (the mark and the publish), clamped
 * to [minJobs, maxJobs]. So `targetDelay` is the time from publication to an observed start.
 *
 * Why this converges (Little's law): with L the time from publish to an observed start when
 * nothing queues, the pipeline carries `window / L` jobs per second. While the executors have
 * spare capacity, window / L = rate x targetDelay / L > rate whenever targetDelay > L, so the
 * measured rate, and with it the window, grows until the executors are saturated; from then on
 * the rate stays at their capacity C and the work waiting outside the scheduler holds
 * C x targetDelay jobs: a job published now starts within about `targetDelay` (less the
 * observation lag: its start is seen through a commit and an offset read after it happened).
 * The one requirement is targetDelay > L (fetch, claim, commit and the offset read), which is
 * why the executors commit as soon as claims are durable and the scheduler reads offsets back
 * to back while it has jobs out; the floor `minJobs` restarts the growth after an idle spell.
 */
export interface WindowSettings {
  targetDelayMs: number;
  minJobs: number;
  maxJobs: number;
  /** Span of one start-rate sample. */
  rateSpanMs: number;
  /** The window follows the highest sample within this long. */
  rateMemoryMs: number;
}

interface Sent {
  offset: number;
  jobs: number;
  at: number;
}

export interface Placement {
  partition: number;
  /** Kafka offset of the message (an int64; exact as a number below 2^53). */
  offset: number;
  jobs: number;
}

export class StartWindow {
  private sent = new Map<number, Sent[]>();
  private heads = new Map<number, number>();
  private outstandingJobs = 0;
  private startedTotal = 0;
  /** (time, cumulative starts) at each observation, newest last, kept for rateMemoryMs + rateSpanMs. */
  private history: { at: number; started: number }[] = [];
  /** Publish-to-observed-start times of the messages seen started by the last observation. */
  lastDelays: number[] = [];

  constructor(private readonly s: WindowSettings) {}

  /** Jobs published and not yet seen started. */
  get outstanding(): number {
    return this.outstandingJobs;
  }

  get started(): number {
    return this.startedTotal;
  }

  /** Records messages as published at `at` (in acknowledgement order). */
  published(placements: Placement[], at: number): void {
    for (const p of placements) {
      let list = this.sent.get(p.partition);
      if (!list) this.sent.set(p.partition, (list = []));
      list.push({ offset: p.offset, jobs: p.jobs, at });
      this.outstandingJobs += p.jobs;
    }
  }

  /**
   * Applies the group's committed offsets (the next offset to consume, per partition): every
   * message of ours below it has started. Returns the jobs newly seen started.
   */
  observe(committed: Map<number, number>, now: number): number {
    let started = 0;
    this.lastDelays = [];
    for (const [partition, next] of committed) {
      const list = this.sent.get(partition);
      if (!list) continue;
      let head = this.heads.get(partition) ?? 0;
      while (head < list.length && list[head]!.offset < next) {
        started += list[head]!.jobs;
        this.lastDelays.push(now - list[head]!.at);
        head++;
      }
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
    return started;
  }

  /** Forgets messages that will never be seen started (their partition moved to nobody we track). */
  forget(partition: number): void {
    const list = this.sent.get(partition);
    if (!list) return;
    const head = this.heads.get(partition) ?? 0;
    for (let i = head; i < list.length; i++) this.outstandingJobs -= list[i]!.jobs;
    this.sent.delete(partition);
    this.heads.delete(partition);
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

  /** The window: jobs that may be dispatched and not yet started; `leadMs`: take-to-publish time. */
  size(now: number, leadMs = 0): number {
    const w = Math.ceil((this.rate(now) * (leadMs + this.s.targetDelayMs)) / 1000);
    return Math.min(this.s.maxJobs, Math.max(this.s.minJobs, w));
  }
}
