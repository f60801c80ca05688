/**
 * One fair order for the whole cluster, from what each scheduler process reports. Pure.
 *
 * Every process holds the due jobs of the shards it owns, in its own fair queue, and all of them
 * share one pool of executors (one topic, started in FIFO order per partition). Each reports,
 * every few hundred ms, its demand: per user with due work here, the user's weight and how many
 * of its jobs it has queued, and the start rate it measures for its own dispatches. From every
 * report, each process computes the same split:
 *
 *   q(u,p)  jobs of user u queued at process p;    Q(u) = sum over p of q(u,p)
 *   f(u,p)  = q(u,p) / Q(u)                         the part of u's demand held at p
 *   W       = sum of w(u) over every user with due work anywhere
 *   D(p)    = sum over u at p of w(u) f(u,p)        p's weighted demand;  sum over p of D(p) = W
 *   share(p) = D(p) / W
 *
 * Process p keeps share(p) of the cluster's dispatched-but-unstarted window (the window is
 * `cluster start rate x span`, the span the mean of the processes' own), and orders its own users by weighted fair queuing with the
 * weights w(u) f(u,p). Why that is fair: the executors start the jobs of the whole window in
 * FIFO order, so each process's starts are proportional to its part of the window (Little's
 * law: every process's jobs wait the same queue), and within p user u gets w(u) f(u,p) / D(p)
 * of them. User u's start rate is then
 *
 *   sum over p of  C share(p) w(u) f(u,p) / D(p)  =  C w(u) / W  x  sum over p of f(u,p)  =  C w(u) / W,
 *
 * its weighted share of the capacity C whatever the number of processes, the shard split, or
 * where its jobs sit. Splitting u's rate by f(u,p) also drains u's queues everywhere at the
 * same pace, so no process runs out of a user long before another (the tail where the old
 * per-process windows drifted 33-40 points); when one does, its q(u,p) falls and the others'
 * f(u,.) rise at the next report.
 *
 * What breaks it: stale reports (a process's demand changes between reports, bounded by the
 * report interval; a report older than its TTL is dropped), a process whose messages wait in
 * partitions others do not use (every process spreads over every partition), and executors that
 * do not start in FIFO order. A process that cannot exchange reports falls back to its own
 * order and window (as if alone), which is fair among its own users.
 */

/** One process's demand, as it reports it. */
export interface DemandReport {
  member: string;
  /** Jobs per second the executors started of this process's dispatches (its own mean over ~1 s). */
  rate: number;
  /** The time its window covers at the start rate (ms), as its own steering has it. */
  spanMs: number;
  /** Users with due work here, their weights and jobs queued here (same order). */
  userIds: string[];
  weights: number[];
  queued: number[];
  /**
   * Users with a concurrency cap (or paused) with jobs queued here, and how many (as queued, for
   * every such user, parked or not): a capped user's room is split by them. A parked user is in
   * no other list: out of the window's split, it cannot use it.
   */
  limitedUserIds: string[];
  limitedQueued: number[];
}

export interface ClusterShare {
  /** This process's part of the cluster's window, in [0, 1]. */
  share: number;
  /** Per user with due work here: the part of its cluster-wide demand held here, in (0, 1]. */
  factors: Map<string, number>;
  /** The cluster's start rate (jobs/s): the sum of every process's own measure. */
  rate: number;
  /**
   * The span every process sizes the cluster's window with: the mean of their own. One span,
   * so that each process's part of the window is its share whatever its own steering says.
   */
  spanMs: number;
  /** Other processes whose reports went into this. */
  peers: number;
  /**
   * Per capped user with jobs queued here: the part of its jobs queued in the cluster held here,
   * and whether this process holds the most of them (ties to the lowest member name). A capped
   * user's room is split by it (capPart).
   */
  capParts: Map<string, { part: number; lead: boolean }>;
}

/**
 * This process's part of a capped user's room (its cap less its jobs in flight cluster-wide):
 * floor(room x part), and 1 for the process holding the most of the user's jobs when that gives
 * nobody anything. The parts never add up to more than the room (with the same reports): floors
 * do not, and the lead's 1 comes only when room x part < 1 for it, so every floor is 0.
 */
export function capPart(room: number, p: { part: number; lead: boolean } | undefined): number {
  if (room <= 0) return 0;
  if (!p) return room;
  const n = Math.floor(room * p.part + 1e-9);
  return n === 0 && p.lead ? 1 : n;
}

export function clusterShare(mine: DemandReport, others: DemandReport[]): ClusterShare {
  const total = new Map<string, number>();
  const weight = new Map<string, number>();
  let rate = 0;
  let spans = 0;
  for (const r of [mine, ...others]) {
    rate += r.rate;
    spans += r.spanMs;
    r.userIds.forEach((u, i) => {
      total.set(u, (total.get(u) ?? 0) + r.queued[i]!);
      if (!weight.has(u)) weight.set(u, r.weights[i]!);
    });
  }
  let W = 0;
  for (const w of weight.values()) W += w;
  const factors = new Map<string, number>();
  let D = 0;
  mine.userIds.forEach((u, i) => {
    const f = mine.queued[i]! / Math.max(1, total.get(u)!);
    factors.set(u, f);
    D += mine.weights[i]! * f;
  });
  // Nobody has due work: split evenly, so a burst that arrives starts from a fair split.
  const share = W > 0 ? D / W : 1 / (1 + others.length);
  return { share, factors, rate, spanMs: spans / (1 + others.length), peers: others.length, capParts: capParts(mine, others) };
}

/** Per user queued here, its part of the cluster's queue of it and whether this process leads. */
function capParts(mine: DemandReport, others: DemandReport[]): Map<string, { part: number; lead: boolean }> {
  const held = (r: DemandReport) => {
    const m = new Map<string, number>();
    (r.limitedUserIds ?? []).forEach((u, i) => m.set(u, r.limitedQueued[i]!));
    return m;
  };
  const here = held(mine);
  const theirs = others.map((r) => ({ member: r.member, q: held(r) }));
  const out = new Map<string, { part: number; lead: boolean }>();
  for (const [u, q] of here) {
    let total = q;
    let lead = true;
    for (const o of theirs) {
      const x = o.q.get(u) ?? 0;
      total += x;
      if (x > q || (x === q && x > 0 && o.member < mine.member)) lead = false;
    }
    out.set(u, { part: total > 0 ? q / total : 1, lead });
  }
  return out;
}
