/**
 * Pure statistics of fair share over 1-second windows, from each user's start times (ms).
 * No I/O: bench/fairness.ts feeds them what the API returned; they can be checked on synthetic
 * starts.
 *
 * A window is a full second [t0 + k s, t0 + (k+1) s). A user is backlogged in a window if its
 * last start is after the window's end: it had jobs due and waiting through the whole window, so
 * the scheduler owed it its weight's share there. Users that are not backlogged are left out of
 * the window (their starts too), and shares are renormalised over the users that are.
 */

/** Per-user start counts per full window, and who is backlogged in each. */
export interface Windows {
  t0: number;
  /** Full windows from t0 while at least one user is still backlogged. */
  count: number;
  lastStart: number[];
  /** counts[u][k]: user u's starts in window k. */
  counts: Int32Array[];
}

export function windowsOf(starts: ArrayLike<number>[], t0: number): Windows {
  const lastStart = starts.map((s) => {
    let m = -Infinity;
    for (let i = 0; i < s.length; i++) if (s[i]! > m) m = s[i]!;
    return m;
  });
  const end = Math.max(...lastStart);
  // Window k is full and has someone backlogged when t0 + (k+1) s < the last start of all.
  const count = Math.max(0, Math.ceil((end - t0) / 1000) - 1);
  const counts = starts.map((s) => {
    const c = new Int32Array(count);
    for (let i = 0; i < s.length; i++) {
      const k = Math.floor((s[i]! - t0) / 1000);
      if (k >= 0 && k < count) c[k]!++;
    }
    return c;
  });
  return { t0, count, lastStart, counts };
}

/** The users backlogged in window k (indexes into the starts given to windowsOf). */
export function backlogged(w: Windows, k: number): number[] {
  const end = w.t0 + (k + 1) * 1000;
  const out: number[] = [];
  for (let u = 0; u < w.lastStart.length; u++) if (w.lastStart[u]! > end) out.push(u);
  return out;
}

export interface ShareRow {
  window: number;
  /** Indexes of the backlogged users. */
  users: number[];
  /** Their starts in the window. */
  starts: number[];
  /** Their share of the backlogged users' starts, in percent. */
  shares_pct: number[];
  /** Their weight's share among the backlogged users, in percent. */
  target_pct: number[];
  /** The largest |share - target|, in percentage points; 0 when nobody started anything (stalled). */
  deviation_pts: number;
  stalled: boolean;
}

/** Each full window's shares among the backlogged users against their weights. */
export function shareRows(w: Windows, weights: number[]): ShareRow[] {
  const rows: ShareRow[] = [];
  for (let k = 0; k < w.count; k++) {
    const users = backlogged(w, k);
    const starts = users.map((u) => w.counts[u]![k]!);
    const total = starts.reduce((a, b) => a + b, 0);
    const wsum = users.reduce((a, u) => a + weights[u]!, 0);
    const shares = starts.map((s) => (total === 0 ? 0 : (100 * s) / total));
    const target = users.map((u) => (100 * weights[u]!) / wsum);
    const dev = total === 0 ? 0 : Math.max(...shares.map((s, i) => Math.abs(s - target[i]!)));
    rows.push({ window: k, users, starts, shares_pct: shares, target_pct: target, deviation_pts: dev, stalled: total === 0 });
  }
  return rows;
}

/** Jain's fairness index of x: (sum x)^2 / (n * sum x^2); 1 when all equal, 1/n when one has all. NaN when all are 0. */
export function jain(x: ArrayLike<number>): number {
  let s = 0;
  let s2 = 0;
  for (let i = 0; i < x.length; i++) {
    s += x[i]!;
    s2 += x[i]! * x[i]!;
  }
  return s2 === 0 ? NaN : (s * s) / (x.length * s2);
}

/**
 * A reference for the weighted Jain index of a short window: the index of the whole-number split
 * of `total` starts among users of these weights that an ideal weighted fair queue makes from an
 * empty state (each start to the user with the smallest (starts + 1) / weight). Over 1-second
 * windows with many users each user gets a few starts, so even a perfect scheduler scores well
 * below 1; an index near this one says the shortfall is that rounding, not unfairness. It is not
 * a ceiling: a queue that carries its order across windows can round slightly better.
 */
export function idealJain(weights: number[], total: number): number {
  const n = weights.length;
  if (n === 0 || total === 0) return NaN;
  const s = new Float64Array(n);
  // Whole rounds first (everyone gets floor(level * w)), then the rest one by one.
  const wsum = weights.reduce((a, b) => a + b, 0);
  const level = Math.max(0, total / wsum - 1);
  let given = 0;
  for (let i = 0; i < n; i++) {
    s[i] = Math.floor(level * weights[i]!);
    given += s[i]!;
  }
  // A binary heap on (s + 1) / w for the remaining starts.
  const key = (i: number) => (s[i]! + 1) / weights[i]!;
  const heap = Array.from({ length: n }, (_, i) => i);
  const less = (a: number, b: number) => key(heap[a]!) < key(heap[b]!);
  const swap = (a: number, b: number) => ([heap[a], heap[b]] = [heap[b]!, heap[a]!]);
  const down = (i: number) => {
    for (;;) {
      const l = 2 * i + 1, r = l + 1;
      let m = i;
      if (l < n && less(l, m)) m = l;
      if (r < n && less(r, m)) m = r;
      if (m === i) return;
      swap(i, m);
      i = m;
    }
  };
  for (let i = (n >> 1) - 1; i >= 0; i--) down(i);
  for (; given < total; given++) {
    s[heap[0]!]!++;
    down(0);
  }
  return jain(Array.from(s, (v, i) => v / weights[i]!));
}

export interface JainRow {
  window: number;
  users: number;
  starts: number;
  /** Weighted Jain index of the window: x_i = starts_i / weight_i over the backlogged users. */
  jain: number;
  /** idealJain for the same users and the same number of starts (a reference, see there). */
  ideal: number;
}

/** Per full window, the weighted Jain index over the users backlogged in it (stalled windows left out). */
export function jainRows(w: Windows, weights: number[]): JainRow[] {
  const rows: JainRow[] = [];
  for (let k = 0; k < w.count; k++) {
    const users = backlogged(w, k);
    const x = users.map((u) => w.counts[u]![k]! / weights[u]!);
    const starts = users.reduce((a, u) => a + w.counts[u]![k]!, 0);
    if (starts === 0) continue;
    rows.push({ window: k, users: users.length, starts, jain: jain(x), ideal: idealJain(users.map((u) => weights[u]!), starts) });
  }
  return rows;
}
